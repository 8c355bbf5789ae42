"""Property tests (hypothesis) of the files the package reads from outside (issue 17).

Targets and properties (never any other exception, never a silently wrong value):

- training configs (:func:`training.config.load_config`): the default config mutated (keys set
  to random YAML values or to near-valid ones, sections replaced, keys deleted, unknown and
  non-string keys added, the same through ``--set`` overrides, overrides below a scalar),
  and random YAML documents, text and bytes. A config whose every field has its declared type
  and range, or a :class:`~training.config.ConfigError` naming the file or a mutated key.
- label images (:func:`dense_ood_ros.io.read_label`): PNGs written here at every bit depth
  and colour type, 16-bit labels above and below 255, other formats, truncated, with bytes
  flipped, with a patched header (CRC fixed or not), with junk after the end, random bytes,
  empty files, a required size that differs. The exact labels, or ValueError naming the file.
- the evaluator's per-frame path (:func:`find_frames` + :func:`evaluate_frames`, a stand-in
  detector): folders of frames with such labels. The run never stops; every frame is counted
  exactly (anomaly and semantic pixel counts) or reported naming its label file.
- ONNX metadata (:func:`read_onnx_info`), TensorRT engine records
  (:func:`check_engine_file`, TensorRT faked) and checkpoint fields (:func:`read_checkpoint`):
  random values. A valid result, or the module's error naming the file.

Profiles (``test/fuzz_profiles.py``): ``ci`` by default, ``long`` with
``DENSE_OOD_FUZZ_PROFILE=long`` (``scripts/fuzz.sh``).
"""

import copy
import dataclasses
import json
import math
import struct
import tempfile
import time
import zlib
from pathlib import Path
from typing import Union, get_args, get_origin, get_type_hints

import cv2
import hostile_images
import numpy as np
import pytest
import torch
import yaml
from fuzz_profiles import fuzz_settings, outcome_counter, yaml_strategies
from hostile_files import VALID_ONNX_METADATA, png_file, tiny_onnx
from hypothesis import given
from hypothesis import strategies as st

from dense_ood_ros import cache
from dense_ood_ros.backends import tensorrt_backend
from dense_ood_ros.checkpoint import CHECKPOINT_FORMAT, CheckpointError, read_checkpoint
from dense_ood_ros.detector import DetectorOutput
from dense_ood_ros.evaluate import evaluate_frames, find_frames
from dense_ood_ros.evaluation import AnomalyLabelSpec, Evaluation
from dense_ood_ros.io import read_label
from dense_ood_ros.label_set import description_label_set
from dense_ood_ros.metrics import AnomalyMetrics, SemanticMetrics
from dense_ood_ros.onnx_graph import ONNX_FORMAT, ModelFileError, read_onnx_info
from training.config import (DEVICES, KNOWN_STAGES, MINIMUMS, ConfigError, TrainConfig,
                             load_config)

CAMVID_CLASSES = description_label_set("camvid").class_names

outcomes, print_outcomes = outcome_counter(
    "files (configs, labels, evaluator, ONNX, engines, checkpoints)")


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory) -> Path:
    """Return a folder for the files of all examples (each makes its own subfolder)."""
    return tmp_path_factory.mktemp("fuzz_files")


def _new_dir(work_dir: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=work_dir))


# ================================================================= training configs

def _plain(value):
    """Tuples -> lists, recursively (as YAML holds them)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


DEFAULT_CONFIG = _plain(dataclasses.asdict(TrainConfig()))
SECTIONS = sorted(key for key, value in DEFAULT_CONFIG.items() if isinstance(value, dict))
LEAVES = sorted([key for key, value in DEFAULT_CONFIG.items() if not isinstance(value, dict)]
                + [f"{section}.{key}" for section in SECTIONS
                   for key in DEFAULT_CONFIG[section]])

YAML_SCALARS, YAML_KEYS, YAML_VALUES = yaml_strategies(
    ["ce", "flow", "nflowjs", "auto", "cpu", "cuda", "1e3", "yes", "~", ""],
    max_int=400, max_text=12, key_ints=(-2, 2), max_list=4, max_leaves=8)


def _near(default):
    """Values close to a valid one of the default's type: the edges of ranges and types."""
    if isinstance(default, bool):
        return st.one_of(st.booleans(), st.sampled_from([0, 1, "true", None]))
    if isinstance(default, int):
        return st.one_of(st.integers(-2, 3), st.sampled_from([default, float(default), 2.5,
                                                              2**63, -2**63, None, "8"]))
    if isinstance(default, float):
        return st.one_of(st.floats(-2, 2), st.sampled_from([0, 1, 10**400, math.nan, math.inf,
                                                            "1e-3", True]))
    if isinstance(default, list):
        element = _near(default[0]) if default else YAML_SCALARS
        return st.lists(element, max_size=len(default) + 1)
    return st.one_of(st.text(max_size=10), st.sampled_from([5, None, [], {}]))


def _set(values: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    node = values
    for parent in parents:
        if not isinstance(node.get(parent), dict):
            node[parent] = {}
        node = node[parent]
    node[leaf] = value


@st.composite
def mutated_configs(draw):
    """Return (file values, overrides, the dotted keys mutated)."""
    values, overrides, mutated = copy.deepcopy(DEFAULT_CONFIG), {}, []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["leaf", "near", "section", "delete", "unknown",
                                     "override", "override near", "override below scalar"]))
        if kind in ("leaf", "near", "override", "override near"):
            path = draw(st.sampled_from(LEAVES))
            default = dataclasses.asdict(TrainConfig())
            for part in path.split("."):
                default = default[part]
            value = draw(_near(_plain(default)) if "near" in kind else YAML_VALUES)
            if kind.startswith("override"):
                overrides[path] = value
            else:
                _set(values, path, value)
            mutated.append(path)
        elif kind == "section":
            path = draw(st.sampled_from(SECTIONS))
            values[path] = draw(YAML_VALUES)
            mutated.append(path)
        elif kind == "delete":
            path = draw(st.sampled_from(LEAVES + SECTIONS))
            *parents, leaf = path.split(".")
            node = values.get(parents[0], {}) if parents else values
            if isinstance(node, dict):
                node.pop(leaf, None)
        elif kind == "unknown":
            section = draw(st.sampled_from(["", *SECTIONS]))
            key = draw(YAML_KEYS.filter(lambda k: k not in DEFAULT_CONFIG.get(section, {})
                                        and k not in DEFAULT_CONFIG))
            node = values.get(section) if section else values
            if isinstance(node, dict):
                node[key] = draw(YAML_SCALARS)
                mutated.append(f"{section}.{key}".lstrip("."))
        else:  # a --set override below a key that holds no mapping
            path = draw(st.sampled_from(LEAVES))
            overrides[f"{path}.{draw(st.sampled_from(['x', 'epochs', '0']))}"] = 1
            mutated.append(path)
    return values, overrides, mutated


def _check_field(key: str, value, hint) -> None:
    origin, args = get_origin(hint), get_args(hint)
    if dataclasses.is_dataclass(hint):
        _assert_well_typed(value, hint, key)
    elif origin is Union:
        if value is not None:
            _check_field(key, value, next(a for a in args if a is not type(None)))
    elif hint is bool:
        assert isinstance(value, bool), key
    elif hint is int:
        assert isinstance(value, int) and not isinstance(value, bool), key
        assert value >= MINIMUMS.get(key, value), key
    elif hint is float:
        assert isinstance(value, float) and math.isfinite(value), key
    elif hint is str:
        assert isinstance(value, str), key
    elif origin is tuple:
        assert isinstance(value, tuple) and len(value) == len(args), key
        for item, arg in zip(value, args):
            _check_field(key, item, arg)
    elif origin is list:
        assert isinstance(value, list), key
        for item in value:
            _check_field(key, item, args[0])
    else:
        raise AssertionError(f"unexpected type hint {hint} of {key}")


def _assert_well_typed(config, cls=TrainConfig, where: str = "") -> None:
    """Every field of a loaded config has its declared type, and the loader's ranges."""
    assert isinstance(config, cls)
    for name, hint in get_type_hints(cls).items():
        _check_field(f"{where}.{name}".lstrip("."), getattr(config, name), hint)
    if cls is TrainConfig:
        assert set(config.stages) <= set(KNOWN_STAGES) and config.device in DEVICES
        for low, high in (config.data.scale_range, config.flow.scale_range):
            assert 0 < low <= high
        assert config.nflowjs.sample_scales


def _load(path: Path, overrides=None):
    """load_config, checked: returns the config, or the ConfigError's message."""
    try:
        config = load_config(path, overrides)
    except ConfigError as exc:
        assert str(exc)
        outcomes["config rejected"] += 1
        return str(exc)
    _assert_well_typed(config)
    outcomes["config accepted"] += 1
    return config


def test_the_default_config_round_trips(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(DEFAULT_CONFIG))
    assert load_config(path) == TrainConfig()


@given(mutated_configs())
@fuzz_settings(ci_examples=150, long_examples=3000)
def test_mutated_configs_load_well_typed_or_name_a_mutated_key(work_dir, case):
    values, overrides, mutated = case
    path = _new_dir(work_dir) / "config.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    result = _load(path, overrides)
    if isinstance(result, str):
        assert any(key in result for key in mutated), (result, mutated)


YAML_FRAGMENTS = ["data:", "  root: x", "  crop_size: [1, 2]", "- ce", "stages: [ce", "stages:",
                  "ce: {epochs: 1}", "ce: {epochs: .nan}", "x: &a [1, 2]", "y: *a", "*a",
                  "!!python/object:os.system", "---", "...", "key: value", "\t", ":", "? [a]",
                  ": 1", "seed: 0x10", "seed: 1_000", "threads: !!int 3", "amp: yes",
                  "model: null", "flow: []", "'quoted: key': 1", "{", "}", "[", "]", "#",
                  "nflowjs:\n  sample_scales: [1, 2, 4]", "%YAML 1.1", "\ufeff", "\x00"]


@given(st.one_of(st.binary(max_size=200), st.text(max_size=200),
                 st.lists(st.sampled_from(YAML_FRAGMENTS), max_size=8).map("\n".join)))
@fuzz_settings(ci_examples=100, long_examples=1500)
def test_random_documents_load_or_name_the_file_or_a_key(work_dir, document):
    path = _new_dir(work_dir) / "config.yaml"
    if isinstance(document, bytes):
        path.write_bytes(document)
    else:
        path.write_text(document, encoding="utf-8", errors="surrogatepass")
    result = _load(path)
    if isinstance(result, str):
        assert str(path) in result or "config key" in result, result


@pytest.mark.parametrize("document", [
    "seed: 2001-13-01\n", "2001-02-30: 1\n", "seed: !!int abc\n", "seed: !!int\n",
    "amp: !!bool maybe\n", "seed: !!timestamp soon\n", "seed: " + "9" * 5000 + "\n",
    "seed: 0x" + "f" * 5000 + "\n"])
def test_yaml_values_that_pyyaml_cannot_build_are_named_config_errors(tmp_path, document):
    """Values YAML parses but PyYAML cannot build, and huge integers, name the file or key.

    PyYAML raises ValueError/TypeError/... (not YAMLError) for these, and str() of an integer
    over 4300 digits raises.
    """
    path = tmp_path / "config.yaml"
    path.write_text(document)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(path) in str(error.value) or "config key 'seed'" in str(error.value)
    assert len(str(error.value)) < 400


def test_a_billion_laughs_config_is_refused_quickly(tmp_path):
    """Nested aliases expand to 10**10 elements: the error must not print (or walk) them."""
    anchors = ["&a0 [x, x, x, x, x, x, x, x, x, x]"] + [
        f"&a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    path = tmp_path / "laughs.yaml"
    for document in (f"seed: [{', '.join(anchors)}]\n",
                     f"data: {{root: [{', '.join(anchors)}]}}\n"):
        path.write_text(document)
        started = time.perf_counter()
        with pytest.raises(ConfigError, match="config key '(seed|data.root)' must be") as error:
            load_config(path)
        assert time.perf_counter() - started < 2.0 and len(str(error.value)) < 400


# ================================================================= label images

#: kind -> (bit depth, PNG colour type, channels, what read_label must do with it).
LABEL_KINDS = {
    "grey 1 bit": (1, 0, 1, "exact"), "grey 2 bit": (2, 0, 1, "exact"),
    "grey 4 bit": (4, 0, 1, "exact"), "grey 8 bit": (8, 0, 1, "exact"),
    "grey 16 bit <= 255": (16, 0, 1, "exact"), "grey 16 bit > 255": (16, 0, 1, "error"),
    "RGB": (8, 2, 3, "error"), "palette": (8, 3, 1, "error"),
    "grey + alpha": (8, 4, 2, "error"), "RGBA": (8, 6, 4, "error"),
}
OTHER_FORMATS = {"bmp": ".bmp", "jpeg": ".jpg", "tiff float": ".tiff", "tiff 16 bit": ".tiff"}
PNG_MUTATIONS = ["none", "none", "truncated", "flipped", "header, CRC fixed", "header",
                 "junk after the end", "tRNS chunk", "text chunk"]


def _label_values(rng, kind: str, shape) -> np.ndarray:
    depth, _, channels, _ = LABEL_KINDS[kind]
    high = {1: 2, 2: 4, 4: 16, 8: 256}.get(depth, 256)
    if kind == "grey 16 bit > 255":
        values = rng.integers(0, 65536, shape)
        values.flat[0] = 256 + rng.integers(0, 65280)
        return values
    if channels > 1:
        shape = (*shape, channels)
    return rng.integers(0, high, shape)


@st.composite
def label_files(draw):
    """Return (file bytes, the labels they hold, what read_label must do, required size)."""
    height, width = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from([*LABEL_KINDS, *OTHER_FORMATS, "random bytes", "empty"]))
    expected = None
    if kind in LABEL_KINDS:
        depth, colour, _, expect = LABEL_KINDS[kind]
        pixels = _label_values(rng, kind, (height, width))
        expected = pixels.astype(np.uint8) if expect == "exact" else None
        mutation = draw(st.sampled_from(PNG_MUTATIONS))
        chunks = ()
        if mutation == "tRNS chunk" and colour == 0:
            chunks = (hostile_images.png_chunk(b"tRNS", struct.pack(">H", 0)),)
            expect = "exact or error" if expect == "exact" else expect
        if mutation == "text chunk":
            chunks = (hostile_images.png_chunk(b"tEXt", b"Comment\x00" + draw(st.binary(
                max_size=20)).replace(b"\x00", b"")),)
        data = png_file(pixels, depth, colour, chunks)
        if mutation == "truncated":
            data = data[:draw(st.integers(0, len(data) - 1))]
            expect = "error"
        elif mutation == "flipped":
            flipped = bytearray(data)
            for _ in range(draw(st.integers(1, 4))):
                at = draw(st.integers(0, len(data) - 1))
                flipped[at] ^= draw(st.integers(1, 255))
            data = bytes(flipped)
            # every PNG chunk has a CRC: a flip is caught, or hit nothing the labels depend on
            expect = "exact or error" if expect == "exact" else "error or any"
        elif mutation.startswith("header"):
            ihdr = struct.pack(">II", draw(st.integers(0, 40)), draw(st.integers(0, 40))) + draw(
                st.one_of(st.binary(min_size=5, max_size=5),
                          st.sampled_from([b"\x01\x00\x00\x00\x00", b"\x10\x00\x00\x00\x00",
                                           b"\x08\x02\x00\x00\x00", b"\x08\x00\x00\x00\x01"])))
            data = hostile_images.PNG_SIGNATURE + hostile_images.png_chunk(b"IHDR", ihdr)[
                :None if mutation.endswith("fixed") else -4] + (
                b"" if mutation.endswith("fixed") else b"\0\0\0\0") + data[33:]
            expect = "any"
        elif mutation == "junk after the end":
            data += draw(st.binary(min_size=1, max_size=32))
    elif kind in OTHER_FORMATS:
        if kind == "tiff float":
            pixels = rng.random((height, width)).astype(np.float32) * 3
        elif kind == "tiff 16 bit":
            pixels = rng.integers(0, 3, (height, width)).astype(np.uint16)
        else:
            pixels = rng.integers(0, 256, (height, width)).astype(np.uint8)
        data = cv2.imencode(OTHER_FORMATS[kind], pixels)[1].tobytes()
        expect = {"tiff float": "error", "tiff 16 bit": "exact or error"}.get(kind, "any")
        if expect.startswith("exact"):
            expected = pixels.astype(np.uint8)
    elif kind == "random bytes":
        data, expect = draw(st.binary(max_size=64)), "any"
    else:
        data, expect = b"", "error"
    size = draw(st.one_of(st.none(), st.just((height, width)),
                          st.tuples(st.integers(1, 12), st.integers(1, 12))))
    if size is not None and size != (height, width) and expect != "any":
        expect, expected = "error", None
    return data, expected, expect, size, kind


def _read_label(path: Path, size):
    """read_label, checked: the uint8 HxW labels, or None for a ValueError naming the file."""
    try:
        label = read_label(path, size)
    except ValueError as exc:
        assert str(path) in str(exc), str(exc)
        return None
    assert isinstance(label, np.ndarray) and label.dtype == np.uint8 and label.ndim == 2
    assert label.size > 0
    if size is not None:
        assert label.shape == tuple(size)
    return label


@given(label_files())
@fuzz_settings(ci_examples=250, long_examples=3000)
def test_labels_read_exactly_or_raise_value_error_naming_the_file(work_dir, case):
    data, expected, expect, size, kind = case
    path = _new_dir(work_dir) / "label.png"
    path.write_bytes(data)
    label = _read_label(path, size)
    outcomes[f"label {'rejected' if label is None else 'read'}"] += 1
    if expect == "error":
        assert label is None, f"{kind}: a bad label was read"
    elif expect == "exact":
        assert label is not None, f"{kind}: a valid label was refused"
    if label is not None and expect.startswith("exact"):
        np.testing.assert_array_equal(label, expected)


def test_a_missing_or_folder_label_is_named(tmp_path):
    for path in (tmp_path / "missing.png", tmp_path):
        with pytest.raises(ValueError, match=f"cannot read label file {path}"):
            read_label(path)


def test_a_label_claiming_a_huge_size_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)  # 8-bit grey, 10 GB
    path.write_bytes(hostile_images.PNG_SIGNATURE + hostile_images.png_chunk(b"IHDR", ihdr)
                     + hostile_images.png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + hostile_images.png_chunk(b"IEND", b""))
    with pytest.raises(ValueError, match="is 100000x100000, its image 64x48"):
        read_label(path, (48, 64))


# ================================================================= the evaluator's frames

#: Label kinds of the evaluator's frames: how each is written and whether it must count.
FRAME_KINDS = ["grey 8 bit", "grey 8 bit", "grey 1 bit", "grey 16 bit <= 255", "wrong size",
               "values above the classes", "RGB", "truncated", "grey 16 bit > 255", "missing"]


@st.composite
def evaluation_folders(draw):
    """Return a list of (image HxWx3, label kind, label values or None)."""
    frames = []
    for _ in range(draw(st.integers(1, 4))):
        height, width = draw(st.integers(2, 12)), draw(st.integers(2, 12))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        kind = draw(st.sampled_from(FRAME_KINDS))
        values = rng.choice(np.array([0, 1, 2, 255]), (height, width))
        if kind == "grey 1 bit":
            values = rng.integers(0, 2, (height, width))
        elif kind == "values above the classes":
            values[0, 0] = draw(st.integers(len(CAMVID_CLASSES), 254))
        frames.append((image, kind, values))
    return frames


def _write_frame(folder: Path, name: str, image, kind: str, values) -> bool:
    """Write one frame's image and label; True when the evaluator must count it."""
    cv2.imwrite(str(folder / "images" / f"{name}.png"), image)
    label_path = folder / "labels" / f"{name}.png"
    if kind == "missing":
        return False
    depth, colour = {"grey 1 bit": (1, 0), "grey 16 bit <= 255": (16, 0), "RGB": (8, 2),
                     "grey 16 bit > 255": (16, 0)}.get(kind, (8, 0))
    if kind == "RGB":
        values = np.repeat(values[..., None], 3, axis=2)
    if kind == "grey 16 bit > 255":
        values = values.astype(np.uint16) + 256
    if kind == "wrong size":
        values = np.pad(values, ((0, 1), (0, 0)))
    data = png_file(values, depth, colour)
    label_path.write_bytes(data[:len(data) // 2] if kind == "truncated" else data)
    return kind in ("grey 8 bit", "grey 1 bit", "grey 16 bit <= 255")


def _stand_in_detector(image: np.ndarray) -> DetectorOutput:
    rng = np.random.default_rng(image.size)
    return DetectorOutput(np.zeros(image.shape[:2], np.uint8),
                          {"jsd": rng.random(image.shape[:2]).astype(np.float32)})


@pytest.mark.filterwarnings("ignore:Mean of empty slice")  # mIoU of a frame all ignored
@given(evaluation_folders())
@fuzz_settings(ci_examples=40, long_examples=1000)
def test_evaluator_counts_every_frame_exactly_or_names_its_label_file(work_dir, frames):
    folder = _new_dir(work_dir)
    (folder / "images").mkdir()
    (folder / "labels").mkdir()
    counted, refused, missing = {}, {}, []
    for index, (image, kind, values) in enumerate(frames):
        name = f"f{index}"
        if _write_frame(folder, name, image, kind, values):
            counted[name] = values
        elif kind == "missing":
            missing.append(name)
        else:
            refused[name] = folder / "labels" / f"{name}.png"
    found, problems = find_frames(folder / "images", folder / "labels", folder / "labels")
    assert sorted(f.name for f in found) == sorted([*counted, *refused])
    assert len(problems) == 2 * len(missing)  # anomaly and semantic label, each by name
    evaluation = Evaluation(AnomalyMetrics(["jsd"]), SemanticMetrics(CAMVID_CLASSES, 255))
    evaluate_frames(_stand_in_detector, found, AnomalyLabelSpec(), evaluation, progress=False)
    assert evaluation.stopped is None
    assert evaluation.frames == len(counted)
    assert len(evaluation.problems) == len(refused)
    for name, path in refused.items():
        assert any(str(path) in problem for problem in evaluation.problems), (
            name, evaluation.problems)
    labels = [values for values in counted.values()]
    summary = evaluation.anomaly.summary()["scores"]["jsd"]
    assert summary["positives"] == sum(int((v == 1).sum()) for v in labels)
    assert summary["negatives"] == sum(int(((v != 1) & (v != 255)).sum()) for v in labels)
    assert evaluation.semantic.summary()["pixels"] == sum(int((v != 255).sum()) for v in labels)
    outcomes["evaluator frames counted"] += len(counted)
    outcomes["evaluator frames refused"] += len(refused) + len(missing)


# ================================================================= ONNX metadata

METADATA_VALUES = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["[]", "[1]", "[32, 48]", "[32, 48, 3]", '["a"]', "null", "5", "true",
                     '"x"', "[true, 3]", "[0, 5]", "{}", "[[1]]", "1e999", "NaN", "[32.0, 48]",
                     "[" * 5000, "9" * 5000, " 17 ", "-1", ONNX_FORMAT]))


@st.composite
def onnx_metadata(draw):
    metadata = dict(VALID_ONNX_METADATA)
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 3]))):
        key = draw(st.sampled_from(sorted(VALID_ONNX_METADATA)))
        if draw(st.booleans()):
            metadata[key] = draw(METADATA_VALUES)
        else:
            metadata.pop(key, None)
    return metadata


@given(onnx_metadata())
@fuzz_settings(ci_examples=60, long_examples=600)
def test_onnx_metadata_is_read_typed_or_refused_naming_the_file(work_dir, metadata):
    path = _new_dir(work_dir) / "model.onnx"
    tiny_onnx(path, metadata)
    try:
        info = read_onnx_info(path)
    except ModelFileError as exc:
        assert str(path) in str(exc)
        outcomes["onnx refused"] += 1
        return
    outcomes["onnx read"] += 1
    assert info.class_names and all(isinstance(n, str) for n in info.class_names)
    assert all(isinstance(n, str) for n in info.score_names)
    assert len(info.input_size) == 2 and all(isinstance(v, int) and v > 0
                                             for v in info.input_size)
    assert isinstance(info.dynamic_size, bool) and isinstance(info.opset, int)
    if metadata == VALID_ONNX_METADATA:
        assert info.input_size == (32, 48) and info.class_names == tuple(CAMVID_CLASSES)


# ================================================================= TensorRT engine records

ENGINE_ENV = dict(gpu="NVIDIA H200", capability="9.0", version="10.3.0")


@pytest.fixture(scope="module")
def fake_tensorrt():
    """Fake TensorRT's two seams for the whole module: the environment key and the builder."""
    def current_key(onnx_sha256, precision, input_size, calibration_id=None, device_index=0,
                    build="typed"):
        return tensorrt_backend.engine_key(onnx_sha256, precision, (1, *input_size, 3),
                                           ENGINE_ENV["gpu"], ENGINE_ENV["capability"],
                                           ENGINE_ENV["version"], calibration_id, build)

    def build(onnx_path, precision, input_size, calibrator=None, workspace_gb=4.0, status=None,
              device_index=0, build="typed"):
        return f"{precision} engine".encode()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tensorrt_backend, "current_engine_key", current_key)
        patch.setattr(tensorrt_backend, "build_engine", build)
        yield


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2, 2**40), st.floats(allow_nan=False),
              st.text(max_size=10)),
    lambda children: st.one_of(st.lists(children, max_size=5),
                               st.dictionaries(st.text(max_size=6), children, max_size=3)),
    max_leaves=8)
RECORD_FIELDS = ["key.precision", "key.input_shape", "key.onnx_sha256", "key.gpu",
                 "key.calibration_id", "key.tensorrt", "class_names", "score_names", "onnx",
                 "sha256", "calibration", "key"]


@st.composite
def record_mutations(draw):
    return [(draw(st.sampled_from(RECORD_FIELDS)), draw(st.booleans()), draw(JSON_VALUES))
            for _ in range(draw(st.integers(0, 3)))]


@given(record_mutations(), st.sampled_from(["valid", "not JSON", "a list", "stale engine"]))
@fuzz_settings(ci_examples=80, long_examples=1000)
def test_engine_records_are_used_rebuilt_or_refused_naming_the_file(work_dir, fake_tensorrt,
                                                                    mutations, shape):
    folder = _new_dir(work_dir)
    onnx_path = folder / "model.onnx"
    tiny_onnx(onnx_path, VALID_ONNX_METADATA)
    engine = tensorrt_backend.ensure_engine(onnx_path, folder / "model.engine", "fp16",
                                            build="flags")
    record = cache.read_record(engine)
    for field, delete, value in mutations:
        node, name = ((record.get("key"), field[4:]) if field.startswith("key.")
                      else (record, field))
        if not isinstance(node, dict):
            continue
        if delete:
            node.pop(name, None)
        else:
            node[name] = value
    text = json.dumps(record)
    if shape == "not JSON":
        text = text[:len(text) // 2]
    elif shape == "a list":
        text = json.dumps([record])
    cache.record_path(engine).write_text(text)
    if shape == "stale engine":
        engine.write_bytes(b"truncated")
    allowed = [str(engine), str(onnx_path)]
    calibration = record.get("calibration") if isinstance(record, dict) else None
    if isinstance(calibration, dict) and isinstance(calibration.get("image_dir"), str):
        allowed.append(calibration["image_dir"])
    try:
        result = tensorrt_backend.check_engine_file(engine, status=lambda message: None)
    except (ModelFileError, ValueError) as exc:
        assert any(name in str(exc) for name in allowed), str(exc)
        outcomes["engine refused"] += 1
        return
    assert result == engine
    tensorrt_backend.read_engine_record(engine)  # what the backend reads next is valid
    outcomes["engine used or rebuilt"] += 1


# ================================================================= checkpoint fields

VALID_PAYLOAD = {"format": CHECKPOINT_FORMAT, "model": "efficientnet_lite0_swiftnet",
                 "num_classes": 11, "class_names": list(CAMVID_CLASSES), "input_size": [64, 96],
                 "state_dict": {"weight": torch.zeros(2)}, "meta": {}}
PAYLOAD_VALUES = st.one_of(
    JSON_VALUES, st.sampled_from([11, 0, -1, 11.0, True, "11", [64, 96], [64], [0, 96],
                                  [64.0, 96], (64, 96), list(CAMVID_CLASSES),
                                  list(CAMVID_CLASSES)[:3], [1] * 11, {"w": 1}, []]))


@given(st.lists(st.tuples(st.sampled_from(sorted(VALID_PAYLOAD)), st.booleans(),
                          PAYLOAD_VALUES), max_size=3))
@fuzz_settings(ci_examples=60, long_examples=600)
def test_checkpoint_fields_are_checked_naming_the_file(work_dir, mutations):
    payload = dict(VALID_PAYLOAD)
    for field, delete, value in mutations:
        if delete:
            payload.pop(field, None)
        else:
            payload[field] = value
    path = _new_dir(work_dir) / "model.pt"
    torch.save(payload, path)
    try:
        loaded = read_checkpoint(path)
    except CheckpointError as exc:
        assert str(path) in str(exc)
        outcomes["checkpoint refused"] += 1
        return
    outcomes["checkpoint read"] += 1
    assert isinstance(loaded["model"], str) and isinstance(loaded["state_dict"], dict)
    assert isinstance(loaded["num_classes"], int) and not isinstance(loaded["num_classes"], bool)
    assert len(loaded["class_names"]) == loaded["num_classes"]
    assert all(isinstance(side, int) and side > 0 for side in loaded["input_size"])
