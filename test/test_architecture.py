"""The layering rules of the code base, checked on the source.

No import circles, rclpy only under ``dense_ood_ros/ros/``, no training code in the installed
package, and every module importable on its own.
"""

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dense_ood_ros", "training")
#: Top-level modules that only a ROS install (or the ROS 2 wheels) provides.
ROS_MODULES = {"rclpy", "rcl_interfaces", "sensor_msgs", "std_msgs", "diagnostic_msgs",
               "builtin_interfaces", "launch", "launch_ros", "ament_index_python"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> Dict[str, Path]:
    return {_module_name(path): path for package in PACKAGES
            for path in sorted((ROOT / package).rglob("*.py"))}


def _imports(module: str, path: Path, known: Set[str]) -> Set[str]:
    """Every module ``module`` imports, at any depth of its code (function-level imports too)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}".rstrip(".")
            for alias in node.names:  # ``from package import module`` imports the module
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return found


@pytest.fixture(scope="module")
def graph() -> Dict[str, Set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan), i.e. import circles."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


def _reachable(graph: Dict[str, Set[str]], start: str) -> Set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        for target in graph.get(node, ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_the_graph_walker_sees_real_imports(graph):
    assert "dense_ood_ros.onnx_graph" in graph["dense_ood_ros.backends.onnxruntime_backend"]
    assert "dense_ood_ros.backends.registry" in graph["dense_ood_ros.backends"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_there_are_no_import_circles(graph):
    assert _cycles(graph) == []


def test_only_the_ros_adapter_reaches_rclpy(graph):
    offenders = {}
    for module in graph:
        if module.startswith("dense_ood_ros.ros") or not module.startswith("dense_ood_ros"):
            continue
        ros = {target.split(".")[0] for target in _reachable(graph, module)} & ROS_MODULES
        if ros:
            offenders[module] = sorted(ros)
    assert offenders == {}


def test_the_package_never_imports_training(graph):
    offenders = {module: sorted(t for t in targets if t.split(".")[0] == "training")
                 for module, targets in graph.items() if module.startswith("dense_ood_ros")}
    assert {module: targets for module, targets in offenders.items() if targets} == {}


def test_every_core_module_imports_alone_without_rclpy():
    """Import each module of the ROS-free core first in a fresh interpreter.

    No circle breaks it, and rclpy is never loaded.
    """
    core = [name for name in _modules() if name.startswith("dense_ood_ros")
            and not name.startswith("dense_ood_ros.ros")]
    script = ("import importlib, sys\n"
              "for name in sys.argv[1:]:\n"
              "    for loaded in [m for m in sys.modules"
              " if m.startswith(('dense_ood_ros', 'training'))]:\n"
              "        del sys.modules[loaded]\n"
              "    importlib.import_module(name)\n"
              "    assert 'rclpy' not in sys.modules, name\n"
              "print('imported', len(sys.argv) - 1)\n")
    result = subprocess.run([sys.executable, "-c", script, *core], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"imported {len(core)}" in result.stdout


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_replay_wing_flows_down_from_its_runners(graph):
    """Bags, ground truth, results and the report reach nothing of ``dense_ood_ros.ros``.

    And the two runners stand side by side: the live one takes nothing from the offline one.
    """
    wing = [module for module in graph if _in(module, "dense_ood_ros.replay")]
    assert "dense_ood_ros.replay.report" in wing
    upward = {module: sorted(t for t in _reachable(graph, module) if _in(t, "dense_ood_ros.ros"))
              for module in wing}
    assert {module: targets for module, targets in upward.items() if targets} == {}
    assert "dense_ood_ros.ros.replay.offline" not in _reachable(graph,
                                                                "dense_ood_ros.ros.replay.live")
