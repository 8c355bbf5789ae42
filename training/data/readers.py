"""The two built-in dataset readers: plain folders and the Cityscapes layout.

Both list a split's (image, label) pairs sorted by name, checked before any is read: an image
without a label, a label without an image, a listed sample missing, or two images of one
stem, is a :class:`~training.data.description.DatasetError` naming the files.

- **folders**: ``<root>/<images>/<stem>.<png|jpg|webp|...>`` with ``<root>/<labels>/<stem>.png``
  (folders per split from the description's ``splits``); an optional list file selects the
  split's samples, one per line (a stem or file name; the first token counts, so CamVid's
  "image label" lines work too). A sample's group (the horizon estimate of the pasting
  benchmark is per group) is its stem up to the first ``_`` (CamVid: the sequence).
- **cityscapes**: ``<root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png``
  with ``<root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png``; the group is
  the city.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Tuple, Union

from dense_ood_ros.io import IMAGE_SUFFIXES
from training.data.description import DatasetDescription, DatasetError

CITYSCAPES_IMAGE_SUFFIX = "_leftImg8bit"
CITYSCAPES_LABEL_SUFFIX = "_gtFine_labelIds"
#: Error messages list this many file names, then how many more.
SHOW_FILES = 10


@dataclass(frozen=True)
class Sample:
    """One labelled frame: its name, image and label files, and its group."""

    name: str
    image: Path
    label: Path
    group: str


def _names(paths: Iterable[Union[str, Path]]) -> str:
    paths = [str(p) for p in paths]
    shown = ", ".join(paths[:SHOW_FILES])
    return shown + (f" and {len(paths) - SHOW_FILES} more" if len(paths) > SHOW_FILES else "")


def _by_stem(files: Iterable[Path], suffix: str, where: str) -> Dict[str, Path]:
    """Map name (stem without ``suffix``) -> file; two files of one name are an error."""
    found: Dict[str, Path] = {}
    for path in sorted(files):
        name = path.stem[:len(path.stem) - len(suffix)] if suffix else path.stem
        if name in found:
            raise DatasetError(f"{where}: two files for sample {name!r}: {found[name]} and "
                               f"{path}")
        found[name] = path
    return found


def _pair(images: Dict[str, Path], labels: Dict[str, Path], where: str, image_dir: Path,
          label_dir: Path) -> List[str]:
    """Names with both files; DatasetError naming those with one only."""
    no_label = [images[n] for n in images if n not in labels]
    no_image = [labels[n] for n in labels if n not in images]
    problems = []
    if no_label:
        problems.append(f"{len(no_label)} image(s) without a label in {label_dir}: "
                        f"{_names(p.name for p in no_label)}")
    if no_image:
        problems.append(f"{len(no_image)} label(s) without an image in {image_dir}: "
                        f"{_names(p.name for p in no_image)}")
    if problems:
        raise DatasetError(f"{where}: " + "; ".join(problems))
    return sorted(images)


def _folder(path: Path, key: str, where: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{where}: folder not found: {path} ({key})")
    return path


def _files(folder: Path, suffixes: Tuple[str, ...]) -> List[Path]:
    return [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes]


def _group(stem: str) -> str:
    return stem.split("_")[0]


def folder_samples(description: DatasetDescription, root: Path, split: str) -> List[Sample]:
    """Return the samples of a plain-folder split, sorted by stem."""
    where = f"dataset {description.name!r} split {split!r} (root {root})"
    if split not in description.splits:
        raise DatasetError(f"{where}: dataset description {description.source} has no split "
                           f"{split!r} (key 'splits'; it has {sorted(description.splits)})")
    folders = description.splits[split]
    image_dir = _folder(root / folders.images, f"splits.{split}.images", where)
    label_dir = _folder(root / folders.labels, f"splits.{split}.labels", where)
    images = _by_stem(_files(image_dir, IMAGE_SUFFIXES), "", where)
    labels = _by_stem(_files(label_dir, (".png",)), "", where)
    if folders.list is None:
        names = _pair(images, labels, where, image_dir, label_dir)
    else:
        names = _listed(root / folders.list, f"splits.{split}.list", where)
        no_image = [n for n in names if n not in images]
        no_label = [n for n in names if n not in labels]
        if no_image or no_label:
            raise DatasetError(
                f"{where}: list {root / folders.list} names samples without an image in "
                f"{image_dir} ({_names(no_image) or 'none'}) or without a label in {label_dir} "
                f"({_names(no_label) or 'none'})")
    return [Sample(name, images[name], labels[name], _group(name)) for name in names]


def _listed(path: Path, key: str, where: str) -> List[str]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise DatasetError(f"{where}: cannot read list {path} ({key}): "
                           f"{exc.strerror or exc}") from None
    names = [Path(line.split()[0]).stem for line in lines if line.strip()]
    if not names:
        raise DatasetError(f"{where}: list {path} ({key}) names no samples")
    return names


def cityscapes_samples(description: DatasetDescription, root: Path,
                       split: str) -> List[Sample]:
    """Return the samples of a Cityscapes-layout split, sorted by name (city first)."""
    where = f"dataset {description.name!r} split {split!r} (root {root})"
    image_split = _folder(root / "leftImg8bit" / split, "the Cityscapes layout", where)
    label_split = _folder(root / "gtFine" / split, "the Cityscapes layout", where)
    cities = sorted({p.name for p in image_split.iterdir() if p.is_dir()}
                    | {p.name for p in label_split.iterdir() if p.is_dir()})
    images: Dict[str, Path] = {}
    labels: Dict[str, Path] = {}
    for city in cities:
        image_dir, label_dir = image_split / city, label_split / city
        if image_dir.is_dir():
            images.update(_by_stem((p for p in _files(image_dir, IMAGE_SUFFIXES)
                                    if p.stem.endswith(CITYSCAPES_IMAGE_SUFFIX)),
                                   CITYSCAPES_IMAGE_SUFFIX, where))
        if label_dir.is_dir():
            labels.update(_by_stem((p for p in _files(label_dir, (".png",))
                                    if p.stem.endswith(CITYSCAPES_LABEL_SUFFIX)),
                                   CITYSCAPES_LABEL_SUFFIX, where))
    names = _pair(images, labels, where, image_split, label_split)
    if not names:
        raise DatasetError(f"{where}: no *{CITYSCAPES_IMAGE_SUFFIX} images in {image_split}")
    return [Sample(name, images[name], labels[name], images[name].parent.name)
            for name in names]


READERS = {"folders": folder_samples, "cityscapes": cityscapes_samples}


def list_samples(description: DatasetDescription, root: Union[str, Path],
                 split: str) -> List[Sample]:
    """Return the checked samples of a split, sorted by name (DatasetError: what is missing)."""
    samples = READERS[description.layout](description, Path(root), split)
    if not samples:
        raise DatasetError(f"dataset {description.name!r} split {split!r} (root {root}) has "
                           "no samples")
    return samples
