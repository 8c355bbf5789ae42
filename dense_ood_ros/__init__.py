"""dense_ood_ros: road-scene segmentation with dense out-of-distribution scores (NFlowJS).

The core (models, scores, backends, metrics, detector) imports no ROS; ``dense_ood_ros.ros``
is the thin rclpy adapter.
"""

__version__ = "0.1.0"
