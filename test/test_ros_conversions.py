"""sensor_msgs Image / CompressedImage <-> numpy conversions."""

import os
import re
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib
from pathlib import Path
from types import SimpleNamespace

import cv2
import hostile_images
import numpy as np
import pytest

from dense_ood_ros.ros.conversions import (BAD_IMAGE_REASONS, CAMERA_ENCODINGS,
                                           DEFAULT_MAX_INPUT_PIXELS, IMAGE_ENCODINGS, BadImage,
                                           CorruptImage, MalformedImage, OverBudget,
                                           UnsupportedEncoding, compressed_to_rgb,
                                           image_header, image_to_numpy, message_to_rgb,
                                           numpy_to_compressed, numpy_to_image)

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "dense_ood_ros"
RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
MONO = RNG.integers(0, 256, (5, 7), dtype=np.uint8)
FLOAT = RNG.standard_normal((5, 7)).astype(np.float32)
MONO16 = RNG.integers(0, 65536, (5, 7), dtype=np.uint16)
ARRAYS = {"rgb8": RGB, "bgr8": RGB, "mono8": MONO, "32FC1": FLOAT, "mono16": MONO16,
          "16UC1": MONO16, "rgba8": RNG.integers(0, 256, (5, 7, 4), dtype=np.uint8)}
RGB_SMOOTH = hostile_images.smooth_rgb(48, 64)
RGB_SMOOTH_LARGE = hostile_images.smooth_rgb(240, 320)


def raw_message(pixels_on_wire: np.ndarray, encoding: str, padding: int = 0,
                bigendian: bool = False):
    """Make a duck-typed Image message with ``padding`` junk bytes at the end of every row."""
    rows = pixels_on_wire.reshape(pixels_on_wire.shape[0], -1).view(np.uint8)
    padded = np.concatenate([rows, np.full((rows.shape[0], padding), 0xEE, np.uint8)], axis=1)
    return SimpleNamespace(height=pixels_on_wire.shape[0], width=pixels_on_wire.shape[1],
                           encoding=encoding, step=padded.shape[1], is_bigendian=int(bigendian),
                           data=padded.tobytes(),
                           header=SimpleNamespace(frame_id="camera"))


@pytest.mark.parametrize("encoding", list(ARRAYS))
def test_round_trip_through_sensor_msgs_image(encoding):
    pytest.importorskip("sensor_msgs.msg")
    pixels = ARRAYS[encoding]
    msg = numpy_to_image(pixels, encoding)
    assert (msg.encoding, msg.height, msg.width) == (encoding, 5, 7)
    assert msg.step * msg.height == len(msg.data)
    back = image_to_numpy(msg)
    assert back.dtype == pixels.dtype
    np.testing.assert_array_equal(back, pixels)


@pytest.mark.parametrize("encoding", ["rgb8", "mono8", "32FC1"])
def test_native_encodings_are_views_of_the_message_data(encoding):
    pytest.importorskip("sensor_msgs.msg")
    msg = numpy_to_image(ARRAYS[encoding], encoding)
    assert np.shares_memory(image_to_numpy(msg), np.frombuffer(msg.data, np.uint8))


def test_bgr8_is_blue_green_red_on_the_wire_and_rgb_from_message_to_rgb():
    pytest.importorskip("sensor_msgs.msg")
    msg = numpy_to_image(RGB[..., ::-1], "bgr8")
    np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint8)[:3], RGB[0, 0, ::-1])
    np.testing.assert_array_equal(image_to_numpy(msg), RGB[..., ::-1])
    np.testing.assert_array_equal(message_to_rgb(raw_message(RGB[..., ::-1], "bgr8")), RGB)


@pytest.mark.parametrize("encoding", list(ARRAYS))
@pytest.mark.parametrize("padding", [1, 7, 64])
def test_row_padding_from_step_is_skipped(encoding, padding):
    pixels = ARRAYS[encoding]
    np.testing.assert_array_equal(image_to_numpy(raw_message(pixels, encoding, padding)), pixels)


def _on_wire(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """Return what a camera driver puts on the wire for ``rgb`` in ``encoding``.

    Independent of the module: mosaics and 4:2:2 chroma are built by hand.
    """
    r, g, b = (rgb[..., i] for i in range(3))
    if encoding in ("rgb8", "bgr8", "rgba8", "bgra8"):
        order = [0, 1, 2] if encoding.startswith("rgb") else [2, 1, 0]
        pixels = rgb[..., order]
        if encoding.endswith("a8"):
            pixels = np.dstack([pixels, np.full(rgb.shape[:2], 255, np.uint8)])
        return np.ascontiguousarray(pixels)
    if encoding.startswith("bayer_"):  # the 2x2 pattern, first row then second row
        pattern = encoding[6:10]
        channel = {"r": r, "g": g, "b": b}
        mosaic = np.empty(rgb.shape[:2], np.uint8)
        for index, letter in enumerate(pattern):
            dy, dx = divmod(index, 2)
            mosaic[dy::2, dx::2] = channel[letter][dy::2, dx::2]
        return mosaic
    if encoding in ("yuv422", "uyvy", "yuv422_yuy2", "yuyv"):
        yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV).astype(np.int32)
        u = ((yuv[:, 0::2, 1] + yuv[:, 1::2, 1]) // 2).astype(np.uint8)
        v = ((yuv[:, 0::2, 2] + yuv[:, 1::2, 2]) // 2).astype(np.uint8)
        y = yuv[..., 0].astype(np.uint8)
        chroma = np.empty(y.shape, np.uint8)
        chroma[:, 0::2], chroma[:, 1::2] = u, v
        pair = (chroma, y) if encoding in ("yuv422", "uyvy") else (y, chroma)
        return np.ascontiguousarray(np.stack(pair, axis=-1))
    raise AssertionError(encoding)


COLOUR_ENCODINGS = [e for e in CAMERA_ENCODINGS if e not in ("mono8", "mono16", "16UC1")]
MIRRORED = {"bayer_rggb8": "bayer_bggr8", "bayer_bggr8": "bayer_rggb8",
            "bayer_gbrg8": "bayer_grbg8", "bayer_grbg8": "bayer_gbrg8",
            "yuv422": "yuyv", "uyvy": "yuyv", "yuv422_yuy2": "uyvy", "yuyv": "uyvy"}


@pytest.mark.parametrize("encoding", COLOUR_ENCODINGS)
def test_every_colour_camera_encoding_gives_the_frame_back(encoding, camvid_frame):
    """A real CamVid frame, put on the wire as a driver would, comes back as the same RGB.

    Exactly for the byte orders, within demosaicing / chroma subsampling error otherwise.
    """
    rgb = np.ascontiguousarray(camvid_frame[:120, :160])
    back = message_to_rgb(raw_message(_on_wire(rgb, encoding), encoding, padding=3))
    assert back.shape == rgb.shape and back.dtype == np.uint8
    error = np.abs(back.astype(int) - rgb.astype(int))
    if encoding.startswith(("rgb", "bgr")):
        assert error.max() == 0
    else:  # interpolated colour: close on average, not pixel-exact at edges
        assert error.mean() < 8, f"{encoding}: mean error {error.mean():.1f}"
        # the same bytes read with the mirrored pattern / byte order are clearly worse
        wrong = message_to_rgb(raw_message(_on_wire(rgb, encoding), MIRRORED[encoding]))
        assert np.abs(wrong.astype(int) - rgb.astype(int)).mean() > 1.5 * error.mean()


@pytest.mark.parametrize("bigendian", [False, True])
def test_mono16_and_16uc1_scale_to_8_bits_in_either_byte_order(bigendian):
    wire = MONO16.astype(">u2" if bigendian else "<u2")
    mono16 = message_to_rgb(raw_message(wire, "mono16", padding=2, bigendian=bigendian))
    np.testing.assert_array_equal(mono16, np.repeat((MONO16 >> 8).astype(np.uint8)[..., None],
                                                    3, 2))
    depth = message_to_rgb(raw_message(wire, "16UC1", bigendian=bigendian))
    assert depth[..., 0].min() == 0 and depth[..., 0].max() == 255
    in_depth_order = depth[..., 0].ravel()[np.argsort(MONO16, axis=None)]
    assert (np.diff(in_depth_order.astype(int)) >= 0).all(), "the scaling must keep the order"


def test_4_2_2_needs_an_even_width():
    with pytest.raises(MalformedImage, match="yuyv image width 7 is odd"):
        message_to_rgb(raw_message(np.zeros((5, 7, 2), np.uint8), "yuyv"))


def test_each_rejection_has_its_reason():
    assert set(BAD_IMAGE_REASONS) == {"malformed", "unsupported_encoding", "over_budget",
                                      "corrupt"}
    assert set(CAMERA_ENCODINGS) < set(IMAGE_ENCODINGS)
    cases = [(raw_message(MONO, "nv12"), UnsupportedEncoding),
             (raw_message(RGB, "rgb8"), OverBudget),
             (SimpleNamespace(format="jpeg", data=b"\xff\xd8\xff\xe0"), CorruptImage),
             (SimpleNamespace(height=0, width=0, encoding="rgb8", step=0, is_bigendian=0,
                              data=b""), MalformedImage)]
    for msg, kind in cases:
        with pytest.raises(kind) as caught:
            message_to_rgb(msg, max_pixels=20)
        assert isinstance(caught.value, BadImage) and caught.value.reason in BAD_IMAGE_REASONS


def test_big_endian_float_is_returned_in_native_order():
    msg = raw_message(FLOAT.astype(">f4"), "32FC1", padding=3, bigendian=True)
    back = image_to_numpy(msg)
    assert back.dtype == np.float32 and back.dtype.isnative
    np.testing.assert_array_equal(back, FLOAT)


def test_message_to_rgb_replicates_mono8_and_rejects_float_images():
    np.testing.assert_array_equal(message_to_rgb(raw_message(MONO, "mono8")),
                                  np.repeat(MONO[..., None], 3, 2))
    with pytest.raises(UnsupportedEncoding, match=r"unsupported camera image encoding '32FC1'; "
                                                  r"supported: rgb8, bgr8, rgba8, .*, yuyv$"):
        message_to_rgb(raw_message(FLOAT, "32FC1"))


def test_unsupported_encoding_is_named():
    msg = raw_message(MONO, "nv12")
    with pytest.raises(UnsupportedEncoding, match=r"unsupported image encoding 'nv12'; "
                                                  r"supported: rgb8, bgr8, .*, 32FC1$"):
        image_to_numpy(msg)
    # camera input lists only the camera encodings (32FC1 is an output encoding)
    with pytest.raises(UnsupportedEncoding, match=r"unsupported camera image encoding 'nv12'; "
                                                  r"supported: rgb8, bgr8, .*, yuyv$"):
        message_to_rgb(msg)


def test_inconsistent_step_and_size_are_reported():
    msg = raw_message(RGB, "rgb8")
    msg.step = 20  # one row of 7 RGB pixels needs 21 bytes
    with pytest.raises(ValueError, match=r"step 20 is smaller than one row .* = 21\)"):
        image_to_numpy(msg)
    msg = raw_message(RGB, "rgb8")
    msg.data = msg.data[:-1]
    with pytest.raises(ValueError, match=r"has 104 bytes, expected step x height = 21 x 5 = 105"):
        image_to_numpy(msg)


def test_builder_rejects_arrays_that_do_not_fit_the_encoding():
    pytest.importorskip("sensor_msgs.msg")
    with pytest.raises(ValueError, match=r"32FC1 needs a float32 HxW array, got uint8"):
        numpy_to_image(MONO, "32FC1")
    with pytest.raises(ValueError,
                       match=r"rgb8 needs a uint8 HxWx3 array, got uint8 with shape \(5, 7\)"):
        numpy_to_image(MONO, "rgb8")
    with pytest.raises(ValueError, match="unsupported image encoding 'rgb16'"):
        numpy_to_image(RGB, "rgb16")


def test_builder_copies_the_header():
    std_msgs = pytest.importorskip("std_msgs.msg")
    header = std_msgs.Header(frame_id="camera_optical")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = numpy_to_image(FLOAT, "32FC1", header)
    assert (msg.header.frame_id, msg.header.stamp.sec,
            msg.header.stamp.nanosec) == ("camera_optical", 12, 345)


def test_compressed_png_round_trip_is_exact_and_jpeg_is_close():
    pytest.importorskip("sensor_msgs.msg")
    smooth = np.repeat(np.repeat(RGB, 8, axis=0), 8, axis=1)  # JPEG-friendly 40x56
    np.testing.assert_array_equal(compressed_to_rgb(numpy_to_compressed(smooth, "png")), smooth)
    jpeg = numpy_to_compressed(smooth, "jpeg", jpeg_quality=95)
    decoded = message_to_rgb(jpeg)
    assert decoded.shape == smooth.shape
    assert np.abs(decoded.astype(int) - smooth).mean() < 12


def test_compressed_errors_name_the_format():
    with pytest.raises(ValueError, match="unsupported compressed image format 'tiff'"):
        compressed_to_rgb(SimpleNamespace(format="tiff", data=b"\x00" * 10))
    with pytest.raises(ValueError, match=r"unknown compressed image data \(starts with "
                                         r"b'\\x00.*supported: JPEG .*, PNG"):
        compressed_to_rgb(SimpleNamespace(format="rgb8; jpeg compressed bgr8", data=b"\x00" * 10))


def test_rosbags_messages_convert_like_rclpy_ones():
    typesys = pytest.importorskip("rosbags.typesys")
    store = typesys.get_typestore(typesys.Stores.ROS2_HUMBLE)
    types = store.types
    header = types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=1, nanosec=2), frame_id="camera")
    padded = raw_message(RGB[..., ::-1].copy(), "bgr8", padding=5)
    image = types["sensor_msgs/msg/Image"](header=header, height=5, width=7, encoding="bgr8",
                                           is_bigendian=0, step=padded.step,
                                           data=np.frombuffer(padded.data, np.uint8))
    image = store.deserialize_cdr(store.serialize_cdr(image, image.__msgtype__), image.__msgtype__)
    np.testing.assert_array_equal(message_to_rgb(image), RGB)
    import cv2
    png = cv2.imencode(".png", RGB[..., ::-1])[1].ravel()
    compressed = types["sensor_msgs/msg/CompressedImage"](header=header, format="png", data=png)
    np.testing.assert_array_equal(message_to_rgb(compressed), RGB)


def test_conversions_import_without_rclpy():
    code = ("import sys; sys.modules['rclpy'] = sys.modules['sensor_msgs'] = None; "
            "import dense_ood_ros.ros.conversions")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def test_rclpy_is_imported_only_under_dense_ood_ros_ros():
    offenders = [str(path.relative_to(PACKAGE_DIR)) for path in PACKAGE_DIR.rglob("*.py")
                 if "ros" not in path.relative_to(PACKAGE_DIR).parts[:1]
                 and any(line.strip().startswith(("import rclpy", "from rclpy"))
                         for line in path.read_text().splitlines())]
    assert offenders == []


# --- hostile input (issue 17): every bad message is a ValueError, cheap, and silent ---

@pytest.fixture
def peak_memory():
    """Measure the peak of Python/numpy allocations (tracemalloc) of the code in the block."""
    tracemalloc.start()
    try:
        yield lambda: tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("image_format", ["jpeg", "png"])
def test_empty_compressed_data_is_a_value_error(image_format):
    with pytest.raises(ValueError, match=f"'{image_format}' compressed image has no data"):
        message_to_rgb(SimpleNamespace(format=image_format, data=b""))


@pytest.mark.parametrize("name, fields", list(hostile_images.empty_raw_images().items()))
def test_raw_image_without_pixels_is_a_value_error(name, fields):
    height, width, encoding, step = fields
    msg = SimpleNamespace(height=height, width=width, encoding=encoding, step=step,
                          is_bigendian=0, data=b"")
    with pytest.raises(ValueError, match=f"{encoding} image is empty "
                                         f"\\(height {height}, width {width}\\)"):
        message_to_rgb(msg)


@pytest.mark.parametrize("image_format, data, claimed", [
    ("png", hostile_images.png_claiming(40000, 40000), "40000x40000"),
    ("jpeg", hostile_images.jpeg_claiming(hostile_images.jpeg_bytes(RGB_SMOOTH), 65000, 65000),
     "65000x65000"),
    ("png", hostile_images.png_claiming(10000, 10000), "10000x10000"),
    ("jpeg", hostile_images.jpeg_claiming(hostile_images.jpeg_bytes(RGB_SMOOTH), 20000, 20000),
     "20000x20000"),
])
def test_decompression_bombs_are_rejected_from_the_header_before_decoding(
        image_format, data, claimed, peak_memory):
    started = time.perf_counter()
    with pytest.raises(ValueError, match=f"{image_format.upper()} image of {claimed} = [0-9]+ "
                                         f"pixels is over the limit of {DEFAULT_MAX_INPUT_PIXELS} "
                                         r"pixels \(max_input_pixels\)"):
        message_to_rgb(SimpleNamespace(format=image_format, data=data))
    assert time.perf_counter() - started < 0.5
    assert peak_memory() < 1 << 20  # nothing in proportion to the claimed size


def test_the_pixel_budget_applies_to_raw_images_and_is_a_parameter():
    msg = raw_message(RGB, "rgb8")  # 5 x 7 = 35 pixels
    assert message_to_rgb(msg, max_pixels=35).shape == (5, 7, 3)
    with pytest.raises(ValueError, match=r"rgb8 image of 5x7 = 35 pixels is over the limit of 34"):
        message_to_rgb(msg, max_pixels=34)
    # a claimed size is checked before the data: 2**32-1 squared with no data at all
    huge = SimpleNamespace(height=2**32 - 1, width=2**32 - 1, encoding="bgr8", step=2**32 - 1,
                           is_bigendian=0, data=b"")
    with pytest.raises(ValueError, match="is over the limit"):
        message_to_rgb(huge)
    png = hostile_images.png_bytes(RGB_SMOOTH)  # 48 x 64
    assert message_to_rgb(SimpleNamespace(format="png", data=png), 48 * 64).shape == (48, 64, 3)
    with pytest.raises(ValueError, match="PNG image of 48x64 = 3072 pixels is over"):
        message_to_rgb(SimpleNamespace(format="png", data=png), 48 * 64 - 1)


def test_the_header_gives_kind_and_size_without_decoding():
    assert image_header(hostile_images.png_bytes(RGB_SMOOTH)) == ("png", 48, 64)
    assert image_header(hostile_images.jpeg_bytes(RGB_SMOOTH)) == ("jpeg", 48, 64)
    assert image_header(hostile_images.png_claiming(40000, 30000)) == ("png", 40000, 30000)
    with pytest.raises(ValueError, match="unknown compressed image data"):
        image_header(b"GIF89a" + bytes(100))


@pytest.mark.parametrize("name", hostile_images.CORRUPT_JPEG_KINDS)
def test_corrupt_jpeg_is_a_value_error_and_libjpeg_prints_nothing(name, capfd):
    data = hostile_images.corrupt_jpegs(hostile_images.jpeg_bytes(RGB_SMOOTH_LARGE))[name]
    with pytest.raises(ValueError, match="truncated JPEG|JPEG decoder: Corrupt JPEG data"):
        message_to_rgb(SimpleNamespace(format="jpeg", data=data))
    captured = capfd.readouterr()
    assert (captured.out, captured.err) == ("", "")


def test_corrupt_png_is_a_value_error_and_libpng_prints_nothing(capfd):
    png = hostile_images.png_bytes(RGB_SMOOTH_LARGE)
    flipped = bytearray(png)
    flipped[len(png) // 2] ^= 0xFF
    ihdr = struct.pack(">IIBBBBB", 64, 48, 8, 2, 0, 0, 0)
    extra_data = (hostile_images.PNG_SIGNATURE + hostile_images.png_chunk(b"IHDR", ihdr)
                  + hostile_images.png_chunk(b"IDAT", zlib.compress(bytes(49 * 193)))
                  + hostile_images.png_chunk(b"IEND", b""))  # one row too many, valid CRCs
    for data, problem in [(png[:len(png) // 2], "truncated PNG"),
                          (bytes(flipped), "corrupt PNG: CRC mismatch in chunk b'IDAT'"),
                          (extra_data, "PNG decoder: libpng warning: IDAT: Too much image data")]:
        with pytest.raises(ValueError, match=re.escape(problem)):
            message_to_rgb(SimpleNamespace(format="png", data=data))
    captured = capfd.readouterr()
    assert (captured.out, captured.err) == ("", "")


def test_log_lines_of_other_threads_are_not_taken_for_codec_messages(capfd):
    jpeg = hostile_images.jpeg_bytes(RGB_SMOOTH)
    line = "[INFO] [1.5] [detector]: logged while a frame was decoded\n"
    real_imdecode = cv2.imdecode

    def imdecode_while_another_thread_logs(*args):
        os.write(2, line.encode())
        return real_imdecode(*args)

    try:
        cv2.imdecode = imdecode_while_another_thread_logs
        assert message_to_rgb(SimpleNamespace(format="jpeg", data=jpeg)).shape == (48, 64, 3)
    finally:
        cv2.imdecode = real_imdecode
    assert capfd.readouterr().err == line


def test_padded_and_progressive_jpegs_and_interlaced_pngs_still_decode():
    jpeg = hostile_images.jpeg_bytes(RGB_SMOOTH)
    padded = SimpleNamespace(format="jpeg", data=jpeg + bytes(16))
    assert message_to_rgb(padded).shape == (48, 64, 3)
    progressive = cv2.imencode(".jpg", RGB_SMOOTH, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1]
    assert message_to_rgb(SimpleNamespace(format="jpeg", data=progressive)).shape == (48, 64, 3)
    # Adam7-interlaced PNG, written by hand (OpenCV writes none)
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
              (0, 1, 1, 2)]
    raw = b"".join(b"\x00" + row.tobytes() for x0, y0, dx, dy in passes
                   for row in RGB_SMOOTH[y0::dy, x0::dx] if row.size)
    ihdr = struct.pack(">IIBBBBB", 64, 48, 8, 2, 0, 0, 1)  # interlace method 1
    interlaced = (hostile_images.PNG_SIGNATURE + hostile_images.png_chunk(b"IHDR", ihdr)
                  + hostile_images.png_chunk(b"IDAT", zlib.compress(raw))
                  + hostile_images.png_chunk(b"IEND", b""))
    np.testing.assert_array_equal(message_to_rgb(SimpleNamespace(format="png", data=interlaced)),
                                  RGB_SMOOTH)
