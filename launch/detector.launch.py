"""Launch the dense_ood_ros detector node with the package's parameter file.

Examples::

    ros2 launch dense_ood_ros detector.launch.py image:=/camera/image_raw
    ros2 launch dense_ood_ros detector.launch.py image:=/camera/compressed compressed:=true
    ros2 launch dense_ood_ros detector.launch.py namespace:=front backend:=onnxruntime
    ros2 launch dense_ood_ros detector.launch.py params_file:=/path/to/my_detector.yaml

The launch arguments backend, model_path and compressed override the parameter file.
The camera topics are remapped onto the node's private inputs (``~/input/image``,
``~/input/camera_info``); its outputs are ``<namespace>/detector/output/...``. The node runs
with the Fast DDS large-data profile (``config/fastdds_large_data.xml``) unless
FASTDDS_DEFAULT_PROFILES_FILE is already set; the camera driver needs the same profile (or
``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA``) for frames above 512 KB to arrive. A profile file
that does not exist is not set: a warning names it.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import Node

#: launch argument -> (default, description) of the node parameters the launch file exposes.
PARAMETER_ARGUMENTS = {
    "backend": ("auto", "inference backend: auto, onnxruntime, tensorrt or torch"),
    "model_path": (None, "model file: checkpoint .pt, exported .onnx or TensorRT .engine"),
    "compressed": ("false", "subscribe to sensor_msgs/CompressedImage instead of Image"),
}


def use_fastdds_profile(context):
    """Set FASTDDS_DEFAULT_PROFILES_FILE to the ``fastdds_profile`` argument if it exists."""
    profile = LaunchConfiguration("fastdds_profile").perform(context)
    if os.path.isfile(profile):
        return [SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", profile)]
    return [LogInfo(msg=f"WARNING: Fast DDS profile {profile!r} not found: "
                        "FASTDDS_DEFAULT_PROFILES_FILE not set, camera frames above ~512 KB "
                        "may be lost between processes")]


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("dense_ood_ros")
    arguments = [
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config",
                                                                        "detector.yaml"),
                              description="ROS 2 parameter file of the detector node"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of the node and its topics"),
        DeclareLaunchArgument("image", default_value="image",
                              description="camera image topic (remapped to ~/input/image)"),
        DeclareLaunchArgument("camera_info", default_value="camera_info",
                              description="camera_info topic (remapped to ~/input/camera_info)"),
        DeclareLaunchArgument("fastdds_profile",
                              default_value=EnvironmentVariable(
                                  "FASTDDS_DEFAULT_PROFILES_FILE",
                                  default_value=os.path.join(share, "config",
                                                             "fastdds_large_data.xml")),
                              description="Fast DDS XML profile of the node's participant"),
    ]
    arguments += [DeclareLaunchArgument(name, default_value=(default or os.path.join(
        share, "models", "default.pt")), description=description)
        for name, (default, description) in PARAMETER_ARGUMENTS.items()]
    return LaunchDescription(arguments + [
        OpaqueFunction(function=use_fastdds_profile),
        Node(
            package="dense_ood_ros",
            executable="detector",
            name="detector",
            namespace=LaunchConfiguration("namespace"),
            output="screen",
            parameters=[LaunchConfiguration("params_file"),
                        {name: LaunchConfiguration(name) for name in PARAMETER_ARGUMENTS}],
            remappings=[("~/input/image", LaunchConfiguration("image")),
                        ("~/input/camera_info", LaunchConfiguration("camera_info"))],
        ),
    ])
