"""The messages both replay runners handle: camera and label images, output topic names."""

from typing import Dict, Sequence

import numpy as np
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage, Image

from dense_ood_ros.replay.bag_reader import COMPRESSED_TYPE, IMAGE_TYPE
from dense_ood_ros.ros import node_topic, output_topic
from dense_ood_ros.ros.conversions import image_to_numpy

#: Bag message type -> rclpy message class of a camera topic.
MESSAGE_TYPES = {IMAGE_TYPE: Image, COMPRESSED_TYPE: CompressedImage}


def decode_label(data: bytes, topic: str, index: int) -> np.ndarray:
    """Deserialize a label message: a mono8 sensor_msgs/Image -> uint8 HxW (a copy)."""
    msg = deserialize_message(data, Image)
    if msg.encoding != "mono8":
        raise ValueError(f"label encoding {msg.encoding!r}, expected mono8")
    return np.array(image_to_numpy(msg))


def output_topics(names: Sequence[str], namespace: str) -> Dict[str, str]:
    """Output name (e.g. LABELS_TOPIC) -> the node's absolute output topic in ``namespace``."""
    return {name: node_topic(output_topic(name), namespace) for name in names}
