"""The package installed the ROS way: ``colcon build``, then run from ``install/``.

The build itself is the session fixture ``colcon_install`` (conftest.py); the installed node
answering camera-sized frames over DDS is in test_node_dds.py, beside the source-tree node.
"""

import ast
import subprocess
from pathlib import Path

import pytest

from dense_ood_ros.ros import SHARE_FILES

REPO_ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO_ROOT / "launch" / "detector.launch.py"
COMMANDS = ("dense-ood-benchmark", "dense-ood-demo", "dense-ood-evaluate", "dense-ood-export",
            "dense-ood-make-bag", "dense-ood-replay", "dense-ood-stream-benchmark")


def _literal_paths(tree: ast.AST, is_lookup) -> set:
    """Return the share paths of the calls ``is_lookup`` accepts, from their literal arguments.

    A name argument is the share folder itself (``share``) or a string constant of
    ``dense_ood_ros.ros``; anything else reads as ``?``.
    """
    import dense_ood_ros.ros as ros

    def part(arg):
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value
        if isinstance(arg, ast.Name):
            return "" if arg.id == "share" else str(getattr(ros, arg.id, "?"))
        return "?"

    return {"/".join(p for p in map(part, node.args) if p) for node in ast.walk(tree)
            if isinstance(node, ast.Call) and is_lookup(node)}


def _calls(name: str):
    return lambda node: getattr(node.func, "id", getattr(node.func, "attr", None)) == name


def code_share_paths() -> set:
    """Every share path the code asks for: package_path calls, the launch file's lookups."""
    paths = set()
    for source in sorted((REPO_ROOT / "dense_ood_ros").rglob("*.py")):
        tree = ast.parse(source.read_text())
        if source.name == "__init__.py" and source.parent.name == "ros":
            continue  # package_path's own definition
        paths |= _literal_paths(tree, _calls("package_path"))
    launch = ast.parse(LAUNCH_FILE.read_text())
    joins = {path for path in _literal_paths(
        launch, lambda node: _calls("join")(node) and node.args
        and isinstance(node.args[0], ast.Name) and node.args[0].id == "share")}
    return paths | joins


def test_the_code_reads_only_listed_share_files():
    from dense_ood_ros.ros import FASTDDS_PROFILE_FILE

    paths = code_share_paths()
    assert "?" not in "".join(paths), f"a share lookup the test cannot read: {paths}"
    assert paths | {FASTDDS_PROFILE_FILE} <= set(SHARE_FILES) | {"launch/detector.launch.py"}, \
        f"add to dense_ood_ros.ros.SHARE_FILES: {sorted(paths - set(SHARE_FILES))}"
    assert {"models/default.pt", "config/detector.yaml", "config/fastdds_large_data.xml"} <= paths


def test_the_install_holds_every_share_file_and_the_dataset_descriptions(colcon_install):
    missing = [path for path in SHARE_FILES if not (colcon_install.share / path).exists()]
    assert not missing, f"colcon install lacks {missing} under {colcon_install.share}"
    sources = sorted(p.name for p in (REPO_ROOT / "dense_ood_ros" / "datasets").glob("*.yaml"))
    installed = sorted(p.name for p in
                       colcon_install.prefix.rglob("dense_ood_ros/datasets/*.yaml"))
    assert sources and installed == sources


def test_the_installed_code_finds_its_files_in_share(colcon_install):
    probe = ("from dense_ood_ros.ros import package_path; import dense_ood_ros; "
             "from dense_ood_ros.ros.client import FASTDDS_PROFILE, large_data_environment; "
             "print(dense_ood_ros.__file__); print(package_path('models', 'default.pt')); "
             "print(large_data_environment()['FASTDDS_DEFAULT_PROFILES_FILE'])")
    python = colcon_install.lib / "detector"
    interpreter = python.read_text().splitlines()[0][2:].strip()
    result = subprocess.run([interpreter, "-c", probe], env=colcon_install.env, cwd="/",
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    module, model, profile = result.stdout.split()
    assert Path(module).is_relative_to(colcon_install.prefix), "imported the source tree"
    assert Path(model) == colcon_install.share / "models" / "default.pt"
    assert Path(profile) == colcon_install.share / "config" / "fastdds_large_data.xml"
    assert "not found" not in result.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_each_installed_command_answers_help(colcon_install, command):
    result = subprocess.run([str(colcon_install.lib / command), "--help"], env=colcon_install.env,
                            cwd="/", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout and "Writes:" in result.stdout
