"""ROS 2 adapters: the detector node, its client, image message conversion, diagnostics.

The only part of the package that imports rclpy (conversions.py only lazily, to build messages).
"""

from pathlib import Path
from typing import Tuple

PACKAGE = "dense_ood_ros"
NODE_NAME = "detector"
#: The node's topics are private (``~/``) and set by remapping, as image_pipeline's and
#: Autoware's nodes do: ``-r ~/input/image:=/camera/image_raw`` (launch: ``remappings``).
INPUT_IMAGE_TOPIC = "~/input/image"
INPUT_CAMERA_INFO_TOPIC = "~/input/camera_info"
#: Output names, under ``~/output/``.
LABELS_TOPIC = "labels"
COLOR_TOPIC = "semantic_color"
SCORE_TOPIC = "anomaly_score"
MASK_TOPIC = "anomaly_mask"
CAMERA_INFO_TOPIC = "camera_info"
LABEL_SET_TOPIC = "label_set"
_SOURCE_ROOT = Path(__file__).resolve().parents[2]
#: Fast DDS profile for camera-sized messages (frames above ~512 KB).
FASTDDS_PROFILE_FILE = "config/fastdds_large_data.xml"
#: Every path the code reads from the package's share directory (:func:`package_path`'s
#: arguments, the launch file's lookups). setup.py installs them; test/test_colcon_install.py
#: checks that the code asks for no other and that a colcon install holds each.
SHARE_FILES = ("config/detector.yaml", FASTDDS_PROFILE_FILE, "models/default.pt", "demo",
               "launch/detector.launch.py")


def output_topic(name: str) -> str:
    """Return the node's private topic of the output ``name`` (e.g. LABELS_TOPIC)."""
    return f"~/output/{name}"


def image_outputs(publish_color: bool = True, publish_mask: bool = False) -> Tuple[str, ...]:
    """Image output names of the node, in publish order."""
    return ((LABELS_TOPIC,) + ((COLOR_TOPIC,) if publish_color else ()) + (SCORE_TOPIC,)
            + ((MASK_TOPIC,) if publish_mask else ()))


def node_topic(private_topic: str, namespace: str = "/", node_name: str = NODE_NAME) -> str:
    """Return the absolute name of a node's private topic (``~/x`` -> ``/<ns>/<node>/x``)."""
    node = "/".join(part for part in (namespace.strip("/"), node_name) if part)
    return "/" + node + private_topic[1:] if private_topic.startswith("~") else private_topic


def package_path(*parts: str) -> Path:
    """Return the path of a file shipped with the package (e.g. ``models/default.pt``).

    It is in the ament share directory when the package is installed in a ROS workspace, else
    in the source tree.
    """
    try:
        from ament_index_python.packages import get_package_share_directory
        root = Path(get_package_share_directory(PACKAGE))
    except (ImportError, LookupError, OSError):  # not installed, or no AMENT_PREFIX_PATH
        root = _SOURCE_ROOT
    return root.joinpath(*parts)
