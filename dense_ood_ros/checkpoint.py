"""Model checkpoints: one self-describing file, loaded safely (``weights_only=True``).

A checkpoint is a dict of plain Python values and tensors::

    {"format": "dense_ood_ros/model/v1", "model": "efficientnet_lite0_swiftnet",
     "num_classes": 11, "class_names": [...], "input_size": [360, 480],
     "label_set": {"name": "camvid", "class_names": [...], "colors": [[r, g, b], ...],
                   "ignore_index": 11},
     "state_dict": {...}, "meta": {...}, "score_smoothing": 3.0}

``label_set`` (:class:`~dense_ood_ros.label_set.LabelSet`) is optional in the format:
checkpoints written before it was stored lack it, and :func:`checkpoint_label_set` then
assumes CamVid's when the class names are CamVid's; :func:`add_label_set` stores one in an
existing file, weights untouched.

``score_smoothing`` (optional, default 0: none) is the Gaussian the inference graph smooths the
score maps with (:class:`dense_ood_ros.graph.InferenceGraph`); :func:`set_score_smoothing`
writes it into an existing file, weights untouched.

It is written atomically (:func:`dense_ood_ros.io.atomic_write`). Reading checks the zip
archive's CRCs first (``torch.load`` does not: a flipped byte in a tensor would load as a
wrong weight), then the fields; any problem is a :class:`CheckpointError` naming the file.
"""

import io
import zipfile
from pathlib import Path
from typing import Any, Dict, Sequence, Tuple, Union

import torch
from torch import nn

from dense_ood_ros.io import atomic_write
from dense_ood_ros.label_set import LabelSet, LabelSetError, legacy_label_set
from dense_ood_ros.models import build_model

CHECKPOINT_FORMAT = "dense_ood_ros/model/v1"
#: Largest ``score_smoothing`` sigma (score-map cells) a checkpoint may declare.
MAX_SCORE_SMOOTHING = 16.0
_REQUIRED_KEYS = ("format", "model", "num_classes", "class_names", "input_size", "state_dict")
#: The first bytes of the zip archive ``torch.save`` writes.
_ZIP_MAGIC = b"PK\x03\x04"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt or does not match the model it declares."""


def save_checkpoint(path: Union[str, Path], model: nn.Module, model_name: str,
                    labels: Union[LabelSet, Sequence[str]], input_size: Tuple[int, int],
                    meta: Dict[str, Any]) -> None:
    """Write a model checkpoint atomically; an OSError names ``path``.

    ``labels``: the label set; class names alone write a checkpoint without one, as before
    label sets were stored (kept for tests of that case).
    """
    label_set = labels if isinstance(labels, LabelSet) else None
    class_names = label_set.class_names if label_set is not None else tuple(labels)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model": model_name,
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "input_size": [int(input_size[0]), int(input_size[1])],
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": meta,
    }
    if label_set is not None:
        payload["label_set"] = label_set.to_dict()
    _write_payload(Path(path), payload)


def _write_payload(path: Path, payload: Dict[str, Any]) -> None:
    serialized = io.BytesIO()  # in memory: a failed write is then an OSError, not torch's
    torch.save(payload, serialized)
    with atomic_write(path) as tmp:
        tmp.write_bytes(serialized.getbuffer())


def checkpoint_label_set(payload: Dict[str, Any], path: Union[str, Path]) -> LabelSet:
    """Return the label set of a checkpoint dict read from ``path``.

    One written before label sets were stored gets CamVid's when its class names are
    CamVid's (a note is logged); otherwise CheckpointError says how to add one.
    """
    if "label_set" in payload:
        return LabelSet.from_dict(payload["label_set"], f"checkpoint {path}")
    try:
        return legacy_label_set(payload["class_names"], str(path))
    except LabelSetError as exc:
        raise CheckpointError(str(exc)) from None


def add_label_set(path: Union[str, Path], label_set: LabelSet) -> str:
    """Store ``label_set`` in an existing checkpoint, in place; return what was done.

    The file is rewritten atomically with every other field as it was, so the weights stay
    bit-identical (checked on the rewritten file). The label set's class names must be the
    checkpoint's; a checkpoint with another label set is refused (CheckpointError).
    """
    path = Path(path)
    payload = read_checkpoint(path)
    if tuple(payload["class_names"]) != label_set.class_names:
        raise CheckpointError(f"checkpoint {path} has the classes {payload['class_names']}, "
                              f"label set {label_set.name!r} has {list(label_set.class_names)}")
    if "label_set" in payload:
        stored = LabelSet.from_dict(payload["label_set"], f"checkpoint {path}")
        if stored == label_set:
            return f"{path}: has label set {label_set.name!r} already, left as it was"
        raise CheckpointError(f"checkpoint {path} has another label set ({stored.name!r}, "
                              f"{stored.to_dict()}); not replaced")
    _write_payload(path, {**payload, "label_set": label_set.to_dict()})
    rewritten = read_checkpoint(path)
    weights = payload["state_dict"]
    if (rewritten["state_dict"].keys() != weights.keys()
            or not all(_bit_identical(rewritten["state_dict"][k], v) for k, v in weights.items())
            or repr({k: v for k, v in rewritten.items() if k not in ("state_dict", "label_set")})
            != repr({k: v for k, v in payload.items() if k != "state_dict"})):
        raise CheckpointError(f"checkpoint {path} did not read back the same after adding the "
                              "label set")  # torch.save/load would have to be broken
    return (f"{path}: added label set {label_set.name!r} ({label_set.num_classes} classes, "
            f"ignore index {label_set.ignore_index}); {len(weights)} weight tensors "
            "bit-identical")


def score_smoothing(payload: Dict[str, Any]) -> float:
    """Return the score smoothing sigma a checkpoint dict declares (0: none)."""
    return float(payload.get("score_smoothing", 0.0))


def set_score_smoothing(source: Union[str, Path], target: Union[str, Path],
                        sigma: float) -> None:
    """Write ``source`` to ``target`` with ``score_smoothing`` set to ``sigma``.

    Every other field, the weights included, is copied as it is.
    """
    payload = read_checkpoint(source)
    if isinstance(sigma, bool) or not 0 <= sigma <= MAX_SCORE_SMOOTHING:
        raise CheckpointError(f"score smoothing must be in [0, {MAX_SCORE_SMOOTHING}] "
                              f"score-map cells, got {sigma!r}")
    _write_payload(Path(target), {**payload, "score_smoothing": float(sigma)})


def _bit_identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.dtype == b.dtype and a.shape == b.shape
            and a.reshape(-1).view(torch.uint8).equal(b.reshape(-1).view(torch.uint8)))


def read_checkpoint(path: Union[str, Path]) -> Dict[str, Any]:
    """Load and validate a checkpoint dict; :class:`CheckpointError` names the file on failure."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with path.open("rb") as file:
            start = file.read(len(_ZIP_MAGIC))
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if start != _ZIP_MAGIC:  # torch.load would fail with e.g. "IndexError: pop from empty list"
        raise CheckpointError(f"cannot read checkpoint {path}: not a PyTorch checkpoint "
                              f"(torch.save writes a zip archive; the file starts {start!r})")
    check_torch_archive(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise CheckpointError(f"cannot read checkpoint {path}: "
                              f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a dense_ood_ros model checkpoint "
                              f"(expected format {CHECKPOINT_FORMAT!r})")
    missing = [key for key in _REQUIRED_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks keys {missing}")
    problem = _field_problem(payload)
    if problem:
        raise CheckpointError(f"checkpoint {path}: {problem}")
    return payload


def check_torch_archive(path: Union[str, Path]) -> None:
    """Raise CheckpointError unless ``path`` is a complete zip archive with intact CRCs.

    ``torch.save``'s files are; ``torch.load`` checks neither completeness nor CRCs.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()
            # torch's reader (miniz) takes the DOS directory attribute to mean a folder and
            # then reads other bytes as the tensor; torch.save never sets it
            folders = [m.filename for m in archive.infolist() if m.external_attr & 0x10]
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError,
            OverflowError) as exc:  # what zipfile raises for truncated or mangled archives
        raise CheckpointError(f"cannot read checkpoint {path}: truncated or corrupt "
                              f"({type(exc).__name__}: {exc})") from exc
    if bad_member is not None:
        raise CheckpointError(f"cannot read checkpoint {path}: corrupt (the CRC of "
                              f"{bad_member!r} does not match its data)")
    if folders:
        raise CheckpointError(f"cannot read checkpoint {path}: corrupt (member "
                              f"{folders[0]!r} is marked as a folder)")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _field_problem(payload: Dict[str, Any]) -> str:
    """Describe the first checkpoint field of the wrong type or shape ('' when all are fine)."""
    names, size = payload["class_names"], payload["input_size"]
    if not isinstance(payload["model"], str):
        return f"'model' must be a model name, got {payload['model']!r}"
    if not _is_int(payload["num_classes"]) or payload["num_classes"] < 1:
        return f"'num_classes' must be a positive integer, got {payload['num_classes']!r}"
    if (not isinstance(names, (list, tuple)) or len(names) != payload["num_classes"]
            or not all(isinstance(name, str) for name in names)):
        return (f"'class_names' must be a list of {payload['num_classes']} names "
                f"('num_classes'), got {names!r}")
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(_is_int(side) and side > 0 for side in size)):
        return f"'input_size' must be [height, width], positive integers, got {size!r}"
    if not isinstance(payload["state_dict"], dict):
        kind = type(payload["state_dict"]).__name__
        return f"'state_dict' must be a dict of tensors, got {kind}"
    smoothing = payload.get("score_smoothing", 0.0)
    if (not isinstance(smoothing, (int, float)) or isinstance(smoothing, bool)
            or not 0 <= smoothing <= MAX_SCORE_SMOOTHING):
        return (f"'score_smoothing' must be a number in [0, {MAX_SCORE_SMOOTHING}] (score-map "
                f"cells), got {smoothing!r}")
    if "label_set" in payload:
        try:
            label_set = LabelSet.from_dict(payload["label_set"], "'label_set'")
        except LabelSetError as exc:
            return str(exc)
        if list(label_set.class_names) != list(names):
            return (f"'label_set' has the classes {list(label_set.class_names)}, "
                    f"'class_names' {list(names)}")
    return ""


def load_model(path: Union[str, Path]) -> Tuple[nn.Module, Dict[str, Any]]:
    """Build the model a checkpoint declares and load its weights (eval mode).

    Returns the model and the checkpoint dict without its state dict.
    """
    payload = read_checkpoint(path)
    try:
        model = build_model(payload["model"], payload["num_classes"], pretrained=False)
        model.load_state_dict(payload.pop("state_dict"))
    except (ValueError, RuntimeError, TypeError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path} does not match "
                              f"model {payload['model']!r}: {exc}") from exc
    return model.eval(), payload
