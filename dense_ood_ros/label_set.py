"""The label set of a model: class names, their colours and the ignore index.

A label set travels inside every checkpoint (``label_set``), the ONNX metadata and TensorRT
engine records, so the node's colouring and its latched ``~/output/label_set`` topic, the
evaluator, the demo legend and the model card all read it from the model file. It comes from
a dataset description (YAML: ``name``, ``classes`` with ``name`` and ``color``,
``ignore_index``; ``training/data/description.py`` reads the rest of such a file). Built-in
descriptions live in ``dense_ood_ros/datasets/`` (``camvid``, ``cityscapes``).

Model files written before label sets were stored hold class names only: when those are
CamVid's, CamVid's label set is assumed (with a logged note); otherwise
:func:`legacy_label_set` raises :class:`LabelSetError` saying how to add one.
"""

import functools
import json
import logging
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Sequence, Tuple, Type, Union

import cv2
import numpy as np

logger = logging.getLogger(__name__)

LABEL_SET_FORMAT = "dense_ood_ros/label_set/v1"
#: Folder of the built-in dataset descriptions (``<name>.yaml``).
BUILTIN_DIR = Path(__file__).resolve().parent / "datasets"
#: Colour of every label value that is not a class (ignore, void).
IGNORE_COLOR = (0, 0, 0)
#: Label images are uint8: classes and the ignore index are label values 0-255.
MAX_LABEL_VALUE = 255


class ShortRepr(reprlib.Repr):
    """reprlib's short repr, which also shows an integer too long for ``str`` (4300 digits)."""

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 256:  # YAML reads 0x<5000 digits> as an int; str() of it fails
            return f"<an integer of {x.bit_length()} bits>"
        return super().repr_int(x, level)


#: Error messages show at most this much of a bad value.
_SHOW = ShortRepr()
_SHOW.maxstring = _SHOW.maxother = 80
_SHOW.maxlevel = 3
#: The upgrade command a note or error about a model file without a label set points to.
UPGRADE_COMMAND = "python -m training.label_set --dataset {dataset} {path}"
_NOTED = set()


class LabelSetError(ValueError):
    """A label set (or the description it comes from) that cannot be used; names the key."""


def _problem(source: str, key: str, problem: str, value: Any) -> LabelSetError:
    return LabelSetError(f"{source}: key '{key}' {problem}, got {_SHOW.repr(value)}")


def _key_text(key: Any) -> str:
    """Return a mapping key as an error message names it: a string as is, else its short repr."""
    return key if isinstance(key, str) else _SHOW.repr(key)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class LabelSet:
    """Class names (index = label value), an RGB colour per class, and the ignore index.

    ``name`` says where the label set comes from (the dataset description's name).
    """

    name: str
    class_names: Tuple[str, ...]
    colors: Tuple[Tuple[int, int, int], ...]
    ignore_index: int

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @functools.cached_property
    def palette(self) -> np.ndarray:
        """RGB uint8 (num_classes + 1, 3): the class colours, then the ignore colour."""
        return np.array([*self.colors, IGNORE_COLOR], dtype=np.uint8)

    @functools.cached_property
    def _lut(self) -> np.ndarray:
        """The palette as an OpenCV lookup table over every uint8 value (non-classes: ignore)."""
        return self.palette[np.minimum(np.arange(256), self.num_classes)].reshape(1, 256, 3)

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """Map an HxW label image to HxWx3 RGB; values that are not classes get IGNORE_COLOR.

        uint8 labels go through a lookup table (``cv2.LUT``: 1.5 ms instead of 12 ms for
        palette indexing at 720x1280 on two cores); other dtypes or shapes index the palette.
        """
        if labels.dtype == np.uint8 and labels.ndim == 2:
            return cv2.LUT(cv2.cvtColor(labels, cv2.COLOR_GRAY2RGB), self._lut)
        return self.palette[np.minimum(np.maximum(labels, 0), self.num_classes)]

    def to_dict(self) -> Dict[str, Any]:
        """Plain values, as checkpoints, ONNX metadata and engine records store them."""
        return {"name": self.name, "class_names": list(self.class_names),
                "colors": [list(color) for color in self.colors],
                "ignore_index": self.ignore_index}

    def to_json(self) -> str:
        """Return the JSON the node publishes on ``~/output/label_set`` (``format`` first)."""
        return json.dumps({"format": LABEL_SET_FORMAT, **self.to_dict()})

    @classmethod
    def from_dict(cls, values: Any, source: str = "label set") -> "LabelSet":
        """Read :meth:`to_dict`'s values back; LabelSetError names the field at fault."""
        if not isinstance(values, dict):
            raise LabelSetError(f"{source}: the label set must be a mapping, "
                                f"got {_SHOW.repr(values)}")
        missing = [k for k in ("name", "class_names", "colors", "ignore_index")
                   if k not in values]
        if missing:
            raise LabelSetError(f"{source}: the label set lacks {missing}")
        names, colors = values["class_names"], values["colors"]
        if not isinstance(names, (list, tuple)) or not isinstance(colors, (list, tuple)):
            raise LabelSetError(f"{source}: label set 'class_names' and 'colors' must be lists")
        if len(names) != len(colors):
            raise LabelSetError(f"{source}: label set has {len(names)} class names but "
                                f"{len(colors)} colors")
        classes = [{"name": name, "color": color} for name, color in zip(names, colors)]
        return parse_label_set({"name": values["name"], "classes": classes,
                                "ignore_index": values["ignore_index"]}, source)

    @classmethod
    def from_json(cls, text: str, source: str = "label set message") -> "LabelSet":
        """Read the node's ``~/output/label_set`` JSON (:meth:`to_json`)."""
        try:
            values = json.loads(text)
        except ValueError as exc:
            raise LabelSetError(f"{source} is not JSON: {exc}") from None
        if not isinstance(values, dict) or values.get("format") != LABEL_SET_FORMAT:
            raise LabelSetError(f"{source} is not a {LABEL_SET_FORMAT} label set")
        return cls.from_dict({k: v for k, v in values.items() if k != "format"}, source)


def _color(source: str, key: str, value: Any) -> Tuple[int, int, int]:
    if (not isinstance(value, (list, tuple)) or len(value) != 3
            or not all(_is_int(c) and 0 <= c <= 255 for c in value)):
        raise _problem(source, key, "must be [r, g, b], integers 0-255", value)
    return int(value[0]), int(value[1]), int(value[2])


def parse_label_set(values: Dict[str, Any], source: str) -> LabelSet:
    """Read and check the label-set keys of a dataset description.

    Keys: ``name`` (a string), ``classes`` (a list of ``{name, color}``, names unique,
    colours ``[r, g, b]``), ``ignore_index`` (0-255, default 255, not a class's value).
    Other keys are left to the caller. LabelSetError names ``source`` and the key.
    """
    name = values.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _problem(source, "name", "must be a non-empty string", name)
    classes = values.get("classes")
    if not isinstance(classes, list) or len(classes) < 2:
        raise _problem(source, "classes", "must be a list of at least 2 classes "
                       "({name: ..., color: [r, g, b]})", classes)
    if len(classes) > MAX_LABEL_VALUE:
        raise _problem(source, "classes", f"must have at most {MAX_LABEL_VALUE} classes "
                       "(labels are uint8, one value is left for ignore)", len(classes))
    names, colors, first_index = [], [], {}
    for index, entry in enumerate(classes):
        key = f"classes[{index}]"
        if not isinstance(entry, dict):
            raise _problem(source, key, "must be a mapping {name: ..., color: [r, g, b]}", entry)
        unknown = sorted(_key_text(k) for k in entry if k not in ("name", "color"))
        if unknown:
            raise LabelSetError(f"{source}: unknown key(s) "
                                f"{', '.join(f'{key}.{k}' for k in unknown)}")
        class_name = entry.get("name")
        if not isinstance(class_name, str) or not class_name.strip():
            raise _problem(source, f"{key}.name", "must be a non-empty string", class_name)
        if class_name in first_index:
            raise _problem(source, f"{key}.name", "duplicates the name of "
                           f"classes[{first_index[class_name]}]", class_name)
        first_index[class_name] = index
        names.append(class_name)
        colors.append(_color(source, f"{key}.color", entry.get("color")))
    ignore_index = values.get("ignore_index", MAX_LABEL_VALUE)
    if not _is_int(ignore_index) or not 0 <= ignore_index <= MAX_LABEL_VALUE:
        raise _problem(source, "ignore_index", "must be an integer 0-255", ignore_index)
    if ignore_index < len(names):
        raise _problem(source, "ignore_index", f"must not be a class's value (0-{len(names) - 1})"
                       f"; it is {names[ignore_index]!r}'s", ignore_index)
    return LabelSet(name.strip(), tuple(names), tuple(colors), int(ignore_index))


def read_yaml(path: Union[str, Path], what: str, error: Type[ValueError]) -> Any:
    """Return what the YAML file ``path`` holds; ``error`` (naming ``what`` and the file) if not.

    Reading, parsing and building the values all end in ``error``: besides YAMLError, PyYAML's
    constructors raise ValueError/TypeError/... for a scalar they cannot build (a date
    2001-13-01, ``!!int abc``, ``!!bool maybe``, an integer of over 4300 digits).
    """
    import yaml  # here: model files carry their label set, and a GPU machine may lack PyYAML

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"cannot read {what} {path}: {exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML: " + " ".join(str(exc).split())) from None
    except (ValueError, TypeError, AttributeError, LookupError) as exc:
        raise error(f"{what} {path} is not valid YAML: a value cannot be read "
                    f"({type(exc).__name__}: {_SHOW.repr(str(exc))})") from None
    except RecursionError as exc:
        raise error(f"cannot read {what} {path}: {exc}") from None


def read_description_yaml(path: Union[str, Path]) -> Dict[str, Any]:
    """Return the mapping a dataset description file holds; LabelSetError names the file."""
    values = read_yaml(path, "dataset description", LabelSetError)
    if not isinstance(values, dict):
        raise LabelSetError(f"dataset description {path} must be a mapping of keys, "
                            f"got {_SHOW.repr(values)}")
    return values


def description_path(name_or_path: Union[str, Path]) -> Path:
    """Return the file of a dataset description: a built-in name (``camvid``) or a YAML path."""
    text = str(name_or_path)
    if text and "/" not in text and not text.endswith((".yaml", ".yml")):
        path = BUILTIN_DIR / f"{text}.yaml"
        if not path.is_file():
            builtin = sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))
            raise LabelSetError(f"no built-in dataset description {text!r} (built in: "
                                f"{builtin}; or give the path of a .yaml file)")
        return path
    return Path(name_or_path)


def file_version(path: Path) -> Tuple[int, int]:
    """(modification time, size) of a file, to re-read it once it changed; (0, 0) if absent."""
    try:
        stat = path.stat()
    except OSError:  # reading it says what is wrong
        return 0, 0
    return stat.st_mtime_ns, stat.st_size


def description_label_set(name_or_path: str) -> LabelSet:
    """Return the label set of a dataset description (a built-in name or a YAML path)."""
    path = description_path(name_or_path)
    return _label_set(path, file_version(path))


@functools.lru_cache(maxsize=64)
def _label_set(path: Path, version: Tuple[int, int]) -> LabelSet:
    return parse_label_set(read_description_yaml(path), f"dataset description {path}")


def legacy_label_set(class_names: Sequence[str], source: str,
                     fix: str = "") -> LabelSet:
    """Return the label set of a model file written before label sets were stored.

    CamVid's (from its built-in description) when the class names are CamVid's, with a
    logged note; otherwise LabelSetError naming ``source``. ``fix`` says how to store one
    (``{dataset}`` is filled in); default: the checkpoint upgrade command for ``source``.
    """
    fix = fix or "store it with: " + UPGRADE_COMMAND.format(dataset="{dataset}", path=source)
    camvid = description_label_set("camvid")
    if tuple(class_names) == camvid.class_names:
        if source not in _NOTED:  # once per file and process
            _NOTED.add(source)
            logger.warning("note: %s stores no label set; its %d class names are CamVid's, so "
                           "CamVid's colours and ignore index %d are assumed (%s)", source,
                           camvid.num_classes, camvid.ignore_index, fix.format(dataset="camvid"))
        return camvid
    raise LabelSetError(
        f"{source} stores no label set (it was written before label sets were) and its "
        f"{len(class_names)} class names are not CamVid's, so its colours and ignore index are "
        f"unknown; {fix.format(dataset='DESCRIPTION.yaml')}")
