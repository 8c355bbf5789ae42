"""ROS 2 adapters: the detector node, its client, image message conversion, diagnostics.

The only part of the package that imports rclpy (conversions.py only lazily, to build messages).
"""

from pathlib import Path

PACKAGE = "dense_ood_ros"
#: Output topics of the detector node, relative to its ``output_namespace``.
LABELS_TOPIC = "labels"
COLOR_TOPIC = "semantic_color"
SCORE_TOPIC = "anomaly_score"
_SOURCE_ROOT = Path(__file__).resolve().parents[2]


def output_topic(output_namespace: str, name: str) -> str:
    """Return the topic of the output ``name`` (e.g. LABELS_TOPIC) under ``output_namespace``."""
    prefix = output_namespace.rstrip("/") + "/" if output_namespace else ""
    return prefix + name


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
