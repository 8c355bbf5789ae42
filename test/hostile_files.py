"""Hostile files and file systems of issue 17, shared by the file fuzz and fault injection tests.

Builders of files (label PNGs at any bit depth and colour type, tiny ONNX files with chosen
metadata) and of failing file systems (a full disk: the file size limit, or one write that
stops halfway with ENOSPC), and a finder of temporary files left behind.
"""

import errno
import json
import os
import resource
import signal
import struct
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List

import numpy as np

from dense_ood_ros.label_set import description_label_set
from dense_ood_ros.onnx_graph import ONNX_FORMAT

CAMVID_CLASSES = description_label_set("camvid").class_names

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The metadata dense-ood-export writes, valid, for a 32x48 graph.
VALID_ONNX_METADATA = {
    "format": ONNX_FORMAT, "class_names": json.dumps(list(CAMVID_CLASSES)),
    "score_names": '["jsd"]', "input_size": "[32, 48]", "dynamic_size": "false", "opset": "17",
    "model": "efficientnet_lite0_swiftnet", "checkpoint_sha256": "ab" * 32}


def png_chunk(chunk_type: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + chunk_type + data
            + struct.pack(">I", zlib.crc32(chunk_type + data)))


def png_file(pixels: np.ndarray, depth: int, colour: int, chunks=()) -> bytes:
    """Encode a PNG of ``pixels`` at bit ``depth`` and PNG ``colour`` type.

    Greyscale (colour 0) at 1/2/4/8/16 bits, RGB (2), palette (3), grey + alpha (4) or
    RGBA (6) at 8 bits; ``chunks`` go before the image data.
    """
    height, width = pixels.shape[:2]
    if colour == 0 and depth < 8:
        per_byte = 8 // depth
        padded = np.zeros((height, -(-width // per_byte) * per_byte), np.uint8)
        padded[:, :width] = pixels
        groups = padded.reshape(height, -1, per_byte).astype(np.uint16)
        shifts = np.array([8 - depth * (k + 1) for k in range(per_byte)], np.uint16)
        rows = (groups << shifts).sum(axis=2).astype(np.uint8)
    elif depth == 16:
        rows = pixels.astype(">u2").view(np.uint8).reshape(height, -1)
    else:
        rows = pixels.reshape(height, -1).astype(np.uint8)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    palette = [png_chunk(b"PLTE", bytes(range(256)) * 3)] if colour == 3 else []
    return (PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + b"".join([*palette, *chunks])
            + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))


def tiny_onnx(path: Path, metadata: dict) -> None:
    """Write a one-node ONNX file (images -> labels) with ``metadata`` as its properties."""
    import onnx
    from onnx import TensorProto, helper

    tensor = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["labels"])], "g",
                              [tensor("images", TensorProto.UINT8, [1, 2, 2, 3])],
                              [tensor("labels", TensorProto.UINT8, [1, 2, 2, 3])])
    model = helper.make_model(graph)
    helper.set_model_props(model, metadata)
    onnx.save(model, str(path))


def leftovers(folder: Path) -> List[str]:
    """Temporary files of :func:`dense_ood_ros.io.atomic_write` left anywhere under ``folder``."""
    return sorted(str(path) for path in Path(folder).rglob("*") if ".tmp-" in path.name)


@contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Make every write past ``limit`` bytes of any file fail, as writes to a full disk do.

    ``RLIMIT_FSIZE`` (with SIGXFSZ ignored, the write fails with EFBIG) stops every writer
    midway, those in C (libpng, zlib, protobuf) as much as Python's; it binds root too. Only
    around the code under test: pytest's own capture files must not grow meanwhile.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def fail_midway(monkeypatch, final_name: str) -> None:
    """Make the write of the temporary file behind ``final_name`` stop halfway with ENOSPC.

    The writers of the package's reports are covered: ``Path.write_text`` and
    ``write_bytes``, ``numpy.savez_compressed`` and matplotlib's ``Figure.savefig``; each
    writes the first half of its bytes (a few bytes for the last two) and raises
    ``OSError(ENOSPC)``, as a disk that fills up during the write does.
    """
    import matplotlib.figure

    final = Path(final_name)

    def targeted(path) -> bool:  # atomic_write's names: .STEM.tmp-PID-RANDOM.SUFFIX
        name = Path(getattr(path, "name", path)).name
        return name.startswith(f".{final.stem}.tmp-") and name.endswith(final.suffix)

    def no_space():
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def half(path, data: bytes):
        with open(path, "wb") as stream:
            stream.write(data[:max(1, len(data) // 2)])
        raise no_space()

    real_text, real_bytes = Path.write_text, Path.write_bytes
    real_savez, real_savefig = np.savez_compressed, matplotlib.figure.Figure.savefig

    def write_text(self, data, *args, **kwargs):
        if targeted(self):
            half(self, data.encode())
        return real_text(self, data, *args, **kwargs)

    def write_bytes(self, data):
        if targeted(self):
            half(self, bytes(data))
        return real_bytes(self, data)

    def savez_compressed(file, *args, **kwargs):
        if targeted(file):
            file.write(b"PK\x03\x04")
            raise no_space()
        return real_savez(file, *args, **kwargs)

    def savefig(self, fname, *args, **kwargs):
        if targeted(fname):
            half(fname, PNG_SIGNATURE * 2)
        return real_savefig(self, fname, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    monkeypatch.setattr(np, "savez_compressed", savez_compressed)
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
