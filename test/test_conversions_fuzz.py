"""Property tests (hypothesis) of the camera message conversions: outside data.

Random Image messages (encodings supported, unsupported and garbage, sizes from 0 to 2**32-1
with tiny data, any step, truncated or extra data, either endianness, several buffer types)
and CompressedImage messages (random bytes, real JPEG and PNG images truncated, with bytes
flipped, with patched headers claiming huge sizes, with inserted chunks and segments).

The property: :func:`message_to_rgb` returns the correct RGB array or raises ValueError with a
message; never any other exception, never an allocation in proportion to a size the message
merely claims (tracemalloc peak per message and the process's peak RSS), and never slow.

Profiles: ``ci`` (the default: a few hundred examples per test, derandomised, so every run
tries the same cases) and ``long`` (10,000 examples per test, a new random seed each run),
chosen by ``DENSE_OOD_FUZZ_PROFILE=long`` (``scripts/fuzz.sh``).
"""

import array
import os
import resource
import struct
import time
import tracemalloc
import zlib
from collections import Counter
from types import SimpleNamespace

import cv2
import hostile_images
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dense_ood_ros.ros.conversions import CAMERA_ENCODINGS, image_header, message_to_rgb

_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=300, derandomize=True, **_COMMON)
settings.register_profile("long", max_examples=10_000, derandomize=False, **_COMMON)
PROFILE = os.environ.get("DENSE_OOD_FUZZ_PROFILE", "ci")
FUZZ_SETTINGS = settings.get_profile(PROFILE)

#: The pixel budget the messages are converted under (a claimed size beyond it must cost
#: nothing; one within it may be decoded).
MAX_PIXELS = 1 << 20
#: Python/numpy bytes one conversion may allocate: the RGB result and one intermediate of a
#: budget-sized image, a copy of the message data, and some slack.
MEMORY_BOUND_BYTES = 2 * 3 * MAX_PIXELS + (1 << 20)
#: Process peak RSS growth allowed over a whole test (a claimed-size allocation is GBs).
RSS_GROWTH_BOUND_BYTES = 256 << 20
#: Seconds one conversion may take on a busy 2-core machine (a decoded bomb takes many).
TIME_BOUND_S = 2.0

#: Tried encodings: the camera ones, others the module knows, others drivers publish, garbage.
ENCODINGS = [*CAMERA_ENCODINGS, "32FC1", "nv12", "bayer_rggb16", "8UC3", "RGB8", "rgb8 ", "",
             "\x00", "jpeg"]
#: encoding -> bytes per pixel (1 for the unknown ones: the step is then arbitrary anyway).
PIXEL_BYTES = {"rgb8": 3, "bgr8": 3, "mono8": 1, "32FC1": 4, "rgba8": 4, "bgra8": 4,
               "mono16": 2, "16UC1": 2, "yuv422": 2, "uyvy": 2, "yuv422_yuy2": 2, "yuyv": 2,
               "bayer_rggb8": 1, "bayer_bggr8": 1, "bayer_gbrg8": 1, "bayer_grbg8": 1,
               "8UC3": 3}
SIDES = st.one_of(st.integers(0, 48), st.sampled_from([2**16, 2**31 - 1, 2**32 - 1]),
                  st.integers(0, 2**32 - 1))
COMPRESSED_FORMATS = ["jpeg", "png", "jpg", "JPEG", "rgb8; jpeg compressed bgr8",
                      "bgr8; png compressed", "tiff", "", "jpeg png"]

_RGB = hostile_images.smooth_rgb(48, 64, seed=1)
_BGR = np.ascontiguousarray(_RGB[..., ::-1])
_GREY_RGB = np.repeat(_RGB[..., :1], 3, axis=2)
#: Real images the compressed messages are made from: name -> (bytes, the RGB they decode
#: to, whether exactly (PNG) or within JPEG's loss).
ORIGINALS = {
    "jpeg": (hostile_images.jpeg_bytes(_RGB), _RGB, False),
    "jpeg progressive": (cv2.imencode(".jpg", _BGR, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1]
                         .tobytes(), _RGB, False),
    "jpeg grey": (cv2.imencode(".jpg", _RGB[..., 0])[1].tobytes(), _GREY_RGB, False),
    "png": (hostile_images.png_bytes(_RGB), _RGB, True),
    "png grey": (cv2.imencode(".png", _RGB[..., 0])[1].tobytes(), _GREY_RGB, True),
    "png 16 bit": (cv2.imencode(".png", _BGR.astype(np.uint16) * 257)[1].tobytes(), _RGB, True),
}

outcomes: Counter = Counter()


@pytest.fixture(scope="module", autouse=True)
def memory_watch():
    """Check that the process's peak RSS did not grow much over the module's tests."""
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    yield
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    summary = ", ".join(f"{key}: {count}" for key, count in sorted(outcomes.items()))
    print(f"\nfuzz profile {PROFILE}: {sum(outcomes.values())} messages converted ({summary}); "
          f"peak RSS growth {rss_growth / 2**20:.0f} MiB")
    assert rss_growth < RSS_GROWTH_BOUND_BYTES


def convert(kind: str, msg) -> "np.ndarray | None":
    """Convert ``msg``; check the property; return the RGB array, or None for a ValueError."""
    tracemalloc.start()  # only around the conversion: tracing hypothesis too is slow
    started = time.perf_counter()
    try:
        rgb = message_to_rgb(msg, MAX_PIXELS)
    except ValueError as exc:
        assert str(exc), "a ValueError without a message"
        rgb = None
    finally:
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak <= MEMORY_BOUND_BYTES + 2 * len(memoryview(msg.data).cast("B")), \
        f"{peak} bytes allocated"
    assert elapsed < TIME_BOUND_S, f"{elapsed:.2f} s"
    if rgb is not None:
        assert isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8
        assert rgb.ndim == 3 and rgb.shape[2] == 3
        assert 0 < rgb.shape[0] * rgb.shape[1] <= MAX_PIXELS
    outcomes[f"{kind} {'accepted' if rgb is not None else 'rejected'}"] += 1
    return rgb


def _container(data: bytes, kind: str):
    if kind == "bytearray":
        return bytearray(data)
    if kind == "array":
        return array.array("B", data)
    if kind == "numpy":
        return np.frombuffer(data, np.uint8)
    return data


@st.composite
def image_messages(draw):
    """Return (Image-like message, expected RGB array or None when it must be rejected).

    A well-formed camera image of up to 48 x 48 pixels, then none, one or two of its fields
    spoilt: the encoding, a side (up to 2**32-1, the data staying small), the step, the data
    length.
    """
    encoding = draw(st.sampled_from(list(CAMERA_ENCODINGS)))
    height, width = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    step = width * PIXEL_BYTES[encoding] + draw(st.sampled_from([0, 0, 1, 3, 64]))
    length = step * height
    for field in draw(st.lists(st.sampled_from(["encoding", "height", "width", "step",
                                                "length"]), max_size=2)):
        if field == "encoding":
            encoding = draw(st.one_of(st.sampled_from(ENCODINGS), st.text(max_size=10)))
        elif field in ("height", "width"):
            side = draw(SIDES)
            height, width = (side, width) if field == "height" else (height, side)
        elif field == "step":
            step = draw(st.one_of(st.integers(0, 256), st.integers(0, 2**32 - 1)))
        else:
            length = draw(st.one_of(st.integers(0, 64), st.integers(1, 8).map(
                lambda extra: length + extra), st.integers(1, 8).map(
                lambda cut: max(length - cut, 0))))
    row_bytes = width * PIXEL_BYTES.get(encoding, 1)
    size = step * height
    data = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(
        0, 256, length, dtype=np.uint8).tobytes()
    msg = SimpleNamespace(encoding=encoding, height=height, width=width, step=step,
                          is_bigendian=draw(st.integers(0, 1)),
                          data=_container(data, draw(st.sampled_from(
                              ["bytes", "bytearray", "array", "numpy"]))))
    valid = (encoding in CAMERA_ENCODINGS and height > 0 and width > 0
             and height * width <= MAX_PIXELS and step >= row_bytes and length == size
             and not (CAMERA_ENCODINGS.get(encoding, CAMERA_ENCODINGS["rgb8"]).even_width
                      and width % 2))
    expected = None
    if valid:
        rows = np.frombuffer(data, np.uint8).reshape(height, step)[:, :row_bytes]
        pixels = rows.reshape(height, width, -1)
        # byte orders are checked exactly; interpolated encodings (Bayer, 4:2:2, 16-bit
        # scaling) by shape here and against reference frames in test_ros_conversions
        expected = {"rgb8": pixels, "bgr8": pixels[..., ::-1], "rgba8": pixels[..., :3],
                    "bgra8": pixels[..., 2::-1],
                    "mono8": np.repeat(pixels, 3, axis=2)}.get(encoding, (height, width, 3))
    return msg, expected


@given(image_messages())
@FUZZ_SETTINGS
def test_image_messages_convert_exactly_or_raise_value_error(case):
    msg, expected = case
    rgb = convert("image", msg)
    if expected is None:
        assert rgb is None, "an invalid message was accepted"
    else:
        assert rgb is not None, "a valid message was rejected"
        if isinstance(expected, tuple):
            assert rgb.shape == expected and rgb.dtype == np.uint8
        else:
            np.testing.assert_array_equal(rgb, expected)


def _png_with_ihdr(png: bytes, ihdr: bytes, fix_crc: bool) -> bytes:
    crc = zlib.crc32(b"IHDR" + ihdr) if fix_crc else struct.unpack_from(">I", png, 29)[0]
    return png[:16] + ihdr + struct.pack(">I", crc) + png[33:]


@st.composite
def compressed_messages(draw):
    """Return (CompressedImage-like message, the original's name when unmodified, else None)."""
    name = draw(st.sampled_from(sorted(ORIGINALS)))
    original = ORIGINALS[name][0]
    mutation = draw(st.sampled_from([
        "none", "random", "signature + random", "truncated", "truncated + EOI", "flipped",
        "jpeg size", "png header", "inserted"]))
    if mutation == "none":
        data = original
    elif mutation == "random":
        data = draw(st.binary(max_size=512))
    elif mutation == "signature + random":
        data = draw(st.sampled_from([b"\xff\xd8\xff", hostile_images.PNG_SIGNATURE])) + draw(
            st.binary(max_size=512))
    elif mutation.startswith("truncated"):
        data = original[:draw(st.integers(0, len(original)))]
        if mutation.endswith("EOI"):
            data += b"\xff\xd9"
    elif mutation == "flipped":
        flipped = bytearray(original)
        for _ in range(draw(st.integers(1, 8))):
            flipped[draw(st.integers(0, len(original) - 1))] = draw(st.integers(0, 255))
        data = bytes(flipped)
    elif mutation == "jpeg size" and name.startswith("jpeg"):
        sof = min(original.find(marker) for marker in (b"\xff\xc0", b"\xff\xc2")
                  if original.find(marker) > 0)
        data = (original[:sof + 5] + struct.pack(">HH", draw(st.integers(0, 65535)),
                                                 draw(st.integers(0, 65535)))
                + original[sof + 9:])
    elif mutation == "png header" and name.startswith("png"):
        width, height = draw(SIDES), draw(SIDES)
        ihdr = struct.pack(">II", width, height) + draw(st.one_of(
            st.just(original[24:29]), st.binary(min_size=5, max_size=5)))
        data = _png_with_ihdr(original, ihdr, draw(st.booleans()))
    elif mutation == "inserted":
        at = draw(st.integers(2, len(original)))
        if name.startswith("png"):
            chunk_type = draw(st.sampled_from([b"tEXt", b"IDAT", b"IEND", b"IHDR", b"zzzz"]))
            payload = draw(st.binary(max_size=64))
            insert = (hostile_images.png_chunk(chunk_type, payload) if draw(st.booleans())
                      else struct.pack(">I", draw(st.integers(0, 2**32 - 1))) + chunk_type)
        else:
            marker = draw(st.integers(0, 255))
            insert = bytes([0xFF, marker]) + struct.pack(">H", draw(st.integers(0, 65535)))
        data = original[:at] + insert + original[at:]
    else:
        data = original
        mutation = "none"
    image_format = draw(st.one_of(st.sampled_from(["jpeg", "png"]),
                                  st.sampled_from(COMPRESSED_FORMATS), st.text(max_size=12)))
    msg = SimpleNamespace(format=image_format,
                          data=_container(data, draw(st.sampled_from(["bytes", "array",
                                                                      "numpy"]))))
    return msg, (name if mutation == "none" else None)


@given(compressed_messages())
@FUZZ_SETTINGS
def test_compressed_messages_decode_to_their_header_size_or_raise_value_error(case):
    msg, original = case
    rgb = convert("compressed", msg)
    words = msg.format.lower().replace(";", " ").split()
    if not any(word in ("jpeg", "jpg", "png") for word in words):
        assert rgb is None, "an unsupported format was accepted"
    elif original is not None:
        assert rgb is not None, f"the unmodified {original} image was rejected"
        _, reference, exact = ORIGINALS[original]
        if exact:
            np.testing.assert_array_equal(rgb, reference)
        else:
            assert np.abs(rgb.astype(int) - reference).mean() < 8
    if rgb is not None:
        header = image_header(msg.data)
        assert rgb.shape[:2] == (header.height, header.width)


@given(st.binary(max_size=2048))
@FUZZ_SETTINGS
def test_headers_of_random_bytes_are_read_or_rejected_with_value_error(data):
    try:
        header = image_header(data)
    except ValueError as exc:
        assert str(exc)
        return
    assert header.kind in ("jpeg", "png") and header.height >= 0 and header.width >= 0
