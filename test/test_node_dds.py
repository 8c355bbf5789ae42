"""The detector node over real DDS, its parameters, params file and launch file.

The node runs in its own process, this process is the camera and the listener.
"""

import importlib.util
import py_compile
import re
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="the ROS 2 Python client library (rclpy) is not installed")

import cv2  # noqa: E402
import hostile_images  # noqa: E402
import yaml  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from dense_ood_ros.classes import NUM_CLASSES, colorize  # noqa: E402
from dense_ood_ros.detector import Detector  # noqa: E402
from dense_ood_ros.ros import COLOR_TOPIC, LABELS_TOPIC, SCORE_TOPIC, output_topic  # noqa: E402
from dense_ood_ros.ros.client import (DetectorClient, detector_command,  # noqa: E402
                                      start_detector, stop_detector)
from dense_ood_ros.ros.conversions import (DEFAULT_MAX_INPUT_PIXELS,  # noqa: E402
                                           image_to_numpy, numpy_to_compressed, numpy_to_image)
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


COMPRESSED_TOPIC = "dds_test/compressed_camera/image/compressed"
COMPRESSED_NAMESPACE = "dds_test/compressed"


@pytest.fixture(scope="module")
def compressed_node(ros_context, model_path, tmp_path_factory):
    """Start a second node: CompressedImage input, no colour output, a 192x256 model input."""
    parameters = {"model_path": str(model_path), "camera_topic": COMPRESSED_TOPIC,
                  "compressed": True, "publish_color": False, "input_size": [192, 256],
                  "output_namespace": COMPRESSED_NAMESPACE}
    log_path = tmp_path_factory.mktemp("compressed_node") / "node.log"
    with log_path.open("w") as log:
        process = start_detector(parameters, log=log)
        try:
            with DetectorClient(COMPRESSED_TOPIC, COMPRESSED_NAMESPACE, with_color=False,
                                compressed=True, detector_process=process, context=ros_context,
                                node_name="dds_test_compressed_client") as client:
                try:
                    client.wait_until_connected(STARTUP_TIMEOUT_S)
                except (TimeoutError, RuntimeError) as exc:
                    pytest.fail(f"{exc}\nnode log:\n{log_path.read_text()}")
                yield SimpleNamespace(process=process, client=client, log_path=log_path)
        finally:
            exit_code = stop_detector(process)
    assert exit_code == 0, log_path.read_text()


def test_compressed_input_without_colour_output(compressed_node, camvid_frame):
    client = compressed_node.client
    assert client.node.count_publishers(f"/{COMPRESSED_NAMESPACE}/{COLOR_TOPIC}") == 0
    msg = numpy_to_compressed(camvid_frame, "jpeg", stamped_header(1_700_000_004, "jpeg_camera"))
    try:
        reply = client.request(msg, timeout_s=STARTUP_TIMEOUT_S)
    except (TimeoutError, RuntimeError) as exc:
        pytest.fail(f"{exc}\nnode log:\n{compressed_node.log_path.read_text()}")
    for msg in reply.outputs.values():
        assert (msg.height, msg.width, msg.header.frame_id) == (360, 480, "jpeg_camera")
    assert "input 192x256" in compressed_node.log_path.read_text()


# --- hostile input (issue 17): no message stops the node, each is counted, none answered ---

@contextmanager
def watching(client, output_namespace):
    """Collect the detector's diagnostics and the header stamps of all its outputs."""
    statuses, output_stamps = [], set()
    subscriptions = [client.node.create_subscription(
        DiagnosticArray, "/diagnostics", lambda msg: statuses.extend(
            s for s in msg.status if s.hardware_id == "/detector"), 10)]
    subscriptions += [client.node.create_subscription(
        Image, output_topic(output_namespace, name), lambda msg: output_stamps.add(
            (msg.header.stamp.sec, msg.header.stamp.nanosec)), QoSProfile(depth=10))
        for name in client.output_names]
    try:
        yield statuses, output_stamps
    finally:
        for subscription in subscriptions:
            client.node.destroy_subscription(subscription)


def survive(node, statuses, output_stamps, bad_msg, reason, good_msg) -> int:
    """Send ``bad_msg`` until /diagnostics counts it, then have ``good_msg`` answered.

    The count must come with an ERROR status whose message matches ``reason`` (a regex); the
    node must still run, and nothing may have been published with ``bad_msg``'s stamp.
    Returns the bad frames counted so far.
    """
    client = node.client
    _, values = wait_for_status(client, statuses, lambda s, v: True, 10.0)
    before = int(values["bad_frames"])
    # (a copy of the previous good frame, re-sent while its answer was awaited, may come
    # between: the bad frame is re-sent until a status shows it as the latest frame)
    _, values = wait_for_status(
        client, statuses, lambda s, v: (int(v["bad_frames"]) > before
                                        and s.level == DiagnosticStatus.ERROR
                                        and re.search(reason, s.message) is not None),
        20.0, publish=lambda: client.camera_publisher.publish(bad_msg))
    client.request(good_msg, timeout_s=30.0)
    assert node.process.poll() is None
    stamp = (bad_msg.header.stamp.sec, bad_msg.header.stamp.nanosec)
    assert stamp not in output_stamps, "outputs were published for a bad frame"
    return int(values["bad_frames"])


def assert_quiet_log(log_path: Path, bad_frames: int) -> None:
    """No traceback, no codec line of libpng/libjpeg, and bad-frame lines rate limited."""
    lines = log_path.read_text().splitlines()
    assert not [line for line in lines if "Traceback" in line]
    assert not [line for line in lines if line.startswith(("libpng", "Corrupt JPEG",
                                                           "Premature end"))]
    logged = [line for line in lines if "bad frame on" in line]
    assert 1 <= len(logged) < bad_frames


@pytest.mark.slow
def test_hostile_compressed_messages_are_counted_and_the_next_frame_is_answered(
        compressed_node, camvid_frame):
    """Each message of issue 17 items 1-3 that killed, bloated or fooled the node."""
    jpeg = hostile_images.jpeg_bytes(cv2.resize(camvid_frame, (240, 180)))
    limit = f"over the limit of {DEFAULT_MAX_INPUT_PIXELS} pixels \\(max_input_pixels\\)"
    hostile = [
        ("jpeg", b"", "'jpeg' compressed image has no data"),
        ("png", b"", "'png' compressed image has no data"),
        ("png", hostile_images.png_claiming(40000, 40000), f"PNG image of 40000x40000 .*{limit}"),
        ("jpeg", hostile_images.jpeg_claiming(jpeg, 65000, 65000),
         f"JPEG image of 65000x65000 .*{limit}"),
        ("png", hostile_images.png_claiming(10000, 10000), f"PNG image of 10000x10000 .*{limit}"),
        ("jpeg", hostile_images.jpeg_claiming(jpeg, 20000, 20000),
         f"JPEG image of 20000x20000 .*{limit}"),
        *[("jpeg", data, "truncated JPEG|JPEG decoder: Corrupt JPEG data")
          for data in hostile_images.corrupt_jpegs(jpeg).values()],
        ("png", hostile_images.png_bytes(camvid_frame)[:5000], "truncated PNG"),
        ("jpeg", b"GIF89a" + bytes(64), "unknown compressed image data"),
    ]
    good = numpy_to_compressed(camvid_frame, "jpeg")
    sec = 1_700_001_000
    with watching(compressed_node.client, COMPRESSED_NAMESPACE) as (statuses, output_stamps):
        for image_format, data, reason in hostile:
            bad = CompressedImage(header=stamped_header(sec), format=image_format, data=data)
            good.header = stamped_header(sec + 1)
            bad_frames = survive(compressed_node, statuses, output_stamps, bad, reason, good)
            sec += 2
    assert bad_frames >= len(hostile)
    assert_quiet_log(compressed_node.log_path, bad_frames)


@pytest.mark.slow
def test_hostile_raw_messages_are_counted_and_the_next_frame_is_answered(
        detector_node, client, camvid_frame):
    """Images without pixels (bgr8/mono8 killed the node), a claimed 40000^2, a non-camera one."""
    hostile = [(Image(height=height, width=width, encoding=encoding, step=step),
                f"{encoding} image is empty")
               for height, width, encoding, step in hostile_images.empty_raw_images().values()]
    hostile += [
        (Image(height=40000, width=40000, encoding="bgr8", step=120000),
         f"bgr8 image of 40000x40000 = 1600000000 pixels is over the limit of "
         f"{DEFAULT_MAX_INPUT_PIXELS} pixels"),
        (numpy_to_image(np.zeros((4, 4), np.float32), "32FC1"),
         "unsupported camera image encoding '32FC1'; supported: rgb8, bgr8, mono8$"),
    ]
    good = numpy_to_image(cv2.resize(camvid_frame, (240, 180)), "rgb8")
    sec = 1_700_002_000
    node = SimpleNamespace(process=detector_node.process, client=client)
    with watching(client, OUTPUT_NAMESPACE) as (statuses, output_stamps):
        for bad, reason in hostile:
            bad.header = stamped_header(sec)
            good.header = stamped_header(sec + 1)
            bad_frames = survive(node, statuses, output_stamps, bad, reason, good)
            sec += 2
    assert_quiet_log(detector_node.log_path, bad_frames)


# --- SIGINT and SIGTERM at any moment: exit code 0, no traceback ---

def stopped_cleanly(process: subprocess.Popen, log_path: Path, signum: int) -> str:
    """Signal the node, wait for it, check exit code 0 and a clean log; return the log."""
    process.send_signal(signum)
    try:
        exit_code = process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"the node did not stop on {signal.Signals(signum).name}:\n"
                    f"{log_path.read_text()}")
    log = log_path.read_text()
    assert exit_code == 0, f"exit code {exit_code}:\n{log}"
    for sign in ("Traceback", "KeyboardInterrupt", "context is invalid", "Failed to publish"):
        assert sign not in log, log
    return log


def wait_for_log(process: subprocess.Popen, log_path: Path, text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in log_path.read_text():
        assert process.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n{log_path.read_text()}"
        time.sleep(0.02)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("moment", ["importing", "loading the model"])
def test_a_signal_during_start_up_exits_with_code_0(model_path, tmp_path, signum, moment):
    log_path = tmp_path / "node.log"
    with log_path.open("w") as log:
        process = start_detector({"model_path": str(model_path),
                                  "camera_topic": "dds_test/start_up/image"}, log=log)
        if moment == "importing":  # torch, rclpy: seconds
            time.sleep(0.3)
        else:
            wait_for_log(process, log_path, f"loading {model_path}", STARTUP_TIMEOUT_S)
        log_text = stopped_cleanly(process, log_path, signum)
    if moment == "importing":
        assert log_text == ""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_mid_stream_exits_with_code_0(ros_context, model_path, camvid_frame, tmp_path,
                                               signum):
    """A camera faster than the node, so a frame is always being processed when it comes."""
    topic, namespace = "dds_test/stream/image", "dds_test/stream"
    log_path = tmp_path / "node.log"
    with log_path.open("w") as log:
        process = start_detector({"model_path": str(model_path), "camera_topic": topic,
                                  "output_namespace": namespace}, log=log)
        try:
            with DetectorClient(topic, namespace, detector_process=process, context=ros_context,
                                node_name="dds_test_stream_client") as client:
                client.wait_until_connected(STARTUP_TIMEOUT_S)
                frame = numpy_to_image(camvid_frame, "rgb8", stamped_header(1_700_003_000))
                client.request(frame, timeout_s=STARTUP_TIMEOUT_S)  # the model is loaded
                answered = len(log_path.read_text())
                for index in range(1, 40):  # 20 Hz for 2 s
                    frame.header = stamped_header(1_700_003_000 + index)
                    client.camera_publisher.publish(frame)
                    client.executor.spin_once(timeout_sec=0.05)
                log_text = stopped_cleanly(process, log_path, signum)
        finally:
            if process.poll() is None:
                process.kill()
    assert f"{signal.Signals(signum).name}: stopping" in log_text[answered:]


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
    ("input_size", [7, 9], "integers of at least 32 \\(the encoder's stride\\)"),
    ("input_size", [360, 31], "integers of at least 32"),
    ("camera_topic", "", "must not be empty"),
    ("camera_topic", "bad topic!", "not a valid ROS topic name: .*must not contain characters"),
    ("camera_topic", "camera//image", "not a valid ROS topic name: .*repeated '/'"),
    ("camera_topic", "{bad}/image", "not a valid ROS topic name: .*unknown substitution"),
    ("output_namespace", "a b", "not a valid ROS topic name: .*must not contain characters"),
    ("output_namespace", "1st", "not a valid ROS topic name: .*must not start with a number"),
    ("max_input_pixels", 0, "must be at least 1"),
    ("max_input_pixels", 1.5, "must be of type int"),
    ("compressed", "yes", "must be of type bool"),
    ("qos_depth", 0, "must be at least 1"),
    ("qos_depth", True, "must be of type int"),
])
def test_bad_parameters_are_named(model_path, name, value, problem):
    with pytest.raises(NodeConfigError, match=f"parameter '{name}' = .*{problem}"):
        validate_parameters({**DEFAULTS, "model_path": str(model_path), name: value})


@pytest.mark.parametrize("content", [b"not a checkpoint", b"some text\nmore text\n", b""])
def test_unloadable_model_is_a_model_path_error(tmp_path, content):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(content)
    settings = validate_parameters({**DEFAULTS, "model_path": str(broken)})
    # a text file made torch.load say "IndexError: pop from empty list"
    with pytest.raises(NodeConfigError, match=f"parameter 'model_path' = '{broken}': cannot read "
                                              f"checkpoint {broken}: not a PyTorch checkpoint"):
        load_detector(settings)


@pytest.mark.parametrize("name, value", [("camera_topic", "bad topic!"), ("input_size", [7, 9])])
def test_the_node_names_a_bad_parameter_without_a_traceback(model_path, name, value):
    result = subprocess.run(detector_command({"model_path": str(model_path), name: value}),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"cannot start: parameter '{name}' = {value!r}" in result.stderr
    assert "Traceback" not in result.stderr


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
    assert settings.max_input_pixels == DEFAULT_MAX_INPUT_PIXELS == 4096 * 3072


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


def test_any_failure_of_one_frame_is_a_counted_bad_frame(ros_context, model_path):
    """The callback's last line of defence, in this process: a backend raising mid-run."""
    from rclpy.parameter import Parameter

    from dense_ood_ros.ros.node import DetectorNode

    node = DetectorNode(context=ros_context, parameter_overrides=[
        Parameter("model_path", value=str(model_path)),
        Parameter("camera_topic", value="dds_test/in_process/image"),
        Parameter("output_namespace", value="dds_test/in_process")])
    published = []
    try:
        node.loader.join(STARTUP_TIMEOUT_S)
        assert node.detector is not None, node.load_error
        for publisher in (node.labels_publisher, node.color_publisher, node.score_publisher):
            publisher.publish = published.append

        def failing_backend(rgb):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

        node.detector = failing_backend
        frame = numpy_to_image(np.zeros((40, 60, 3), np.uint8), "rgb8", stamped_header(5))
        node._on_image(frame)
        assert (node.stats.bad, node.stats.processed, published) == (1, 0, [])
        assert node.stats.last_error == ("RuntimeError: CUDA error: an illegal memory access "
                                         "was encountered")
        node.detector = Detector.from_model(model_path, input_size=(64, 96))
        node._on_image(frame)
        assert (node.stats.bad, node.stats.processed, len(published)) == (1, 1, 3)
    finally:
        node.destroy_node()
