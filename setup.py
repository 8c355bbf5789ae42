"""ament_python package setup: ``colcon build`` in a ROS 2 workspace, or ``pip install -e .``."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "dense_ood_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    # the built-in dataset descriptions: label sets of old checkpoints are read from them
    package_data={PACKAGE: ["datasets/*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        # every file: the node's parameters and the Fast DDS large-data profile
        (f"share/{PACKAGE}/config", glob("config/*")),
        (f"share/{PACKAGE}/models", glob("models/*")),
        (f"share/{PACKAGE}/demo", glob("demo/*")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="dense_ood_ros developers",
    maintainer_email="dev@dense-ood-ros.invalid",
    description=("Road-scene segmentation with dense "
                 "out-of-distribution scores (NFlowJS) for ROS 2"),
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "detector = dense_ood_ros.ros.detector_main:main",
            "dense-ood-demo = dense_ood_ros.ros.demo:main",
            "dense-ood-evaluate = dense_ood_ros.evaluate:main",
            "dense-ood-export = dense_ood_ros.export:main",
            "dense-ood-benchmark = dense_ood_ros.benchmark:main",
            "dense-ood-stream-benchmark = dense_ood_ros.ros.stream_benchmark:main",
            "dense-ood-make-bag = dense_ood_ros.replay.make_bag:main",
            "dense-ood-replay = dense_ood_ros.ros.replay.command:main",
        ],
    },
)
