"""Offline training of dense_ood_ros models (not installed with the ROS package)."""
