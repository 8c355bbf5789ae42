"""File helpers with errors that name the file: images, labels, image folders, checksums.

And :func:`atomic_write`, through which every report and artefact is written: all or nothing.
"""

import hashlib
import json
import os
import secrets
import struct
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: PNG colour types (IHDR) other than greyscale (0), as a label's error message names them.
_PNG_COLOUR_TYPES = {2: "RGB", 3: "palette (indexed colour)", 4: "greyscale + alpha",
                     6: "RGBA"}


def read_rgb(path: Union[str, Path]) -> np.ndarray:
    """Read a colour image as RGB uint8 HxWx3."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read image file: {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _png_header(path: Path) -> Optional[Tuple[int, int, int, int]]:
    """(height, width, bit depth, colour type) from a PNG's IHDR; None when not a PNG.

    OSError when the file cannot be opened.
    """
    with open(path, "rb") as stream:
        head = stream.read(26)
    if len(head) < 26 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    return height, width, depth, colour


def read_label(path: Union[str, Path], size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """Read a single-channel label image (class indices, anomaly values) as uint8 HxW.

    Greyscale PNGs of 8 bits, of 1, 2 or 4 bits (values as stored, e.g. 0/1 for 1 bit, where
    the codec would scale them to 0..255) and of 16 bits with values up to 255 are read; other
    single-channel 8-bit images too. ``size`` (height, width): the size the label must have,
    checked against a PNG's header before decoding. Anything else (missing, unreadable,
    truncated or corrupt, colour, palette or alpha, 16-bit values above 255, floats, another
    size) raises ValueError naming the file.
    """
    try:
        header = _png_header(Path(path))
    except OSError as exc:
        raise ValueError(f"cannot read label file {path}: {exc.strerror or exc}") from None
    if header is not None:
        height, width, depth, colour = header
        if colour in _PNG_COLOUR_TYPES:
            raise ValueError(f"label file {path} is a {_PNG_COLOUR_TYPES[colour]} PNG; "
                             "labels must be single-channel (greyscale) PNGs of class "
                             "indices or anomaly values")
        if size is not None and (height, width) != tuple(size):
            raise ValueError(f"label file {path} is {width}x{height}, "
                             f"its image {size[1]}x{size[0]}")
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None or label.size == 0:
        raise ValueError(f"cannot read label file {path}: not an image, or truncated or corrupt")
    if label.ndim != 2:
        raise ValueError(f"label file {path} must be single-channel, got shape {label.shape}")
    if size is not None and label.shape != tuple(size):
        raise ValueError(f"label file {path} is {label.shape[1]}x{label.shape[0]}, "
                         f"its image {size[1]}x{size[0]}")
    if header is not None and header[3] == 0 and header[2] < 8:
        # libpng expands 1/2/4-bit grey to 8 bits scaled (1 bit: 0/255); undo the scaling.
        return label // (255 // ((1 << header[2]) - 1))
    if label.dtype == np.uint16:
        if label.max() > 255:
            raise ValueError(f"label file {path} is 16-bit with values up to {label.max()}; "
                             "labels must be 0..255")
        return label.astype(np.uint8)
    if label.dtype != np.uint8:
        raise ValueError(f"label file {path} holds {label.dtype} values; labels must be "
                         "8-bit (or 16-bit with values up to 255)")
    return label


def write_rgb(path: Union[str, Path], image: np.ndarray) -> None:
    """Write an RGB uint8 image (format from the suffix) atomically.

    The image is encoded in memory and written by :func:`atomic_write`: ValueError names
    the file for a format that cannot be written, OSError for a folder or disk that refuses
    it.
    """
    path = Path(path)
    try:
        encoded, data = cv2.imencode(path.suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    except cv2.error:  # e.g. an unknown suffix
        encoded = False
    if not encoded:
        raise ValueError(f"cannot write image file {path}: no encoder for "
                         f"{path.suffix or 'a name without a suffix'}")
    with atomic_write(path) as tmp:  # written here, so a failure is an OSError with its errno
        tmp.write_bytes(data.tobytes())


@contextmanager
def atomic_write(path: Union[str, Path]) -> Iterator[Path]:
    """Write a file all or nothing: yield a temporary path beside ``path`` to write to.

    When the ``with`` block ends normally, the temporary file is flushed to disk (fsync) and
    renamed onto ``path`` with ``os.replace`` (atomic within a file system), so ``path`` holds
    either its old content (or nothing) or the whole new file, never part of it. Whatever
    ends the block otherwise, the temporary file is removed and the exception raised again;
    an OSError (of the block, the flush or the rename: a read-only folder, a full disk) as
    one of the same type and errno that names ``path``. The temporary name starts with a dot
    and keeps the suffix, as writers choose the format by it (``.tmp-PID-RANDOM.png``).

    Keep only the writing inside the block: any OSError there is reported as one writing
    ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb") as stream:
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise _naming(exc, f"cannot write {path}") from exc
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # e.g. the folder was made read-only meanwhile; nothing was renamed
            pass


def check_writable_folder(folder: Union[str, Path], what: str = "output") -> Path:
    """Create ``folder`` if needed and check that files can be written into it.

    Run before long work whose results go there; OSError names the folder.
    """
    folder = Path(folder)
    probe = folder / f".write-check-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise _naming(exc, f"{what} folder {folder} is not writable") from exc
    return folder


def _naming(exc: OSError, what: str) -> OSError:
    """Return an OSError of the type and errno of ``exc`` whose message starts with ``what``."""
    reason = exc.strerror or str(exc)
    if exc.errno is None:
        return OSError(f"{what}: {reason}")
    return OSError(exc.errno, f"{what}: {reason}")


class ImageFolderError(FileNotFoundError, ValueError):
    """An image folder is missing or holds no images (caught as either base)."""


def list_images(folder: Union[str, Path], what: str = "image",
                limit: Optional[int] = None) -> List[Path]:
    """List the image files of a folder sorted by name, so choices are reproducible.

    With ``limit``, only the first ``limit`` of them. ``what`` names the folder's role in the
    :class:`ImageFolderError` raised when it is missing or empty (e.g. "calibration" ->
    "calibration folder not found: ...").
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageFolderError(f"{what} folder not found: {folder}")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ImageFolderError(f"no images ({', '.join(IMAGE_SUFFIXES)}) "
                               f"in {what} folder {folder}")
    return paths[:limit]


def find_labels(images: Sequence[Path], folders: Dict[str, Path]
                ) -> Tuple[List[Tuple[Path, Dict[str, Path]]], List[str]]:
    """Pair each image with the label PNG of its stem in each folder (kind -> folder).

    Returns the images that have all their labels, each with kind -> label file, and a
    problem line for every label missing; FileNotFoundError names a folder that is missing.
    """
    for kind, folder in folders.items():
        if not folder.is_dir():
            raise FileNotFoundError(f"{kind} label folder not found: {folder}")
    paired, problems = [], []
    for image in images:
        labels = {kind: folder / f"{image.stem}.png" for kind, folder in folders.items()}
        missing = [f"{image.name}: {kind} label missing ({path})"
                   for kind, path in labels.items() if not path.is_file()]
        problems += missing
        if not missing:
            paired.append((image, labels))
    return paired, problems


def file_sha256(path: Union[str, Path]) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def show_report(out: Optional[Union[str, Path]], report: Dict[str, Any], table: str) -> None:
    """Print a command's Markdown ``table``; with ``--out PATH``, also write PATH.json and PATH.md.

    PATH.json holds ``report``; each file is written atomically (:func:`atomic_write`) and
    the folder is created.
    """
    print(table)
    if not out:
        return
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out.with_name(out.name + ".json")) as path:
        Path(path).write_text(json.dumps(report, indent=2))
    with atomic_write(out.with_name(out.name + ".md")) as path:
        Path(path).write_text(table)
