"""Hostile camera messages of issue 17, shared by the conversion, fuzz and DDS tests.

Each builder returns bytes (a CompressedImage payload) or the fields of an Image message,
so the same attack is sent to the conversion functions and, over DDS, to the live node.
"""

import struct
import zlib
from typing import Dict, Tuple

import cv2
import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The kinds of :func:`corrupt_jpegs`.
CORRUPT_JPEG_KINDS = ("truncated", "truncated, EOI appended", "stray marker")


def smooth_rgb(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """Return a smooth random RGB image (JPEG-friendly)."""
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (9, 9), 3)


def png_bytes(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))[1].tobytes()


def jpeg_bytes(rgb: np.ndarray, quality: int = 90) -> bytes:
    return cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]),
                        [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def png_chunk(chunk_type: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + chunk_type + data
            + struct.pack(">I", zlib.crc32(chunk_type + data)))


def png_claiming(height: int, width: int) -> bytes:
    """Return a tiny, well-formed PNG (correct CRCs) whose IHDR declares ``height`` x ``width``."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (PNG_SIGNATURE + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + png_chunk(b"IEND", b""))


def sof_offset(jpeg: bytes) -> int:
    """Return the byte offset of a baseline JPEG's SOF0 marker."""
    offset = jpeg.find(b"\xff\xc0")
    assert offset > 0, "no SOF0 marker"
    return offset


def jpeg_claiming(jpeg: bytes, height: int, width: int) -> bytes:
    """Return ``jpeg`` with its SOF0 frame header patched to declare ``height`` x ``width``."""
    patched = bytearray(jpeg)
    offset = sof_offset(jpeg)
    patched[offset + 5:offset + 9] = struct.pack(">HH", height, width)
    return bytes(patched)


def corrupt_jpegs(jpeg: bytes) -> Dict[str, bytes]:
    """Return corrupt versions of ``jpeg`` that libjpeg decodes to a partly grey frame.

    Each is cut or spoilt in the middle of its entropy-coded data (after the SOS segment).
    """
    scan = jpeg.find(b"\xff\xda")
    assert scan > 0, "no SOS marker"
    middle = scan + (len(jpeg) - scan) // 2
    return dict(zip(CORRUPT_JPEG_KINDS, [
        jpeg[:middle],  # no EOI marker
        jpeg[:middle] + b"\xff\xd9",  # premature end of data segment
        jpeg[:middle] + b"\xff\xd5" + jpeg[middle:],  # RST5 out of place
    ]))


def empty_raw_images() -> Dict[str, Tuple[int, int, str, int]]:
    """Return (height, width, encoding, step) of Image messages with no pixels and no data."""
    return {f"{encoding} {name}": (height, width, encoding, step)
            for encoding, channels in (("bgr8", 3), ("mono8", 1), ("rgb8", 3))
            for name, height, width, step in (("height 0", 0, 8, 8 * channels),
                                              ("width 0", 8, 0, 0))}
