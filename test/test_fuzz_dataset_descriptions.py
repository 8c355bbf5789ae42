"""Property tests (hypothesis) of dataset description files (issue 17).

Targets and properties (never any other exception, never a hang, never a silently wrong
value):

- dataset descriptions (:func:`training.data.description.load_description`, through
  :func:`dense_ood_ros.label_set.read_description_yaml` and
  :func:`~dense_ood_ros.label_set.parse_label_set`): the built-in ``camvid.yaml`` and
  ``cityscapes.yaml`` mutated (keys set to random YAML values or to near-valid ones, keys
  deleted, unknown keys added, classes duplicated, dropped, renamed, recoloured out of range,
  up to 260 of them, ``label_values`` with out-of-range, negative and non-integer stored
  values and targets, ``ignore_index`` at and around its edges, splits mutated), random YAML
  documents (scalars PyYAML cannot construct, such as a 13th month, ``!!int abc`` or integers
  of thousands of digits, included), text, bytes, empty and truncated files. A description
  that satisfies every documented invariant and says exactly what the file says, or a
  :class:`~training.data.description.DatasetDescriptionError` (a ValueError) naming the file
  and, for a mutated description, a mutated key.
- :meth:`DatasetDescription.train_ids`: random uint8 label arrays against built-in and random
  valid ``label_values``. The exact training ids, or a
  :class:`~training.data.description.DatasetError` naming the label file and the unlisted
  values.

Profiles (``test/fuzz_profiles.py``): ``ci`` by default, ``long`` with
``DENSE_OOD_FUZZ_PROFILE=long`` (``scripts/fuzz.sh``).
"""

import copy
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from fuzz_profiles import fuzz_settings, outcome_counter, yaml_strategies
from hypothesis import given
from hypothesis import strategies as st

from dense_ood_ros.label_set import BUILTIN_DIR, MAX_LABEL_VALUE, LabelSetError
from training.data.description import (CITYSCAPES_TRAIN_IDS, DEFAULT_SPLITS, IGNORE, KEYS,
                                       LAYOUTS, DatasetDescription, DatasetDescriptionError,
                                       DatasetError, SplitFolders, load_description,
                                       parse_description)

outcomes, print_outcomes = outcome_counter("dataset descriptions (files, label values)")


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory) -> Path:
    """Return a folder for the files of all examples (each makes its own subfolder)."""
    return tmp_path_factory.mktemp("fuzz_descriptions")


def _new_file(work_dir: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=work_dir)) / "description.yaml"


BUILTIN_TEXT = {name: (BUILTIN_DIR / f"{name}.yaml").read_text() for name in ("camvid",
                                                                              "cityscapes")}
BUILTIN = {name: yaml.safe_load(text) for name, text in BUILTIN_TEXT.items()}


# ================================================================= the oracle

def _expected_label_values(values: dict, names, ignore: int, layout: str) -> dict:
    """Return stored value -> training id as the description's keys say (read here)."""
    given_values = values.get("label_values")
    if given_values is None:
        if layout == "cityscapes":
            return {stored: ignore if train_id == 255 else train_id
                    for stored, train_id in CITYSCAPES_TRAIN_IDS.items()}
        return {**{i: i for i in range(len(names))}, ignore: ignore}
    return {stored: (ignore if target == IGNORE else names.index(target)
                     if isinstance(target, str) else target)
            for stored, target in given_values.items()}


def _check_description(description, values: dict, path: Path) -> None:
    """Every invariant of a loaded description, and that it says what the file says."""
    assert isinstance(description, DatasetDescription) and description.source == path
    label_set = description.label_set
    names, colors, ignore = label_set.class_names, label_set.colors, label_set.ignore_index
    assert 2 <= len(names) <= MAX_LABEL_VALUE and len(colors) == len(names)
    assert len(set(names)) == len(names)
    assert all(isinstance(name, str) and name.strip() for name in names)
    for color in colors:
        assert len(color) == 3 and all(type(c) is int and 0 <= c <= 255 for c in color)
    assert type(ignore) is int and len(names) <= ignore <= MAX_LABEL_VALUE
    assert description.layout in LAYOUTS
    assert isinstance(description.title, str) and description.title.strip()
    assert description.root is None or (isinstance(description.root, str)
                                        and description.root.strip())
    mapping = description.label_values
    assert mapping and all(type(stored) is int and 0 <= stored <= MAX_LABEL_VALUE
                           for stored in mapping)
    assert all(type(t) is int and (0 <= t < len(names) or t == ignore) for t in mapping.values())
    assert set(range(len(names))) <= set(mapping.values())  # every class is reachable
    # ... and exactly what the file says
    assert label_set.name == values["name"].strip()
    assert list(names) == [entry["name"] for entry in values["classes"]]
    assert [list(color) for color in colors] == [entry["color"] for entry in values["classes"]]
    assert ignore == values.get("ignore_index", 255)
    assert description.layout == values.get("layout", "folders")
    assert description.title == values.get("title", label_set.name)
    assert description.root == values.get("root")
    splits = values.get("splits")
    if description.layout == "cityscapes":
        assert description.splits == {}
    elif splits is None:
        assert description.splits == {s: SplitFolders(f"{s}/images", f"{s}/labels")
                                      for s in DEFAULT_SPLITS}
    else:
        assert description.splits == {s: SplitFolders(f["images"], f["labels"], f.get("list"))
                                      for s, f in splits.items()}
    assert mapping == _expected_label_values(values, list(names), ignore, description.layout)


def _load(path: Path, values=None):
    """load_description, checked: returns the description, or the error's message."""
    started = time.process_time()
    try:
        description = load_description(str(path))
    except DatasetDescriptionError as exc:
        assert str(path) in str(exc), str(exc)
        assert len(str(exc)) < 2000, "an error message that prints the whole document"
        outcomes["description rejected"] += 1
        return str(exc)
    finally:
        assert time.process_time() - started < 20.0, "one description took over 20 CPU s"
    assert values is not None, "a document the test did not write as a description was accepted"
    _check_description(description, values, path)
    outcomes["description accepted"] += 1
    return description


# ================================================================= mutated descriptions

YAML_SCALARS, YAML_KEYS, YAML_VALUES = yaml_strategies(
    ["camvid", "folders", "cityscapes", "ignore", "road", "sky", "255", "", " ", "~", "yes"],
    max_int=300, max_text=12, key_ints=(-2, 300), max_list=4, max_leaves=8)
COLOR_COMPONENTS = st.one_of(st.integers(0, 255), st.sampled_from(
    [-1, 256, 1000, 1.5, 128.0, True, False, None, "128", [1], 2**64]))
TEXTS = st.one_of(st.text(max_size=10), st.sampled_from(["", " ", "\t", "x", "camvid",
                                                         "data/x", 5, None, ["a"], {}]))
SPLIT_FOLDERS = st.fixed_dictionaries(
    {}, optional={"images": TEXTS, "labels": TEXTS, "list": TEXTS, "extra": YAML_SCALARS})
NEAR = {
    "name": TEXTS, "title": TEXTS, "root": TEXTS,
    "layout": st.sampled_from(["folders", "cityscapes", "Folders", "cityscape", "", None, 1,
                               ["folders"]]),
    "splits": st.one_of(
        st.none(), st.dictionaries(st.one_of(st.sampled_from(["train", "val", "test", "x"]),
                                             YAML_KEYS),
                                   st.one_of(SPLIT_FOLDERS, YAML_SCALARS), max_size=3),
        st.sampled_from([[], "train", {"train": {"images": "a", "labels": "b"}}])),
    "ignore_index": st.one_of(st.integers(-2, 258), st.sampled_from(
        [10, 11, 18, 19, 255, 256, 11.0, True, "255", None, 2**64, -2**64])),
    "label_values": st.one_of(
        st.none(), st.sampled_from([{}, [], "ignore", {0: "sky"}]),
        st.dictionaries(
            st.one_of(st.integers(-3, 300), st.sampled_from([True, 1.5, "7", None, 2**70])),
            st.one_of(st.sampled_from(["sky", "road", "car", "ignore", "Ignore", "nope", ""]),
                      st.integers(-2, 260), st.sampled_from([True, None, 1.0, [1]])),
            max_size=6)),
    "classes": st.one_of(st.none(), st.sampled_from([[], {}, "sky", [{"name": "a",
                                                                      "color": [1, 2, 3]}]]),
                         st.lists(YAML_VALUES, max_size=3)),
}
CLASS_MUTATIONS = ["duplicate", "drop", "append", "rename", "name", "color component",
                   "color length", "extra key", "not a mapping", "many", "few"]


@st.composite
def valid_label_values(draw, names, ignore: int):
    """Draw a label_values mapping valid for ``names`` (stored values drawn at random)."""
    stored = draw(st.lists(st.integers(0, 255), min_size=len(names),
                           max_size=len(names) + 4, unique=True))
    mapping = {}
    for position, value in enumerate(stored):
        index = position if position < len(names) else draw(st.integers(0, len(names) - 1))
        if position >= len(names) and draw(st.booleans()):
            mapping[value] = draw(st.sampled_from([IGNORE, ignore]))
        else:
            mapping[value] = draw(st.sampled_from([names[index], index]))
    return mapping


def _mutate_classes(draw, classes: list) -> list:
    kind = draw(st.sampled_from(CLASS_MUTATIONS))
    classes = copy.deepcopy(classes)
    position = draw(st.integers(0, len(classes) - 1)) if classes else 0
    entry = classes[position] if classes else None
    if not isinstance(entry, dict):  # an earlier mutation made it something else
        entry = {}
    if kind == "duplicate" and classes:
        classes.insert(position, copy.deepcopy(classes[draw(st.integers(0, len(classes) - 1))]))
    elif kind == "drop" and classes:
        classes.pop(position)
    elif kind == "append":
        classes.append({"name": draw(st.text(min_size=1, max_size=6)),
                        "color": [draw(st.integers(0, 255)) for _ in range(3)]})
    elif kind == "rename":  # another class's name, or a new one
        entry["name"] = draw(st.one_of(
            st.sampled_from([e.get("name") if isinstance(e, dict) else None for e in classes]
                            or [None]), st.text(max_size=6)))
    elif kind == "name":
        entry["name"] = draw(TEXTS)
    elif kind == "color component":
        color = entry.get("color")
        if not isinstance(color, list) or not color:
            color = [0, 0, 0]
        color[draw(st.integers(0, len(color) - 1))] = draw(COLOR_COMPONENTS)
        entry["color"] = color
    elif kind == "color length":
        entry["color"] = draw(st.lists(COLOR_COMPONENTS, max_size=5))
    elif kind == "extra key":
        entry[draw(st.sampled_from(["colour", "id", "name ", 1]))] = 1
    elif kind == "not a mapping" and classes:
        classes[position] = draw(YAML_VALUES)
    elif kind == "many":  # the uint8 limit: 255 classes at most
        for index in range(len(classes), draw(st.integers(250, 260))):
            classes.append({"name": f"class{index}", "color": [index % 256, 0, 0]})
    elif kind == "few":
        classes = classes[:draw(st.integers(0, 1))]
    return classes


NAMES = st.text(min_size=1, max_size=8).filter(str.strip)


def _valid_change(draw, values: dict) -> str:
    """Change ``values`` so that a valid description stays valid; return the key changed."""
    classes = values.get("classes")
    count = len(classes) if isinstance(classes, list) else 2
    key = draw(st.sampled_from(["title", "root", "ignore_index", "classes", "classes",
                                "splits", "delete"]))
    if key in ("title", "root"):
        values[key] = draw(NAMES)
    elif key == "ignore_index":
        values[key] = draw(st.integers(min(count, 255), 255))
    elif key == "classes" and isinstance(classes, list) and classes and all(
            isinstance(entry, dict) for entry in classes):
        entry = classes[draw(st.integers(0, len(classes) - 1))]
        if draw(st.booleans()):
            entry["color"] = [draw(st.integers(0, 255)) for _ in range(3)]
        else:  # a new name, unique (label_values naming the old one no longer map it)
            entry["name"] = draw(NAMES.filter(lambda name: name not in
                                              [e.get("name") for e in classes]))
    elif key == "splits":
        values[key] = draw(st.dictionaries(
            NAMES, st.fixed_dictionaries({"images": NAMES, "labels": NAMES},
                                         optional={"list": NAMES}), min_size=1, max_size=3))
    else:
        key = draw(st.sampled_from(["title", "root", "splits", "ignore_index",
                                    "label_values"]))
        values.pop(key, None)
    return key


#: Top-level key -> the keys an error caused by mutating it may name.
RELATED = {"name": {"name"}, "title": {"title"}, "root": {"root"}, "splits": {"splits"},
           "layout": {"layout", "splits", "label_values", "classes"},
           "classes": {"classes", "ignore_index", "label_values"},
           "ignore_index": {"ignore_index", "label_values"},
           "label_values": {"label_values", "classes"}}


@st.composite
def mutated_descriptions(draw):
    """Return (the document's values, the names an error may give for the mutations)."""
    base = draw(st.sampled_from(sorted(BUILTIN)))
    values, named = copy.deepcopy(BUILTIN[base]), set()
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["value", "near", "near", "delete", "unknown", "classes",
                                     "classes", "valid label_values", "split", "valid",
                                     "valid", "valid"]))
        key = draw(st.sampled_from(KEYS))
        if kind == "valid":
            key = _valid_change(draw, values)
        elif kind == "value":
            values[key] = draw(YAML_VALUES)
        elif kind == "near":
            values[key] = draw(NEAR[key])
        elif kind == "delete":
            values.pop(key, None)
        elif kind == "unknown":
            key = draw(YAML_KEYS.filter(lambda k: k not in KEYS))
            values[key] = draw(YAML_SCALARS)
            named.add(key if isinstance(key, str) else repr(key))
            continue
        elif kind == "classes":
            key = "classes"
            if isinstance(values.get(key), list):
                values[key] = _mutate_classes(draw, values[key])
        elif kind == "valid label_values":
            key = "label_values"
            classes = values.get("classes")
            if isinstance(classes, list) and 2 <= len(classes) <= MAX_LABEL_VALUE and all(
                    isinstance(entry, dict) for entry in classes):
                names = [entry.get("name") for entry in classes]
                ignore = values.get("ignore_index", 255)
                values[key] = draw(valid_label_values(names, ignore if isinstance(ignore, int)
                                                      else 255))
        else:  # a split's folders
            key = "splits"
            splits = values.get(key)
            if not isinstance(splits, dict):
                splits = values[key] = {"train": {"images": "a", "labels": "b"}}
            split = draw(st.sampled_from(sorted(map(str, splits)) + ["extra"]))
            folders = splits.get(split)
            if not isinstance(folders, dict):
                folders = splits[split] = {"images": "i", "labels": "l"}
            field = draw(st.sampled_from(["images", "labels", "list", "other"]))
            if draw(st.booleans()):
                folders.pop(field, None)
            else:
                folders[field] = draw(TEXTS)
        named |= RELATED[key]
    return values, named


def test_the_builtin_descriptions_load_as_they_say(work_dir):
    for name, values in BUILTIN.items():
        path = _new_file(work_dir)
        path.write_text(BUILTIN_TEXT[name])
        assert _load(path, values).label_values == load_description(name).label_values


@given(mutated_descriptions())
@fuzz_settings(ci_examples=200, long_examples=5000)
def test_mutated_descriptions_load_exactly_or_name_the_file_and_a_mutated_key(work_dir, case):
    values, named = case
    path = _new_file(work_dir)
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    result = _load(path, values)
    if isinstance(result, str):
        message = result.replace(str(path), "<file>")
        assert any(name in message for name in named), (message, named)


DESCRIPTION_FRAGMENTS = [
    "name: x", "name: camvid", "title: T", "layout: folders", "layout: cityscapes",
    "root: data", "ignore_index: 255", "ignore_index: 11", "ignore_index: 0x0b",
    "ignore_index: 1_1", "ignore_index: 0b1011", "ignore_index: 0:11", "ignore_index: .nan",
    "classes:", "  - {name: a, color: [1, 2, 3]}", "  - {name: b, color: [0, 0, 0]}",
    "  - {name: a, color: [1, 2]}", "  - name: c", "    color: [255, 255, 256]", "  - &c x",
    "classes: [{name: a, color: [1, 2, 3]}, {name: b, color: [4, 5, 6]}]",
    "classes: &l [*l, *l]", "label_values: {0: a, 1: b, 255: ignore}", "label_values:",
    "  7: a", "  -1: b", "  0x100: ignore", "  2001-01-01: a", "  ? [1]", "  : a",
    "splits: {train: {images: i, labels: l}}", "splits:", "  train: {images: i}",
    # scalars that PyYAML's constructors cannot build (ValueError, KeyError, AttributeError)
    "when: 2001-13-01", "2001-02-30: x", "n: !!int abc", "f: !!float x", "b: !!bool maybe",
    "t: !!timestamp soon", "big: " + "9" * 5000, "hex: 0x" + "f" * 5000,
    "? 0x" + "f" * 5000 + "\n: 1", "sexagesimal: " + ":".join(["59"] * 2000),
    "!!python/object:os.system", "---", "...", "x: &a [1, 2]", "y: *a", "*a", "{", "[", "]",
    ":", "? [a]", ": 1", "\t", "#", "%YAML 1.1", "\ufeff", "\x00", "- a", "[" * 20]


@given(st.one_of(
    st.binary(max_size=200), st.text(max_size=200),
    st.lists(st.sampled_from(DESCRIPTION_FRAGMENTS), max_size=8).map("\n".join),
    st.tuples(st.sampled_from(sorted(BUILTIN_TEXT)), st.floats(0, 1)).map(
        lambda cut: BUILTIN_TEXT[cut[0]][:int(len(BUILTIN_TEXT[cut[0]]) * cut[1])])))
@fuzz_settings(ci_examples=300, long_examples=4000)
def test_random_documents_load_or_name_the_file(work_dir, document):
    path = _new_file(work_dir)
    if isinstance(document, bytes):
        path.write_bytes(document)
    else:
        path.write_text(document, encoding="utf-8", errors="surrogatepass")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - not a document the oracle can read: must be refused
        values = None
    _load(path, values if isinstance(values, dict) else None)


# ================================================================= regressions

@pytest.mark.parametrize("document", [
    "name: x\nwhen: 2001-13-01\n", "2001-02-30: x\n", "name: !!int abc\n",
    "name: !!float x\n", "name: !!bool maybe\n", "name: !!timestamp soon\n",
    "name: " + "9" * 5000 + "\n"])
def test_scalars_yaml_cannot_construct_name_the_file(tmp_path, document):
    """These raised ValueError, KeyError, IndexError or AttributeError past the loader."""
    path = tmp_path / "bad.yaml"
    path.write_text(document)
    with pytest.raises(DatasetDescriptionError,
                       match=re.escape(f"dataset description {path} is not valid YAML")):
        load_description(str(path))


@pytest.mark.parametrize("mutation", [
    "ignore_index: 0x{f}", "name: 0x{f}", "? 0x{f}\n: 1", "label_values:\n  ? 0x{f}\n  : sky",
    "splits:\n  ? 0x{f}\n  : {{images: a, labels: b}}", "title: [0x{f}]",
    "classes:\n  - {{name: a, color: [0x{f}, 0, 0]}}\n  - {{name: b, color: [1, 2, 3]}}"])
def test_integers_too_long_to_print_are_named_not_printed(tmp_path, mutation):
    """A hex integer of 20,000 bits is a valid YAML int; str() of it raised ValueError."""
    values = {k: v for k, v in BUILTIN["camvid"].items() if not mutation.startswith(k)}
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False)
                    + mutation.format(f="f" * 5000) + "\n")
    with pytest.raises(DatasetDescriptionError) as error:
        load_description(str(path))
    assert str(path) in str(error.value) and len(str(error.value)) < 1000


def test_deep_nesting_and_a_billion_laughs_are_refused_quickly(tmp_path):
    """Nested aliases expand to 10**10 elements: the error must not print (or walk) them."""
    anchors = ["&a0 [x, x, x, x, x, x, x, x, x, x]"] + [
        f"&a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    path = tmp_path / "laughs.yaml"
    for document, key in ((f"name: [{', '.join(anchors)}]\n", "name"),
                          (f"name: x\nclasses: [{', '.join(anchors)}]\n", "classes"),
                          ("name: " + "[" * 5000 + "\n", None)):
        path.write_text(document)
        started = time.process_time()
        with pytest.raises(DatasetDescriptionError) as error:
            load_description(str(path))
        assert time.process_time() - started < 5.0 and len(str(error.value)) < 2000
        assert str(path) in str(error.value) and (key is None or f"key '{key}" in str(error.value))


def test_a_folder_and_a_missing_file_are_named_by_the_documented_error(tmp_path):
    with pytest.raises(DatasetDescriptionError,
                       match=re.escape(f"cannot read dataset description {tmp_path}")):
        load_description(f"{tmp_path}/")
    with pytest.raises(DatasetDescriptionError, match="not found"):
        load_description(str(tmp_path / "missing.yaml"))
    assert issubclass(DatasetDescriptionError, LabelSetError)
    assert issubclass(DatasetDescriptionError, ValueError)


# ================================================================= label values

@st.composite
def label_arrays(draw):
    """Return (description values, a stored uint8 label array)."""
    which = draw(st.sampled_from(["camvid", "cityscapes", "random", "random"]))
    if which == "random":
        count = draw(st.integers(2, 12))
        names = [f"c{i}" for i in range(count)]
        ignore = draw(st.integers(count, 255))
        values = {"name": "random", "ignore_index": ignore,
                  "classes": [{"name": name, "color": [i, i, i]} for i, name in enumerate(names)],
                  "label_values": draw(valid_label_values(names, ignore))}
    else:
        values = copy.deepcopy(BUILTIN[which])
    shape = draw(st.sampled_from([(0,), (0, 3), (1, 1), (2, 3), (5, 7), (16, 16), (3,),
                                  (2, 2, 2)]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    names = [entry["name"] for entry in values["classes"]]
    listed = np.array(sorted(_expected_label_values(values, names,
                                                    values.get("ignore_index", 255),
                                                    values.get("layout", "folders"))))
    pool = draw(st.sampled_from(["listed", "listed", "any", "listed + one"]))
    if pool == "any":
        stored = rng.integers(0, 256, shape)
    else:
        stored = rng.choice(listed, shape)
        if pool == "listed + one" and stored.size:
            stored.flat[rng.integers(stored.size)] = draw(st.integers(0, 255))
    return values, np.ascontiguousarray(stored.astype(np.uint8))


@given(label_arrays())
@fuzz_settings(ci_examples=200, long_examples=3000)
def test_train_ids_are_exact_or_name_the_label_file_and_its_values(case):
    values, stored = case
    description = parse_description(values, "memory.yaml")
    label_set = description.label_set
    expected = _expected_label_values(values, list(label_set.class_names),
                                      label_set.ignore_index, description.layout)
    path = Path("/labels/frame_0001.png")
    unlisted = sorted({int(v) for v in np.unique(stored)} - set(expected))
    try:
        ids = description.train_ids(stored, path)
    except DatasetError as exc:
        assert unlisted, f"refused a label whose every value is listed: {exc}"
        assert str(path) in str(exc) and "memory.yaml" in str(exc)
        assert f"values {unlisted[:10]}" in str(exc)
        outcomes["label array refused"] += 1
        return
    assert not unlisted, f"values {unlisted} are not listed, yet mapped"
    assert ids.dtype == np.uint8 and ids.shape == stored.shape
    if stored.size:
        assert ids.tolist() == np.vectorize(expected.__getitem__)(stored).tolist()
    outcomes["label array mapped"] += 1
