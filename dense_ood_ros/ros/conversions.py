"""sensor_msgs Image / CompressedImage <-> numpy, without cv_bridge.

Readers are duck-typed on the message fields, so they work alike on rclpy messages and on
messages deserialised by ``rosbags``. A message becomes a numpy view of its ``data``
buffer (row padding from ``step`` skipped by strides); a copy is made only where the
pixels must change: bgr8 -> RGB, mono8 -> RGB, or byte swapping.

Colour arrays on the Python side are always RGB uint8 HxWx3, whatever the encoding on the
wire. Only the builders import ``sensor_msgs`` (lazily), so this module imports without rclpy.

Camera input is outside data: :func:`message_to_rgb` turns every malformed message into a
ValueError that says what is wrong, and never allocates in proportion to a size a message
merely claims. A compressed image's dimensions are read from its PNG (IHDR) or JPEG (SOF)
header and checked against a pixel budget before it is decoded; a JPEG must end with its EOI
marker, a PNG's chunks must be complete with correct CRCs, and whatever the codecs (libjpeg,
libpng, OpenCV) write to stderr while decoding is captured: a corrupt-data warning makes the
frame bad instead of being printed once per frame.
"""

import array
import os
import re
import struct
import sys
import tempfile
import threading
import zlib
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

import cv2
import numpy as np

#: encoding -> (pixel dtype, values per pixel) of the raw encodings read and built here:
#: the camera encodings below and the node's outputs (mono8, rgb8, 32FC1). Names as cv_bridge's
#: ``sensor_msgs::image_encodings``.
IMAGE_ENCODINGS: Dict[str, Tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "bayer_rggb8": (np.dtype(np.uint8), 1),
    "bayer_bggr8": (np.dtype(np.uint8), 1),
    "bayer_gbrg8": (np.dtype(np.uint8), 1),
    "bayer_grbg8": (np.dtype(np.uint8), 1),
    "yuv422": (np.dtype(np.uint8), 2),  # UYVY byte order (ROS's yuv422)
    "uyvy": (np.dtype(np.uint8), 2),
    "yuv422_yuy2": (np.dtype(np.uint8), 2),  # YUYV byte order
    "yuyv": (np.dtype(np.uint8), 2),
    "32FC1": (np.dtype(np.float32), 1),
}


def _opencv(code: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda pixels: cv2.cvtColor(pixels, code)


def _mono16_to_rgb(pixels: np.ndarray) -> np.ndarray:
    return cv2.cvtColor((pixels >> 8).astype(np.uint8), cv2.COLOR_GRAY2RGB)


def _scaled16_to_rgb(pixels: np.ndarray) -> np.ndarray:
    low, high = int(pixels.min()), int(pixels.max())
    scaled = (pixels.astype(np.float32) - low) * (255.0 / max(high - low, 1))
    return cv2.cvtColor(scaled.astype(np.uint8), cv2.COLOR_GRAY2RGB)


class CameraEncoding(NamedTuple):
    """How a camera encoding becomes RGB uint8."""

    to_rgb: Callable[[np.ndarray], np.ndarray]
    description: str
    even_width: bool = False  # two pixels share their chroma (4:2:2)


#: Camera encodings :func:`message_to_rgb` accepts: the table of what is supported. OpenCV's
#: Bayer names count from the second row, so ROS's bayer_rggb8 is OpenCV's BayerBG.
CAMERA_ENCODINGS: Dict[str, CameraEncoding] = {
    "rgb8": CameraEncoding(lambda pixels: pixels, "as is (a view of the message, no copy)"),
    "bgr8": CameraEncoding(_opencv(cv2.COLOR_BGR2RGB), "channels swapped"),
    "rgba8": CameraEncoding(_opencv(cv2.COLOR_RGBA2RGB), "alpha dropped"),
    "bgra8": CameraEncoding(_opencv(cv2.COLOR_BGRA2RGB), "channels swapped, alpha dropped"),
    "mono8": CameraEncoding(_opencv(cv2.COLOR_GRAY2RGB), "grey replicated to three channels"),
    "mono16": CameraEncoding(_mono16_to_rgb, "high byte (value / 256), grey replicated"),
    "16UC1": CameraEncoding(_scaled16_to_rgb,
                            "scaled to 0-255 by the frame's minimum and maximum, grey replicated"),
    "bayer_rggb8": CameraEncoding(_opencv(cv2.COLOR_BayerBG2RGB), "demosaiced (bilinear)"),
    "bayer_bggr8": CameraEncoding(_opencv(cv2.COLOR_BayerRG2RGB), "demosaiced (bilinear)"),
    "bayer_gbrg8": CameraEncoding(_opencv(cv2.COLOR_BayerGR2RGB), "demosaiced (bilinear)"),
    "bayer_grbg8": CameraEncoding(_opencv(cv2.COLOR_BayerGB2RGB), "demosaiced (bilinear)"),
    "yuv422": CameraEncoding(_opencv(cv2.COLOR_YUV2RGB_UYVY), "UYVY 4:2:2 to RGB", True),
    "uyvy": CameraEncoding(_opencv(cv2.COLOR_YUV2RGB_UYVY), "UYVY 4:2:2 to RGB", True),
    "yuv422_yuy2": CameraEncoding(_opencv(cv2.COLOR_YUV2RGB_YUYV), "YUYV 4:2:2 to RGB", True),
    "yuyv": CameraEncoding(_opencv(cv2.COLOR_YUV2RGB_YUYV), "YUYV 4:2:2 to RGB", True),
}
#: CompressedImage formats accepted (matched as words of the ``format`` field); the payload's
#: own signature decides how it is decoded.
COMPRESSED_FORMATS = ("jpeg", "jpg", "png")
#: Default pixel budget of one camera frame (height x width, raw or compressed): 4096 x 3072
#: = 12.6 MP, so 4K UHD (3840 x 2160), DCI 4K (4096 x 2160) and 12 MP (4000 x 3000) sensors
#: fit. Decoding such a frame takes about 38 MB for the RGB pixels.
DEFAULT_MAX_INPUT_PIXELS = 4096 * 3072
_HOST_IS_BIGENDIAN = sys.byteorder == "big"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"
#: Bounds on the header walks, so that a message of many empty chunks or segments costs
#: milliseconds, not seconds (real images have a few to a few thousand).
_MAX_PNG_CHUNKS = 100_000
_MAX_JPEG_HEADER_STEPS = 10_000
#: JPEG start-of-frame markers SOF0..SOF15; 0xC4 (DHT), 0xC8 (JPG) and 0xCC (DAC) are not.
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: JPEG markers without a length field: TEM and RST0..RST7.
_JPEG_STANDALONE_MARKERS = frozenset([0x01, *range(0xD0, 0xD8)])
#: A libpng warning about an ancillary chunk (lower-case first letter, e.g. "iCCP: known
#: incorrect sRGB profile") does not concern the pixels; every other codec message does.
_BENIGN_CODEC_MESSAGE = re.compile(r"^libpng warning: [a-z][A-Za-z]{3}: ")
#: Lines another thread logs through rcutils (colourised or not) while a frame is being
#: decoded: passed on to the real stderr.
_ROS_LOG_LINE = re.compile(r"^(\x1b\[[0-9;]*m)?\[(DEBUG|INFO|WARN|ERROR|FATAL)\] \[")
#: Decode flags: colour, and the pixels as sent (no EXIF rotation, which would swap the
#: dimensions read from the header).
_IMDECODE_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


class BadImage(ValueError):
    """A camera message that cannot become a frame; ``reason`` is its key in the node's counts."""

    reason = "bad"


class MalformedImage(BadImage):
    """Sizes, step and data length that do not fit together, or no data."""

    reason = "malformed"


class UnsupportedEncoding(BadImage):
    """An encoding or compressed format this module does not read."""

    reason = "unsupported_encoding"


class OverBudget(BadImage):
    """More pixels than ``max_input_pixels`` (raw, or as a compressed header declares)."""

    reason = "over_budget"


class CorruptImage(BadImage):
    """Compressed data that is truncated, corrupt or rejected by the codec."""

    reason = "corrupt"


#: Every reason a camera message is rejected for, as counted in /diagnostics.
BAD_IMAGE_REASONS = tuple(kind.reason for kind in (MalformedImage, UnsupportedEncoding,
                                                   OverBudget, CorruptImage))


class ImageHeader(NamedTuple):
    """What a compressed image's header declares."""

    kind: str  # "jpeg" or "png"
    height: int
    width: int


def _pixel_layout(encoding: str) -> Tuple[np.dtype, int]:
    try:
        return IMAGE_ENCODINGS[encoding]
    except KeyError:
        raise UnsupportedEncoding(f"unsupported image encoding {encoding!r}; "
                                  f"supported: {', '.join(IMAGE_ENCODINGS)}") from None


def _check_budget(what: str, height: int, width: int, max_pixels: Optional[int]) -> None:
    if height <= 0 or width <= 0:
        raise MalformedImage(f"{what} is empty (height {height}, width {width})")
    if max_pixels is not None and height * width > max_pixels:
        raise OverBudget(f"{what} of {height}x{width} = {height * width} pixels is over the "
                         f"limit of {max_pixels} pixels (max_input_pixels)")


def image_to_numpy(msg: Any, max_pixels: Optional[int] = None) -> np.ndarray:
    """View an Image message's pixels as an HxW or HxWxC array in its encoding's own layout.

    E.g. rgb8 -> RGB uint8 HxWx3, bgr8 -> BGR, mono16 -> uint16 HxW, yuv422 -> uint8 HxWx2.
    A view of ``msg.data`` (no copy) unless the byte order must be swapped.
    Raises ValueError naming an unsupported encoding, an empty image, one of more than
    ``max_pixels`` pixels (None: no limit) or an inconsistent size/step.
    """
    dtype, channels = _pixel_layout(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    _check_budget(f"{msg.encoding} image", height, width, max_pixels)
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise MalformedImage(f"{msg.encoding} image step {step} is smaller than one row "
                             f"({width} pixels x {channels * dtype.itemsize} bytes = {row_bytes})")
    buffer = memoryview(msg.data).cast("B")
    if len(buffer) != step * height:
        raise MalformedImage(f"{msg.encoding} image data has {len(buffer)} bytes, "
                             f"expected step x height = {step} x {height} = {step * height}")
    if dtype.itemsize > 1 and bool(msg.is_bigendian) != _HOST_IS_BIGENDIAN:
        dtype = dtype.newbyteorder()
    shape: Tuple[int, ...] = (height, width) if channels == 1 else (height, width, channels)
    strides = (step, channels * dtype.itemsize, dtype.itemsize)[:len(shape)]
    pixels = np.ndarray(shape, dtype=dtype, buffer=buffer, strides=strides)
    if not dtype.isnative:
        pixels = pixels.astype(dtype.newbyteorder("="))
    return pixels


def _png_header(data: memoryview) -> ImageHeader:
    """Read the IHDR of a PNG and check that its chunks are complete, with correct CRCs."""
    if len(data) < 33:
        raise CorruptImage(f"truncated PNG: {len(data)} bytes, its header alone needs 33")
    length, chunk_type = struct.unpack_from(">I4s", data, 8)
    if chunk_type != b"IHDR" or length != 13:
        raise CorruptImage("corrupt PNG: it does not start with a 13-byte IHDR chunk")
    width, height = struct.unpack_from(">II", data, 16)
    offset, has_image_data = 8, False
    for _ in range(_MAX_PNG_CHUNKS):
        if offset + 12 > len(data):
            raise CorruptImage(f"truncated PNG: {len(data)} bytes, no IEND chunk")
        length, chunk_type = struct.unpack_from(">I4s", data, offset)
        end = offset + 12 + length
        if end > len(data):
            raise CorruptImage(f"truncated PNG: chunk {chunk_type!r} at byte {offset} needs "
                               f"{12 + length} bytes, {len(data) - offset} left")
        (crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(data[offset + 4:end - 4]) != crc:
            raise CorruptImage(f"corrupt PNG: CRC mismatch in chunk {chunk_type!r} "
                               f"at byte {offset}")
        if chunk_type == b"IEND":
            break
        has_image_data = has_image_data or chunk_type == b"IDAT"
        offset = end
    else:
        raise CorruptImage(f"corrupt PNG: more than {_MAX_PNG_CHUNKS} chunks")
    if not has_image_data:
        raise CorruptImage("corrupt PNG: no image data (IDAT chunk)")
    return ImageHeader("png", height, width)


def _jpeg_header(data: memoryview) -> ImageHeader:
    """Read the frame size from a JPEG's SOFn marker and check that it ends with EOI."""
    offset, size = 2, len(data)
    for _ in range(_MAX_JPEG_HEADER_STEPS):
        if offset + 2 > size:
            raise CorruptImage(f"truncated JPEG: {size} bytes, no frame header (SOF marker)")
        if data[offset] != 0xFF:
            raise CorruptImage(f"corrupt JPEG: byte {offset} is 0x{data[offset]:02x}, "
                               "expected a marker")
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in _JPEG_STANDALONE_MARKERS:
            offset += 2
            continue
        if marker in (0xD8, 0xD9, 0xDA):  # SOI, EOI, SOS before the frame header
            raise CorruptImage(f"corrupt JPEG: marker 0xff{marker:02x} at byte {offset} before "
                               "the frame header (SOF marker)")
        if offset + 4 > size:
            raise CorruptImage(f"truncated JPEG: {size} bytes, no frame header (SOF marker)")
        (length,) = struct.unpack_from(">H", data, offset + 2)
        if length < 2:
            raise CorruptImage(f"corrupt JPEG: segment 0xff{marker:02x} at byte {offset} "
                               f"has length {length}")
        if marker in _JPEG_SOF_MARKERS:
            if length < 8 or offset + 9 > size:
                raise CorruptImage(f"truncated JPEG: frame header at byte {offset} is incomplete")
            height, width = struct.unpack_from(">HH", data, offset + 5)
            break
        offset += 2 + length
    else:
        raise CorruptImage(f"corrupt JPEG: no frame header (SOF marker) in the first "
                           f"{_MAX_JPEG_HEADER_STEPS} segments")
    # Some drivers pad their buffers with zeros after EOI.
    if not bytes(data[-64:]).rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise CorruptImage(f"truncated JPEG: {size} bytes, no end-of-image marker (0xffd9)")
    return ImageHeader("jpeg", height, width)


def image_header(data: Any) -> ImageHeader:
    """Read kind (jpeg or png) and dimensions from a compressed image's header.

    Nothing is decoded or allocated in proportion to the dimensions; ValueError for data
    that is neither JPEG nor PNG, or that is truncated or corrupt as far as the header
    and the chunk structure show.
    """
    data = memoryview(data).cast("B")
    if bytes(data[:8]) == _PNG_SIGNATURE:
        return _png_header(data)
    if bytes(data[:3]) == _JPEG_SIGNATURE:
        return _jpeg_header(data)
    raise UnsupportedEncoding(f"unknown compressed image data (starts with {bytes(data[:8])!r}); "
                              "supported: JPEG (starts with ff d8 ff), PNG (89 'PNG' 0d 0a 1a 0a)")


_capture_lock = threading.Lock()
_capture_file: Optional[Any] = None


def _flush_stderr() -> None:
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):  # no sys.stderr, or a closed one
        pass


def _capture_sink() -> Optional[int]:
    """Return the file descriptor of the (reused, emptied) capture file; None if there is none."""
    global _capture_file
    try:
        if _capture_file is None:
            _capture_file = tempfile.TemporaryFile()
        sink = _capture_file.fileno()
        os.ftruncate(sink, 0)
        os.lseek(sink, 0, os.SEEK_SET)
        return sink
    except OSError:  # e.g. no writable temporary directory: decode without capturing
        return None


@contextmanager
def _captured_stderr() -> Iterator[List[str]]:
    """Redirect file descriptor 2 to a temporary file; yield the list its lines are put in.

    The C libraries behind cv2.imdecode print their warnings and errors there (libjpeg:
    "Corrupt JPEG data: ...", libpng: "libpng error: ..."). rcutils log lines that other
    threads write meanwhile are passed on to the real stderr. Without a file descriptor 2 or
    a temporary file nothing is captured.
    """
    lines: List[str] = []
    with _capture_lock:
        sink = _capture_sink()
        try:
            saved = os.dup(2) if sink is not None else None
        except OSError:
            saved = None
        if saved is None:
            yield lines
            return
        try:
            _flush_stderr()
            os.dup2(sink, 2)
            try:
                yield lines
            finally:
                _flush_stderr()
                os.dup2(saved, 2)
            os.lseek(sink, 0, os.SEEK_SET)
            text = os.read(sink, 1 << 16).decode("utf-8", "replace")
        finally:
            os.close(saved)
    for line in text.splitlines():
        if _ROS_LOG_LINE.match(line):
            os.write(2, (line + "\n").encode())
        elif line.strip():
            lines.append(line.strip())


def _decode(data: memoryview, header: ImageHeader) -> np.ndarray:
    """Decode checked JPEG/PNG data to BGR; a codec's error or data warning is a ValueError."""
    with _captured_stderr() as messages:
        try:
            bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _IMDECODE_FLAGS)
        except cv2.error as exc:  # e.g. a size OpenCV refuses
            bgr = None
            messages.append(str(exc).strip())
    problems = [line for line in messages if not _BENIGN_CODEC_MESSAGE.match(line)]
    if problems:
        raise CorruptImage(f"{header.kind.upper()} decoder: {'; '.join(problems)}")
    if bgr is None:
        raise CorruptImage(f"cannot decode the {header.kind.upper()} image ({len(data)} bytes)")
    if bgr.shape[:2] != (header.height, header.width):
        raise CorruptImage(f"the {header.kind.upper()} image decoded to {bgr.shape[1]}x"
                           f"{bgr.shape[0]} pixels, its header declares "
                           f"{header.width}x{header.height}")
    return bgr


def compressed_to_rgb(msg: Any,
                      max_pixels: Optional[int] = DEFAULT_MAX_INPUT_PIXELS) -> np.ndarray:
    """Decode a CompressedImage (jpeg or png) to an RGB uint8 HxWx3 array.

    The header is checked first (:func:`image_header`), and an image of more than
    ``max_pixels`` pixels (None: no limit) is rejected before it is decoded. ValueError for
    anything that is not a complete, correct JPEG or PNG image.
    """
    format_words = msg.format.lower().replace(";", " ").split()
    if not any(word in COMPRESSED_FORMATS for word in format_words):
        raise UnsupportedEncoding(f"unsupported compressed image format {msg.format!r}; "
                                  f"supported: {', '.join(COMPRESSED_FORMATS)}")
    data = memoryview(msg.data).cast("B")
    if not len(data):
        raise MalformedImage(f"{msg.format!r} compressed image has no data")
    header = image_header(data)
    _check_budget(f"{header.kind.upper()} image", header.height, header.width, max_pixels)
    return cv2.cvtColor(_decode(data, header), cv2.COLOR_BGR2RGB)


def message_to_rgb(msg: Any, max_pixels: Optional[int] = DEFAULT_MAX_INPUT_PIXELS) -> np.ndarray:
    """Convert a camera message (Image or CompressedImage) to an RGB uint8 HxWx3 array.

    Image encodings: :data:`CAMERA_ENCODINGS`. Anything malformed, unsupported or over
    ``max_pixels`` pixels (None: no limit) raises a :class:`BadImage` saying what.
    """
    if hasattr(msg, "format"):
        return compressed_to_rgb(msg, max_pixels)
    encoding = CAMERA_ENCODINGS.get(msg.encoding)
    if encoding is None:
        raise UnsupportedEncoding(f"unsupported camera image encoding {msg.encoding!r}; "
                                  f"supported: {', '.join(CAMERA_ENCODINGS)}")
    if encoding.even_width and int(msg.width) % 2:
        raise MalformedImage(f"{msg.encoding} image width {msg.width} is odd; 4:2:2 pixels "
                             "come in pairs")
    return encoding.to_rgb(image_to_numpy(msg, max_pixels))


def _check_pixels(pixels: np.ndarray, encoding: str) -> None:
    dtype, channels = _pixel_layout(encoding)
    shape_ok = (pixels.ndim == 2 if channels == 1
                else (pixels.ndim == 3 and pixels.shape[2] == channels))
    if not shape_ok or pixels.dtype != dtype:
        expected = "HxW" if channels == 1 else f"HxWx{channels}"
        raise ValueError(f"{encoding} needs a {dtype} {expected} array, "
                         f"got {pixels.dtype} with shape {pixels.shape}")


def _uint8_array(pixels: np.ndarray) -> array.array:
    data = array.array("B")
    data.frombytes(memoryview(np.ascontiguousarray(pixels)).cast("B"))
    return data


def numpy_to_image(pixels: np.ndarray, encoding: str, header: Optional[Any] = None) -> Any:
    """Build a sensor_msgs/Image from pixels in the encoding's own layout.

    The reverse of :func:`image_to_numpy`: e.g. mono8 uint8 HxW, rgb8 RGB HxWx3, bgr8 BGR
    HxWx3, 32FC1 float32 HxW. Rows are unpadded; multi-byte pixels are written in host byte
    order. ``header`` is copied by reference.
    """
    from sensor_msgs.msg import Image

    _check_pixels(pixels, encoding)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = pixels.shape[:2]
    msg.encoding = encoding
    msg.is_bigendian = int(_HOST_IS_BIGENDIAN and pixels.dtype.itemsize > 1)
    msg.step = pixels[0].nbytes  # one unpadded row
    msg.data = _uint8_array(pixels)
    return msg


def numpy_to_compressed(rgb: np.ndarray, image_format: str = "jpeg", header: Optional[Any] = None,
                        jpeg_quality: int = 90) -> Any:
    """Build a sensor_msgs/CompressedImage (jpeg or png) from an RGB uint8 HxWx3 array."""
    from sensor_msgs.msg import CompressedImage

    if image_format not in ("jpeg", "png"):
        raise ValueError(f"unsupported compressed image format {image_format!r}; use jpeg or png")
    _check_pixels(rgb, "rgb8")
    suffix, params = ((".jpg", [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
                      if image_format == "jpeg" else (".png", []))
    ok, encoded = cv2.imencode(suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode the image as {image_format}")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = image_format
    msg.data = _uint8_array(encoded)
    return msg
