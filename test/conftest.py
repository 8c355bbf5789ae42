"""Shared fixtures.

A private DDS domain, the CamVid data, a few CamVid-Paste frames, the shipped model, an rclpy
context; and, through the ``_fixtures_backends`` plugin, the exported-model fixtures of the
export, backend, engine-cache and benchmark tests.
"""

import os
import random
from pathlib import Path

import pytest

#: Fixtures shared by several test modules, without importing them by name into each module.
pytest_plugins = ["_fixtures_backends"]

REPO_ROOT = Path(__file__).resolve().parents[1]
CAMVID_DIR = REPO_ROOT.parent / "shared" / "data" / "camvid"
DEFAULT_MODEL = REPO_ROOT / "models" / "default.pt"
#: A CamVid test frame (480x360) used by the detector and node tests.
CAMVID_TEST_FRAME = "test/Seq05VD_f02130"


@pytest.fixture(scope="session", autouse=True)
def ros_domain_id() -> int:
    """Choose this session's DDS domain.

    It is in os.environ before any rclpy.init and inherited by child processes, so concurrent
    test runs never see each other. An explicit ROS_DOMAIN_ID (scripts/test.sh picks a random
    one) is kept.
    """
    domain_id = int(os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100))))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return domain_id


@pytest.fixture(scope="session")
def ros_context(ros_domain_id):
    """Initialise an rclpy context for the test process (no signal handlers).

    Its participants use the package's Fast DDS large-data profile, as the node does.
    """
    from dense_ood_ros.ros.client import init_client_context, use_large_data_profile

    use_large_data_profile()
    context = init_client_context()
    yield context
    context.try_shutdown()


@pytest.fixture(scope="session")
def camvid_dir() -> Path:
    if not (CAMVID_DIR / "test").is_dir():
        pytest.skip(f"CamVid data not found at {CAMVID_DIR} (expected "
                    "beside the repo as ../shared/data/camvid)")
    return CAMVID_DIR


@pytest.fixture(scope="session")
def camvid_frame(camvid_dir):
    """Read a real CamVid test frame, RGB uint8 360x480x3 (lossless WebP or PNG)."""
    from dense_ood_ros.io import read_rgb

    for suffix in (".webp", ".png"):
        path = camvid_dir / (CAMVID_TEST_FRAME + suffix)
        if path.is_file():
            return read_rgb(path)
    pytest.skip(f"CamVid frame {CAMVID_TEST_FRAME}.webp/.png not found in {camvid_dir}")


@pytest.fixture(scope="session")
def model_path() -> Path:
    """Return the shipped model checkpoint (predictions are not assumed to be any good)."""
    assert DEFAULT_MODEL.is_file(), f"the shipped model checkpoint {DEFAULT_MODEL} is missing"
    return DEFAULT_MODEL


@pytest.fixture(scope="session")
def camvid_paste_frames(tmp_path_factory) -> Path:
    """Three CamVid-Paste test frames (images/, labels/, semantic/, manifest.json), seed 0."""
    from training.data import camvid_paste

    if not (CAMVID_DIR.is_dir() and camvid_paste.DEFAULT_COCO.is_dir()):
        pytest.skip("needs ../shared/data/camvid and ../shared/data/coco128_panoptic")
    out = tmp_path_factory.mktemp("camvid_paste")
    camvid_paste.generate("test", out, seed=0, limit=3, root=CAMVID_DIR, progress=False)
    return out


@pytest.fixture(scope="session")
def colcon_install(tmp_path_factory):
    """Build this package with colcon into a temporary workspace, as a ROS user installs it.

    Returns the install prefix, its share and lib folders and the environment that sourcing
    ``install/setup.bash`` gives (without any Fast DDS profile variable: the installed code
    must find its own).
    """
    import subprocess
    import sys
    from types import SimpleNamespace

    colcon = Path(sys.executable).parent / "colcon"
    assert colcon.is_file(), (f"colcon is not installed beside {sys.executable} "
                              "(requirements.txt: colcon-common-extensions)")
    workspace = tmp_path_factory.mktemp("colcon_ws")
    (workspace / "src").mkdir()
    (workspace / "src" / "dense_ood_ros").symlink_to(REPO_ROOT)
    build = subprocess.run([str(colcon), "build", "--packages-select", "dense_ood_ros"],
                           cwd=workspace, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, f"colcon build failed:\n{build.stdout}\n{build.stderr}"
    sourced = subprocess.run(["bash", "-c", "source install/setup.bash && env -0"],
                             cwd=workspace, capture_output=True, text=True, check=True)
    env = dict(item.split("=", 1) for item in sourced.stdout.split("\0") if "=" in item)
    for name in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE"):
        env.pop(name, None)
    prefix = workspace / "install" / "dense_ood_ros"
    return SimpleNamespace(prefix=prefix, share=prefix / "share" / "dense_ood_ros",
                           lib=prefix / "lib" / "dense_ood_ros", env=env)
