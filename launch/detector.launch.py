"""Launch the dense_ood_ros detector node with the package's parameter file.

Examples::

    ros2 launch dense_ood_ros detector.launch.py camera_topic:=/camera/image_raw
    ros2 launch dense_ood_ros detector.launch.py params_file:=/path/to/my_detector.yaml
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory("dense_ood_ros"), "config",
                                  "detector.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="ROS 2 parameter file of the detector node"),
        DeclareLaunchArgument("camera_topic", default_value="image",
                              description="camera image topic the detector subscribes to"),
        Node(
            package="dense_ood_ros",
            executable="detector",
            name="detector",
            output="screen",
            parameters=[LaunchConfiguration("params_file")],
            remappings=[("image", LaunchConfiguration("camera_topic"))],
        ),
    ])
