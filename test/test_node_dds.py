"""The detector node over real DDS, its parameters, params file and launch file.

The node runs in its own process, this process is the camera and the listener.
"""

import importlib.util
import py_compile
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="the ROS 2 Python client library (rclpy) is not installed")

import cv2  # noqa: E402
import yaml  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from dense_ood_ros.classes import NUM_CLASSES, colorize  # noqa: E402
from dense_ood_ros.detector import Detector  # noqa: E402
from dense_ood_ros.ros import COLOR_TOPIC, LABELS_TOPIC, SCORE_TOPIC  # noqa: E402
from dense_ood_ros.ros.client import (DetectorClient, detector_command,  # noqa: E402
                                      start_detector, stop_detector)
from dense_ood_ros.ros.conversions import (image_to_numpy, numpy_to_compressed,  # noqa: E402
                                           numpy_to_image)
from dense_ood_ros.ros.node import (PARAMETERS, NodeConfigError, load_detector,  # noqa: E402
                                    validate_parameters)

pytestmark = pytest.mark.ros

REPO_ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = REPO_ROOT / "config" / "detector.yaml"
LAUNCH_FILE = REPO_ROOT / "launch" / "detector.launch.py"
CAMERA_TOPIC = "dds_test/camera/image"
OUTPUT_NAMESPACE = "dds_test/dense_ood"
#: The first answer includes the node's start-up (imports, model load) on busy cores.
STARTUP_TIMEOUT_S = 60.0
DEFAULTS = {name: default for name, (default, _) in PARAMETERS.items()}


@pytest.fixture(scope="module")
def detector_node(model_path, tmp_path_factory):
    """Start the detector node as a child process, configured by the params file + -p overrides."""
    log_path = tmp_path_factory.mktemp("detector_node") / "node.log"
    parameters = {"model_path": str(model_path), "camera_topic": CAMERA_TOPIC,
                  "output_namespace": OUTPUT_NAMESPACE}
    with log_path.open("w") as log:
        process = start_detector(parameters, params_file=PARAMS_FILE, log=log)
        yield SimpleNamespace(process=process, log_path=log_path)
        exit_code = stop_detector(process)
    assert exit_code == 0, (f"the node did not stop cleanly (exit code {exit_code}):\n"
                            f"{log_path.read_text()}")


@pytest.fixture(scope="module")
def client(ros_context, detector_node):
    with DetectorClient(CAMERA_TOPIC, OUTPUT_NAMESPACE, detector_process=detector_node.process,
                        context=ros_context, node_name="dds_test_client") as client:
        try:
            client.wait_until_connected(STARTUP_TIMEOUT_S)
        except (TimeoutError, RuntimeError) as exc:
            pytest.fail(f"{exc}\nnode log:\n{detector_node.log_path.read_text()}")
        yield client


def stamped_header(sec: int, frame_id: str = "dds_test_camera") -> Header:
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = sec, 123456789
    return header


def test_outputs_match_the_detector_and_carry_the_input_header(client, camvid_frame, model_path):
    header = stamped_header(1_700_000_000)
    reply = client.request(numpy_to_image(camvid_frame, "bgr8", header),
                           timeout_s=STARTUP_TIMEOUT_S)
    outputs = reply.outputs
    assert {name: msg.encoding for name, msg in outputs.items()} == {
        LABELS_TOPIC: "mono8", COLOR_TOPIC: "rgb8", SCORE_TOPIC: "32FC1"}
    for msg in outputs.values():
        assert (msg.height, msg.width) == (360, 480)
        assert msg.header.frame_id == "dds_test_camera"
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1_700_000_000, 123456789)
    labels, score = image_to_numpy(outputs[LABELS_TOPIC]), image_to_numpy(outputs[SCORE_TOPIC])
    assert int(labels.max()) < NUM_CLASSES
    assert np.isfinite(score).all()
    np.testing.assert_array_equal(image_to_numpy(outputs[COLOR_TOPIC]), colorize(labels))
    # Same results as the detector in this process: the bgr8 frame reached the model as RGB.
    expected = Detector.from_model(model_path)(camvid_frame)
    assert np.mean(labels == expected.labels) > 0.99
    assert np.abs(score - expected.score).mean() < 1e-3


def test_outputs_have_the_size_of_a_non_native_input(client, camvid_frame):
    frame = cv2.resize(camvid_frame, (320, 240), interpolation=cv2.INTER_AREA)
    reply = client.request(numpy_to_image(frame, "rgb8", stamped_header(1_700_000_001)),
                           timeout_s=30.0)
    for msg in reply.outputs.values():
        assert (msg.height, msg.width) == (240, 320)


def wait_for_status(client, statuses, condition, timeout_s, publish=None):
    """Spin until a DiagnosticStatus received from now on meets ``condition``.

    ``publish`` is called meanwhile. Statuses already in ``statuses`` describe an earlier state
    and are not considered.
    """
    first_new = len(statuses)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if publish is not None:
            publish()
        for _ in range(10):
            client.spin_once()
        for status in statuses[first_new:]:
            if condition(status, {kv.key: kv.value for kv in status.values}):
                return status, {kv.key: kv.value for kv in status.values}
    raise AssertionError(f"no matching diagnostics within {timeout_s} s; last: "
                         f"{statuses[-1:] or 'none'}")


def test_bad_frame_is_counted_and_the_node_keeps_working(client, camvid_frame, model_path):
    statuses = []
    diagnostics = client.node.create_subscription(
        DiagnosticArray, "/diagnostics", lambda msg: statuses.extend(
            s for s in msg.status if s.hardware_id == "/detector"), 10)
    bad_frame = Image(header=stamped_header(1_700_000_002), height=2, width=2, encoding="yuv422",
                      step=4, data=bytes(8))
    try:
        status, values = wait_for_status(
            client, statuses, lambda s, v: int(v["bad_frames"]) >= 1, 20.0,
            publish=lambda: client.camera_publisher.publish(bad_frame))
        assert status.level == DiagnosticStatus.ERROR and "yuv422" in status.message
        client.request(numpy_to_image(camvid_frame, "rgb8", stamped_header(1_700_000_003)),
                       timeout_s=30.0)
        status, values = wait_for_status(client, statuses,
                                         lambda s, v: s.level == DiagnosticStatus.OK, 10.0)
    finally:
        client.node.destroy_subscription(diagnostics)
    assert values["backend"].startswith("torch")
    assert values["model_path"] == str(model_path)
    assert values["camera_topic"] == "/" + CAMERA_TOPIC
    assert int(values["frames_processed"]) >= 1 and int(values["bad_frames"]) >= 1
    assert float(values["mean_latency_ms"]) > 0.0


def test_compressed_input_without_colour_output(ros_context, model_path, camvid_frame, tmp_path):
    topic = "dds_test/compressed_camera/image/compressed"
    parameters = {"model_path": str(model_path), "camera_topic": topic, "compressed": True,
                  "publish_color": False, "input_size": [192, 256],
                  "output_namespace": "dds_test/compressed"}
    log_path = tmp_path / "node.log"
    with log_path.open("w") as log:
        process = start_detector(parameters, log=log)
        try:
            with DetectorClient(topic, "dds_test/compressed", with_color=False, compressed=True,
                                detector_process=process, context=ros_context,
                                node_name="dds_test_compressed_client") as client:
                client.wait_until_connected(STARTUP_TIMEOUT_S)
                assert client.node.count_publishers("/dds_test/compressed/" + COLOR_TOPIC) == 0
                msg = numpy_to_compressed(camvid_frame, "jpeg",
                                          stamped_header(1_700_000_004, "jpeg_camera"))
                reply = client.request(msg, timeout_s=STARTUP_TIMEOUT_S)
        except (TimeoutError, RuntimeError) as exc:
            pytest.fail(f"{exc}\nnode log:\n{log_path.read_text()}")
        finally:
            exit_code = stop_detector(process)
    assert exit_code == 0, log_path.read_text()
    for msg in reply.outputs.values():
        assert (msg.height, msg.width, msg.header.frame_id) == (360, 480, "jpeg_camera")
    assert "input 192x256" in log_path.read_text()


def test_missing_model_file_stops_the_node_at_start_up(tmp_path):
    missing = tmp_path / "no_such_model.pt"
    result = subprocess.run(detector_command({"model_path": str(missing)}),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert f"parameter 'model_path' = '{missing}': model file not found" in result.stderr


def test_corrupt_model_stops_the_node_after_loading_in_the_background(tmp_path):
    """Load the model in a worker thread; its failure still ends the node with code 2.

    The message names the parameter and the file.
    """
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    result = subprocess.run(detector_command({"model_path": str(broken)}),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"cannot start: parameter 'model_path' = '{broken}'" in result.stderr


def test_diagnostics_report_loading_before_the_model_is_ready():
    from diagnostic_msgs.msg import DiagnosticStatus

    from dense_ood_ros.ros.diagnostics import FrameStatistics, detector_status

    stats = FrameStatistics()
    stats.add_dropped_while_loading()
    status = detector_status("n", "h", stats, {}, loading="building TensorRT engine (12/40)")
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == DiagnosticStatus.WARN
    assert status.message == "loading model: building TensorRT engine (12/40)"
    assert values["frames_dropped_while_loading"] == "1"
    assert detector_status("n", "h", stats, {}).message == "waiting for camera frames"


@pytest.mark.parametrize("name, value, problem", [
    ("backend", "tensorflow", "unknown backend"),
    ("score", "nonsense", "unknown anomaly score"),
    ("input_size", [360], "must be \\[height, width\\]"),
    ("input_size", [0, 480], "must be \\[height, width\\]"),
    ("input_size", "360x480", "must be \\[height, width\\]"),
    ("camera_topic", "", "must not be empty"),
    ("compressed", "yes", "must be of type bool"),
    ("qos_depth", 0, "must be at least 1"),
    ("qos_depth", True, "must be of type int"),
])
def test_bad_parameters_are_named(model_path, name, value, problem):
    with pytest.raises(NodeConfigError, match=f"parameter '{name}' = .*{problem}"):
        validate_parameters({**DEFAULTS, "model_path": str(model_path), name: value})


def test_unloadable_model_is_a_model_path_error(tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    settings = validate_parameters({**DEFAULTS, "model_path": str(broken)})
    with pytest.raises(NodeConfigError, match=f"parameter 'model_path' = '{broken}': cannot read "
                                              f"checkpoint {broken}"):
        load_detector(settings)


def test_model_the_backend_cannot_run_is_reported_with_the_parameters(tmp_path):
    not_a_checkpoint = tmp_path / "model.onnx"
    not_a_checkpoint.write_bytes(b"not a model")
    settings = validate_parameters({**DEFAULTS, "backend": "torch",
                                    "model_path": str(not_a_checkpoint)})
    with pytest.raises(NodeConfigError, match=f"'model_path' = '{not_a_checkpoint}'"):
        load_detector(settings)


def test_params_file_holds_valid_node_parameters(model_path):
    document = yaml.safe_load(PARAMS_FILE.read_text())
    parameters = document["detector"]["ros__parameters"]
    assert set(parameters) <= set(PARAMETERS)
    settings = validate_parameters({**DEFAULTS, **parameters})
    assert settings.model_path == model_path  # default: the package's models/default.pt
    assert (settings.camera_topic, settings.output_namespace,
            settings.qos_depth) == ("image", "dense_ood", 1)


def test_launch_file_compiles():
    py_compile.compile(str(LAUNCH_FILE), doraise=True)


def test_launch_file_builds_a_launch_description():
    pytest.importorskip("launch_ros",
                        reason="launch_ros is not installed (ROS 2 launch system not available)")
    from launch_ros.actions import Node

    spec = importlib.util.spec_from_file_location("detector_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    assert any(isinstance(entity, Node) for entity in description.entities)
