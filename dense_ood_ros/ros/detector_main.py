"""Console script ``detector``: the detector node, exiting cleanly on a signal at any moment.

SIGINT and SIGTERM are handled before the node's heavy imports (torch, rclpy: seconds on a
busy machine) start, so even a signal during start-up ends the process with code 0 and no
traceback; see :mod:`dense_ood_ros.ros.shutdown`. Unless a Fast DDS profile is set in the
environment, the package's large-data profile (``config/fastdds_large_data.xml``) is used,
so camera-sized frames arrive.
"""

import sys
from typing import List, Optional

from dense_ood_ros.ros.shutdown import exit_on_signals


def main(args: Optional[List[str]] = None) -> int:
    """Run the detector node (``--ros-args`` as for :func:`dense_ood_ros.ros.node.main`)."""
    exit_on_signals()
    from dense_ood_ros.ros.client import use_large_data_profile  # heavy: after the handlers
    from dense_ood_ros.ros.node import main as run_node

    use_large_data_profile()

    return run_node(args)


if __name__ == "__main__":
    sys.exit(main())
