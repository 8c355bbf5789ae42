"""The docstring check of the whole repository, as ``ros2 pkg create`` ships it for ament_python.

ament_pep257 runs it where it is installed (a full ROS 2 install), pydocstyle from PyPI
otherwise. Both check the codes that the ``[pydocstyle]`` section of setup.cfg selects, on the
files it matches (ament_pep257 is given the same codes and the same excluded folders).
"""

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SETUP_CFG = REPO_ROOT / "setup.cfg"


def _ament_pep257_argv():
    """Return ament_pep257's arguments for the checks that setup.cfg configures."""
    config = configparser.ConfigParser(interpolation=None)
    config.read(SETUP_CFG)
    pydocstyle = config["pydocstyle"]
    excluded = [str(REPO_ROOT / name.strip())
                for name in config["flake8"]["extend-exclude"].split(",") if name.strip()]
    return [".", "--convention", pydocstyle["convention"],
            "--add-ignore", pydocstyle["add-ignore"], "--exclude", *excluded]


@pytest.mark.linter
@pytest.mark.pep257
def test_pep257(monkeypatch):
    """Every docstring of the repository passes pydocstyle."""
    try:
        from ament_pep257.main import main
    except ImportError:
        main = None
    if main is not None:
        monkeypatch.chdir(REPO_ROOT)
        rc = main(argv=_ament_pep257_argv())
        assert rc == 0, "Found code style errors / warnings (printed above)"
        return
    result = subprocess.run([sys.executable, "-m", "pydocstyle", f"--config={SETUP_CFG}", "."],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (f"pydocstyle exited with {result.returncode}:\n"
                                    f"{result.stdout}{result.stderr}")
