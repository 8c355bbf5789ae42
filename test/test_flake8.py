"""The flake8 check of the whole repository, as ``ros2 pkg create`` ships it for ament_python.

ament_flake8 runs it where it is installed (a full ROS 2 install), flake8 from PyPI otherwise;
both read the ``[flake8]`` section of setup.cfg, so both check the same rules on the same files.
"""

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SETUP_CFG = REPO_ROOT / "setup.cfg"


@pytest.mark.flake8
@pytest.mark.linter
def test_flake8(monkeypatch):
    """Every Python file of the repository passes flake8."""
    try:
        from ament_flake8.main import main_with_errors
    except ImportError:
        main_with_errors = None
    if main_with_errors is not None:
        monkeypatch.chdir(REPO_ROOT)  # ament_flake8 looks for AMENT_IGNORE under the cwd
        rc, errors = main_with_errors(argv=["--config", str(SETUP_CFG), "."])
        assert rc == 0, (f"Found {len(errors)} code style errors / warnings:\n"
                         + "\n".join(errors))
        return
    result = subprocess.run([sys.executable, "-m", "flake8", "--config", str(SETUP_CFG), "."],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (f"flake8 exited with {result.returncode}:\n"
                                    f"{result.stdout}{result.stderr}")
