"""Dataset descriptions: a YAML file per dataset, validated at load with errors naming the key.

Keys (``dense_ood_ros/datasets/camvid.yaml`` and ``cityscapes.yaml`` are the built-in ones)::

    name: mycams                 # the label set's name (stored in every checkpoint)
    title: My cameras            # for reports and benchmark names (default: name)
    layout: folders              # folders | cityscapes
    root: /data/mycams           # default data folder (relative: to the working directory)
    splits:                      # layout folders: per split, folders relative to the root
      train: {images: train/images, labels: train/labels, list: train.txt}   # list optional
    classes:                     # training ids 0, 1, ... in this order
      - {name: road, color: [128, 64, 128]}
    ignore_index: 255            # training id of ignored pixels (losses, metrics)
    label_values:                # stored label value -> class name, training id or "ignore"
      7: road

``splits`` defaults to ``train``, ``val`` and ``test`` with ``<split>/images`` and
``<split>/labels``. ``label_values`` defaults, for layout folders, to stored value = training
id (``ignore_index`` ignored); for layout cityscapes, to the standard labelIds -> trainIds
mapping (:data:`CITYSCAPES_TRAIN_IDS`), which needs the 19 standard
classes. A stored value the mapping does not list is an error naming the label file.
"""

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from dense_ood_ros.label_set import (MAX_LABEL_VALUE, LabelSet, LabelSetError, _SHOW,
                                     _key_text, description_path, file_version,
                                     parse_label_set, read_description_yaml)

LAYOUTS = ("folders", "cityscapes")
KEYS = ("name", "title", "layout", "root", "splits", "classes", "ignore_index", "label_values")
DEFAULT_SPLITS = ("train", "val", "test")
IGNORE = "ignore"
#: Cityscapes labelIds -> trainIds (cityscapesScripts' labels.py; 255: not trained on). The
#: license plate (labelId -1) is not in the labelIds images.
CITYSCAPES_TRAIN_IDS = {
    0: 255, 1: 255, 2: 255, 3: 255, 4: 255, 5: 255, 6: 255, 7: 0, 8: 1, 9: 255, 10: 255,
    11: 2, 12: 3, 13: 4, 14: 255, 15: 255, 16: 255, 17: 5, 18: 255, 19: 6, 20: 7, 21: 8,
    22: 9, 23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 29: 255, 30: 255, 31: 16, 32: 17,
    33: 18,
}


class DatasetDescriptionError(LabelSetError):
    """A dataset description that cannot be used; the message names the file and the key."""


class DatasetError(ValueError):
    """Data that does not match its description (missing files, label values); names them."""


@dataclass(frozen=True)
class SplitFolders:
    """Where a split of a plain-folder dataset lives, relative to the data root."""

    images: str
    labels: str
    list: Optional[str] = None  # one sample per line: a stem or file name (first token)


@dataclass(frozen=True)
class DatasetDescription:
    """A validated dataset description."""

    source: Path
    title: str
    layout: str
    root: Optional[str]
    label_set: LabelSet
    splits: Dict[str, SplitFolders]  # layout folders; cityscapes: its leftImg8bit/<split>/
    label_values: Dict[int, int]  # stored value -> training id (ignore_index: ignored)

    @property
    def name(self) -> str:
        return self.label_set.name

    @functools.cached_property
    def _lookup(self) -> Tuple[np.ndarray, np.ndarray, int]:
        lut = np.zeros(MAX_LABEL_VALUE + 1, np.uint8)
        unlisted = np.ones(MAX_LABEL_VALUE + 1, bool)
        for stored, train_id in self.label_values.items():
            lut[stored], unlisted[stored] = train_id, False
        return lut, unlisted, max(self.label_values)

    def train_ids(self, stored: np.ndarray, path: Union[str, Path]) -> np.ndarray:
        """Map a stored uint8 label image to training ids; DatasetError names unlisted values."""
        lut, unlisted, highest = self._lookup
        if stored.size and (stored.max() > highest or unlisted[:highest + 1].any()):
            bad = np.unique(stored[unlisted[stored]])
            if bad.size:
                raise DatasetError(f"label file {path} holds values {bad.tolist()[:10]} that "
                                   f"dataset description {self.source} does not map "
                                   f"(key 'label_values'; listed: {sorted(self.label_values)})")
        return lut[stored]

    def resolve_root(self, root: Union[str, Path, None], key: str = "data.root") -> Path:
        """Return the data folder: ``root`` if given, else the description's (or an error)."""
        chosen = root or self.root
        if not chosen:
            raise DatasetDescriptionError(f"no data folder for dataset {self.name!r}: set "
                                          f"'{key}' (dataset description {self.source} has no "
                                          "'root')")
        return Path(chosen)


def _error(source: str, key: str, problem: str, value: Any) -> DatasetDescriptionError:
    return DatasetDescriptionError(f"{source}: key '{key}' {problem}, got {_SHOW.repr(value)}")


def _text(source: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _error(source, key, "must be a non-empty string", value)
    return value


def _splits(source: str, values: Any, layout: str) -> Dict[str, SplitFolders]:
    if layout == "cityscapes":
        if values is not None:
            raise _error(source, "splits", "is for layout folders (layout cityscapes finds its "
                         "splits as leftImg8bit/<split>/)", values)
        return {}
    if values is None:
        return {split: SplitFolders(f"{split}/images", f"{split}/labels")
                for split in DEFAULT_SPLITS}
    if not isinstance(values, dict) or not values:
        raise _error(source, "splits", "must be a mapping of split names to "
                     "{images: ..., labels: ..., list: ...}", values)
    splits = {}
    for split, folders in values.items():
        key = f"splits.{_key_text(split)}"
        if not isinstance(split, str) or not isinstance(folders, dict):
            raise _error(source, key, "must be {images: FOLDER, labels: FOLDER, list: FILE}",
                         folders)
        unknown = sorted(_key_text(k) for k in folders
                         if k not in ("images", "labels", "list"))
        if unknown:
            raise DatasetDescriptionError(f"{source}: unknown key(s) "
                                          f"{', '.join(f'{key}.{k}' for k in unknown)}")
        listing = folders.get("list")
        splits[split] = SplitFolders(
            _text(source, f"{key}.images", folders.get("images")),
            _text(source, f"{key}.labels", folders.get("labels")),
            None if listing is None else _text(source, f"{key}.list", listing))
    return splits


def _label_values(source: str, values: Any, layout: str,
                  label_set: LabelSet) -> Dict[int, int]:
    """Return stored value -> training id, checked: values 0-255, targets classes or ignore."""
    ignore, count = label_set.ignore_index, label_set.num_classes
    if values is None:
        if layout == "cityscapes":
            if count != 19:
                raise _error(source, "classes", "must list the 19 standard Cityscapes classes "
                             "(layout cityscapes without 'label_values' maps labelIds to the "
                             "standard 19 trainIds)", f"{count} classes")
            return {label_id: ignore if train_id == 255 else train_id
                    for label_id, train_id in CITYSCAPES_TRAIN_IDS.items()}
        return {**{value: value for value in range(count)}, ignore: ignore}
    if not isinstance(values, dict) or not values:
        raise _error(source, "label_values", "must be a mapping of stored label values to "
                     "class names, training ids or 'ignore'", values)
    index = {name: i for i, name in enumerate(label_set.class_names)}
    mapping = {}
    for stored, target in values.items():
        key = f"label_values.{_key_text(stored)}"
        if isinstance(stored, bool) or not isinstance(stored, int) or not 0 <= stored <= 255:
            raise _error(source, key, "is not a label value: stored values are integers 0-255",
                         stored)
        if target == IGNORE:
            mapping[stored] = ignore
        elif isinstance(target, str):
            if target not in index:
                raise _error(source, key, f"maps to an unknown class (classes: "
                             f"{list(label_set.class_names)}, or '{IGNORE}')", target)
            mapping[stored] = index[target]
        elif isinstance(target, int) and not isinstance(target, bool) and (
                0 <= target < count or target == ignore):
            mapping[stored] = target
        else:
            raise _error(source, key, f"maps outside the label set: a class name, a training "
                         f"id 0-{count - 1}, the ignore index {ignore} or '{IGNORE}'", target)
    unmapped = [name for name, i in index.items() if i not in mapping.values()]
    if unmapped:
        raise _error(source, "label_values", f"maps no stored value to the class(es) "
                     f"{unmapped}", values)
    return mapping


def parse_description(values: Dict[str, Any], source: Union[str, Path]) -> DatasetDescription:
    """Check the keys of a description (a YAML mapping) read from ``source``."""
    where = f"dataset description {source}"
    unknown = sorted(_key_text(k) for k in values if k not in KEYS)
    if unknown:
        raise DatasetDescriptionError(f"{where}: unknown key(s) {', '.join(unknown)}; "
                                      f"known: {list(KEYS)}")
    try:
        label_set = parse_label_set(values, where)
    except DatasetDescriptionError:
        raise
    except LabelSetError as exc:
        raise DatasetDescriptionError(str(exc)) from None
    layout = values.get("layout", "folders")
    if layout not in LAYOUTS:
        raise _error(where, "layout", f"must be one of {list(LAYOUTS)}", layout)
    root = values.get("root")
    title = values.get("title", label_set.name)
    return DatasetDescription(
        source=Path(source), title=_text(where, "title", title), layout=layout,
        root=None if root is None else _text(where, "root", root), label_set=label_set,
        splits=_splits(where, values.get("splits"), layout),
        label_values=_label_values(where, values.get("label_values"), layout, label_set))


def load_description(name_or_path: str) -> DatasetDescription:
    """Read a dataset description: a built-in name (``camvid``, ``cityscapes``) or a YAML path.

    Any problem is a :class:`DatasetDescriptionError` (a ValueError) naming the file and key.
    A file is read again once it changed.
    """
    try:
        path = description_path(name_or_path)
        return _load(path, file_version(path))
    except DatasetDescriptionError:
        raise
    except LabelSetError as exc:
        raise DatasetDescriptionError(str(exc)) from None


@functools.lru_cache(maxsize=64)
def _load(path: Path, version: Tuple[int, int]) -> DatasetDescription:
    return parse_description(read_description_yaml(path), path)
