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


def package_path(*parts: str) -> Path:
    """A file shipped with the package: from the ament share directory when the package is
    installed in a ROS workspace, else from the source tree (e.g. ``models/default.pt``)."""
    try:
        from ament_index_python.packages import get_package_share_directory
        root = Path(get_package_share_directory(PACKAGE))
    except (ImportError, LookupError, OSError):  # not installed, or no AMENT_PREFIX_PATH
        root = _SOURCE_ROOT
    return root.joinpath(*parts)
