"""Rosbag2 bags written without a ROS graph: serialized messages into MCAP or sqlite3.

Messages written are serialized CDR bytes: copied from another bag, serialized by rclpy, or
made here from pixels (:func:`image_message`, :func:`compressed_message`) with the message
definitions of ``rosbags``' type store, so nothing here needs a ROS install.
"""

import shutil
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterable, Sequence, Tuple, Union

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, get_typestore

from dense_ood_ros.replay.bag_reader import COMPRESSED_TYPE, IMAGE_TYPE, Topic

#: Storage formats written (both are read).
STORAGES = ("mcap", "sqlite3")
_STORAGE_PLUGINS = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
#: rosbag2 metadata version written (Jazzy and later).
BAG_VERSION = 9
#: The bag a replay writes into its output folder.
RESULT_BAG = "result_bag"


@lru_cache(maxsize=1)
def typestore():
    """Return the rosbags type store of the ROS 2 distribution whose messages we write."""
    return get_typestore(getattr(Stores, "ROS2_KILTED", Stores.LATEST))


class BagWriter:
    """Writes serialized messages to a new rosbag2 bag (``storage`` mcap or sqlite3).

    Topics are registered with their message definitions (from rosbags' type store), so the
    bag plays in ``ros2 bag play`` and opens in Foxglove Studio. Close it (a context manager
    does, on an error too) to finish the file: a closed bag is complete and valid whatever
    was written into it.
    """

    def __init__(self, path: Union[str, Path], storage: str = "mcap"):
        if storage not in _STORAGE_PLUGINS:
            raise ValueError(f"unknown bag storage {storage!r}; choose from {list(STORAGES)}")
        self.path = Path(path)
        try:
            self._writer = Writer(self.path, version=BAG_VERSION,
                                  storage_plugin=_STORAGE_PLUGINS[storage])
            self._writer.open()
        except WriterError as exc:
            raise OSError(f"cannot create bag {self.path}: {exc}") from None
        self._connections = {}
        self.counts: Dict[str, int] = {}

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def set_custom_data(self, key: str, value: str) -> None:
        """Record ``key: value`` in the bag's metadata (``custom_data``)."""
        self._writer.set_custom_data(key, value)

    def add_topic(self, name: str, msgtype: str) -> None:
        """Register topic ``name`` of ``msgtype`` (e.g. ``sensor_msgs/msg/Image``), once."""
        if name in self._connections:
            return
        self._connections[name] = self._writer.add_connection(name, msgtype,
                                                              typestore=typestore())
        self.counts[name] = 0

    def write(self, topic: str, log_time_ns: int, data: Union[bytes, memoryview]) -> None:
        """Write one serialized message on a registered topic, recorded at ``log_time_ns``."""
        self._writer.write(self._connections[topic], int(log_time_ns), data)
        self.counts[topic] += 1

    def close(self) -> None:
        if self._writer.storage is not None:
            try:
                self._writer.close()
            finally:
                self._writer.storage = None


def _stamp(stamp_ns: int):
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    types = typestore().types
    return types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)


def image_message(pixels: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> bytes:
    """Serialize a sensor_msgs/Image of uint8 pixels (rgb8/bgr8: HxWx3, mono8: HxW)."""
    types = typestore().types
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    msg = types[IMAGE_TYPE](
        header=types["std_msgs/msg/Header"](stamp=_stamp(stamp_ns), frame_id=frame_id),
        height=pixels.shape[0], width=pixels.shape[1], encoding=encoding, is_bigendian=0,
        step=pixels[0].nbytes, data=pixels.reshape(-1))
    return bytes(typestore().serialize_cdr(msg, IMAGE_TYPE))


def compressed_message(rgb: np.ndarray, stamp_ns: int, frame_id: str,
                       jpeg_quality: int = 90) -> bytes:
    """Serialize a sensor_msgs/CompressedImage holding ``rgb`` as a JPEG (format ``jpeg``)."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    if not ok:
        raise ValueError("OpenCV could not encode the frame as JPEG")
    types = typestore().types
    msg = types[COMPRESSED_TYPE](
        header=types["std_msgs/msg/Header"](stamp=_stamp(stamp_ns), frame_id=frame_id),
        format="jpeg", data=encoded.reshape(-1))
    return bytes(typestore().serialize_cdr(msg, COMPRESSED_TYPE))


def remove_bag(path: Path) -> None:
    """Delete the bag at ``path`` (``--overwrite``); refuse a folder that is not a bag."""
    if path.is_file() and path.suffix in (".mcap", ".db3"):
        path.unlink()
        return
    if path.is_dir():
        entries = list(path.iterdir())
        bag_like = all(p.is_file() and (p.name == "metadata.yaml" or p.suffix in (".mcap", ".db3"))
                       for p in entries)
        if bag_like:
            shutil.rmtree(path)
            return
    raise FileExistsError(f"{path} exists and is not a bag (a folder of metadata.yaml and "
                          ".mcap/.db3 files); not overwriting it")


def open_result_bag(out: Path, camera: Topic, outputs: Dict[str, str],
                    copies: Sequence[Tuple[str, Iterable[Tuple[int, bytes]]]] = ()) -> BagWriter:
    """Create ``<out>/result_bag`` (MCAP) with the camera topic and the output topics.

    ``copies``: (topic, (recording time in ns, serialized Image) ...) written first, e.g.
    the bag's label topics.
    """
    writer = BagWriter(out / RESULT_BAG, "mcap")
    writer.add_topic(camera.name, camera.msgtype)
    for topic in outputs.values():
        writer.add_topic(topic, IMAGE_TYPE)
    for topic, messages in copies:
        writer.add_topic(topic, IMAGE_TYPE)
        for log_time_ns, data in messages:
            writer.write(topic, log_time_ns, data)
    return writer
