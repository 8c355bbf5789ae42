"""sensor_msgs Image / CompressedImage <-> numpy, without cv_bridge.

Readers are duck-typed on the message fields, so they work alike on rclpy messages and on
messages deserialised by ``rosbags``. A message becomes a numpy view of its ``data``
buffer (row padding from ``step`` skipped by strides); a copy is made only where the
pixels must change: bgr8 -> RGB, mono8 -> RGB, or byte swapping.

Colour arrays on the Python side are always RGB uint8 HxWx3, whatever the encoding on the
wire. Only the builders import ``sensor_msgs`` (lazily), so this module imports without rclpy.
"""

import array
import sys
from typing import Any, Dict, Optional, Tuple

import cv2
import numpy as np

#: encoding -> (pixel dtype, channels) of the supported raw encodings.
IMAGE_ENCODINGS: Dict[str, Tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "mono8": (np.dtype(np.uint8), 1),
    "32FC1": (np.dtype(np.float32), 1),
}
#: CompressedImage formats OpenCV decodes (matched as words of the ``format`` field).
COMPRESSED_FORMATS = ("jpeg", "jpg", "png")
_HOST_IS_BIGENDIAN = sys.byteorder == "big"


def _pixel_layout(encoding: str) -> Tuple[np.dtype, int]:
    try:
        return IMAGE_ENCODINGS[encoding]
    except KeyError:
        raise ValueError(f"unsupported image encoding {encoding!r}; "
                         f"supported: {', '.join(IMAGE_ENCODINGS)}") from None


def image_to_numpy(msg: Any) -> np.ndarray:
    """Convert an Image message to an HxW (mono8 uint8, 32FC1 float32) or HxWx3 RGB uint8 array.

    rgb8, mono8 and native-endian 32FC1 are views of ``msg.data`` (no copy).
    Raises ValueError naming an unsupported encoding or inconsistent size/step.
    """
    dtype, channels = _pixel_layout(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ValueError(f"{msg.encoding} image step {step} is smaller than one row "
                         f"({width} pixels x {channels * dtype.itemsize} bytes = {row_bytes})")
    buffer = memoryview(msg.data).cast("B")
    if len(buffer) != step * height:
        raise ValueError(f"{msg.encoding} image data has {len(buffer)} bytes, "
                         f"expected step x height = {step} x {height} = {step * height}")
    if dtype.itemsize > 1 and bool(msg.is_bigendian) != _HOST_IS_BIGENDIAN:
        dtype = dtype.newbyteorder()
    shape: Tuple[int, ...] = (height, width) if channels == 1 else (height, width, channels)
    strides = (step, channels * dtype.itemsize, dtype.itemsize)[:len(shape)]
    pixels = np.ndarray(shape, dtype=dtype, buffer=buffer, strides=strides)
    if not dtype.isnative:
        pixels = pixels.astype(dtype.newbyteorder("="))
    if msg.encoding == "bgr8":
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    return pixels


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """Decode a CompressedImage (jpeg or png) to an RGB uint8 HxWx3 array."""
    format_words = msg.format.lower().replace(";", " ").split()
    if not any(word in COMPRESSED_FORMATS for word in format_words):
        raise ValueError(f"unsupported compressed image format {msg.format!r}; "
                         f"supported: {', '.join(COMPRESSED_FORMATS)}")
    encoded = np.frombuffer(memoryview(msg.data).cast("B"), dtype=np.uint8)
    bgr = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot decode {msg.format!r} compressed image ({len(encoded)} bytes)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def message_to_rgb(msg: Any) -> np.ndarray:
    """Convert a camera message (Image or CompressedImage) to an RGB uint8 HxWx3 array.

    A mono8 Image is replicated to three channels; other single-channel encodings are
    not camera colour images and raise ValueError.
    """
    if hasattr(msg, "format"):
        return compressed_to_rgb(msg)
    pixels = image_to_numpy(msg)
    if pixels.ndim == 3:
        return pixels
    if msg.encoding == "mono8":
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB)
    raise ValueError(f"image encoding {msg.encoding!r} is not a camera image; "
                     f"use rgb8, bgr8 or mono8")


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
    """Build a sensor_msgs/Image from HxW (mono8, 32FC1) or RGB HxWx3 (rgb8, bgr8) pixels.

    Rows are unpadded; 32FC1 is written in host byte order. ``header`` is copied by reference.
    """
    from sensor_msgs.msg import Image

    _check_pixels(pixels, encoding)
    if encoding == "bgr8":
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
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
