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
from rclpy.serialization import serialize_message  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from dense_ood_ros.detector import Detector  # noqa: E402
from dense_ood_ros.label_set import description_label_set  # noqa: E402
from dense_ood_ros.ros import (CAMERA_INFO_TOPIC, COLOR_TOPIC,  # noqa: E402
                               INPUT_CAMERA_INFO_TOPIC, LABELS_TOPIC, MASK_TOPIC, SCORE_TOPIC,
                               node_topic, output_topic)
from dense_ood_ros.ros.client import (DetectorClient, detector_command,  # noqa: E402
                                      start_detector, stop_detector)
from dense_ood_ros.ros.conversions import (DEFAULT_MAX_INPUT_PIXELS,  # noqa: E402
                                           image_to_numpy, numpy_to_compressed, numpy_to_image)
from dense_ood_ros.ros.node import (PARAMETERS, NodeConfigError, load_detector,  # noqa: E402
                                    validate_parameters)

CAMVID = description_label_set("camvid")

pytestmark = pytest.mark.ros

REPO_ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = REPO_ROOT / "config" / "detector.yaml"
LAUNCH_FILE = REPO_ROOT / "launch" / "detector.launch.py"
#: Each node of this module runs in its own namespace: /dds_test/detector/input/image ...
NAMESPACE = "dds_test"
#: The first answer includes the node's start-up (imports, model load) on busy cores.
STARTUP_TIMEOUT_S = 60.0
DEFAULTS = {name: default for name, (default, _) in PARAMETERS.items()}


@pytest.fixture(scope="module")
def detector_node(model_path, tmp_path_factory):
    """Start the detector node as a child process, configured by the params file + -p overrides."""
    log_path = tmp_path_factory.mktemp("detector_node") / "node.log"
    parameters = {"model_path": str(model_path)}
    with log_path.open("w") as log:
        process = start_detector(parameters, params_file=PARAMS_FILE, log=log,
                                 namespace=NAMESPACE)
        yield SimpleNamespace(process=process, log_path=log_path)
        exit_code = stop_detector(process)
    assert exit_code == 0, (f"the node did not stop cleanly (exit code {exit_code}):\n"
                            f"{log_path.read_text()}")


@pytest.fixture(scope="module")
def client(ros_context, detector_node):
    with DetectorClient(NAMESPACE, detector_process=detector_node.process,
                        context=ros_context, node_name="dds_test_client") as client:
        try:
            client.wait_until_connected(STARTUP_TIMEOUT_S)
        except (TimeoutError, RuntimeError) as exc:
            pytest.fail(f"{exc}\nnode log:\n{detector_node.log_path.read_text()}")
        yield client


#: The node installed by colcon runs in its own namespace.
INSTALLED_NAMESPACE = "dds_installed"


@pytest.fixture(scope="module")
def installed_client(ros_context, colcon_install, tmp_path_factory):
    """Run the colcon-installed ``detector`` console script from install/, as ``ros2 run`` does.

    No model path, parameter file or Fast DDS profile is given: its defaults in share/ are used.
    """
    log_path = tmp_path_factory.mktemp("installed_node") / "node.log"
    command = [str(colcon_install.lib / "detector"), "--ros-args", "--params-file",
               str(colcon_install.share / "config" / "detector.yaml"),
               "-r", f"__ns:=/{INSTALLED_NAMESPACE}"]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env=colcon_install.env, cwd="/")
        try:
            with DetectorClient(INSTALLED_NAMESPACE, detector_process=process,
                                context=ros_context, node_name="dds_installed_client") as client:
                client.wait_until_connected(STARTUP_TIMEOUT_S)
                yield client
        except (TimeoutError, RuntimeError) as exc:
            pytest.fail(f"{exc}\nnode log:\n{log_path.read_text()}")
        finally:
            exit_code = stop_detector(process)
    text = log_path.read_text()
    assert exit_code == 0, f"the installed node did not stop cleanly ({exit_code}):\n{text}"
    assert f"model {colcon_install.share / 'models' / 'default.pt'}" in text, text
    assert f"profile {colcon_install.share / 'config' / 'fastdds_large_data.xml'}" in text, text


@pytest.fixture(scope="module", params=["source tree", "colcon install"])
def any_layout_client(request, camvid_frame):
    """Give the node run from the source tree, then the colcon-installed one, model loaded.

    (Frames that arrive while the model loads are dropped by design; one answered frame shows
    it has loaded.)
    """
    client = request.getfixturevalue("client" if request.param == "source tree"
                                     else "installed_client")
    client.request(numpy_to_image(camvid_frame, "rgb8", stamped_header(1_700_003_500)),
                   timeout_s=STARTUP_TIMEOUT_S * 2)
    return client


def stamped_header(sec: int, frame_id: str = "dds_test_camera") -> Header:
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = sec, 123456789
    return header


def test_outputs_match_the_detector_and_carry_the_input_header(client, camvid_frame, model_path):
    header = stamped_header(1_700_000_000)
    reply = client.request(numpy_to_image(camvid_frame[..., ::-1], "bgr8", header),
                           timeout_s=STARTUP_TIMEOUT_S)
    outputs = reply.outputs
    assert {name: msg.encoding for name, msg in outputs.items()} == {
        LABELS_TOPIC: "mono8", COLOR_TOPIC: "rgb8", SCORE_TOPIC: "32FC1"}
    for msg in outputs.values():
        assert (msg.height, msg.width) == (360, 480)
        assert msg.header.frame_id == "dds_test_camera"
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1_700_000_000, 123456789)
    labels, score = image_to_numpy(outputs[LABELS_TOPIC]), image_to_numpy(outputs[SCORE_TOPIC])
    assert int(labels.max()) < CAMVID.num_classes
    assert np.isfinite(score).all()
    np.testing.assert_array_equal(image_to_numpy(outputs[COLOR_TOPIC]), CAMVID.colorize(labels))
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


def node_statuses(client, namespace):
    """Subscribe to /diagnostics; return the list the node's statuses are appended to."""
    statuses = []
    hardware_id = node_topic("~", namespace)  # the fully qualified node name
    subscription = client.node.create_subscription(
        DiagnosticArray, "/diagnostics", lambda msg: statuses.extend(
            s for s in msg.status if s.hardware_id == hardware_id), 10)
    return statuses, subscription


def test_bad_frame_is_counted_and_the_node_keeps_working(client, camvid_frame, model_path):
    statuses, diagnostics = node_statuses(client, NAMESPACE)
    bad_frame = Image(header=stamped_header(1_700_000_002), height=2, width=2, encoding="nv12",
                      step=4, data=bytes(8))
    try:
        status, values = wait_for_status(
            client, statuses, lambda s, v: int(v["frames_bad"]) >= 1, 20.0,
            publish=lambda: client.camera_publisher.publish(bad_frame))
        assert status.level == DiagnosticStatus.WARN and "nv12" in status.message
        assert int(values["frames_bad_unsupported_encoding"]) >= 1
        client.request(numpy_to_image(camvid_frame, "rgb8", stamped_header(1_700_000_003)),
                       timeout_s=30.0)
        status, values = wait_for_status(client, statuses,
                                         lambda s, v: s.level == DiagnosticStatus.OK, 10.0)
    finally:
        client.node.destroy_subscription(diagnostics)
    assert values["backend"].startswith("onnxruntime (CPU")  # auto on a machine without GPU
    assert values["model_path"] == str(model_path)
    assert values["input_topic"] == f"/{NAMESPACE}/detector/input/image"
    assert int(values["frames_processed"]) >= 1 and int(values["frames_bad"]) >= 1
    assert float(values["latency_p50_ms"]) > 0.0
    stages = {stage: float(values[f"stage_{stage}_p50_ms"])
              for stage in ("wait", "deserialize", "inference", "pipeline_other", "publish")}
    assert all(ms >= 0.0 for ms in stages.values()) and stages["inference"] > 0.0
    assert sum(stages.values()) <= float(values["latency_p50_ms"]) * 1.5 + 1.0


COMPRESSED_NAMESPACE = "dds_test/compressed"
MASK_THRESHOLD = 0.3


@pytest.fixture(scope="module")
def compressed_node(ros_context, model_path, tmp_path_factory):
    """Start a second node with other parameters than the shipped ones.

    CompressedImage input, no colour output, a 192x256 model input, outputs at network
    resolution, an anomaly mask, the torch backend.
    """
    parameters = {"model_path": str(model_path), "compressed": True, "publish_color": False,
                  "input_size": [192, 256], "output_resolution": "network",
                  "mask_threshold": MASK_THRESHOLD, "backend": "torch"}
    log_path = tmp_path_factory.mktemp("compressed_node") / "node.log"
    with log_path.open("w") as log:
        process = start_detector(parameters, log=log, namespace=COMPRESSED_NAMESPACE)
        try:
            with DetectorClient(COMPRESSED_NAMESPACE, with_color=False, with_mask=True,
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


def test_compressed_input_network_resolution_mask_and_camera_info(compressed_node, camvid_frame):
    client = compressed_node.client
    assert client.node.count_publishers(
        node_topic(output_topic(COLOR_TOPIC), COMPRESSED_NAMESPACE)) == 0
    infos = []
    info_subscription = client.node.create_subscription(
        CameraInfo, node_topic(output_topic(CAMERA_INFO_TOPIC), COMPRESSED_NAMESPACE),
        infos.append, QoSProfile(depth=10))
    info_publisher = client.node.create_publisher(
        CameraInfo, node_topic(INPUT_CAMERA_INFO_TOPIC, COMPRESSED_NAMESPACE), 10)
    camera_info = CameraInfo(height=360, width=480, k=[400.0, 0, 240, 0, 400, 180, 0, 0, 1],
                             p=[400.0, 0, 240, 0, 0, 400, 180, 0, 0, 0, 1, 0])
    try:
        deadline = time.monotonic() + 10
        while info_publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            client.spin_once()
        # camera_info is best effort like the images: send it with every try until a frame
        # came back with one (the node uses the latest it has)
        for attempt in range(5):
            stamp = 1_700_000_004 + 10 * attempt
            for _ in range(5):
                info_publisher.publish(camera_info)
                client.spin_once()
            msg = numpy_to_compressed(camvid_frame, "jpeg", stamped_header(stamp, "jpeg_camera"))
            reply = client.request(msg, timeout_s=STARTUP_TIMEOUT_S)
            for _ in range(50):
                client.spin_once()
            if any(info.header.stamp.sec == stamp for info in infos):
                break
    except (TimeoutError, RuntimeError) as exc:
        pytest.fail(f"{exc}\nnode log:\n{compressed_node.log_path.read_text()}")
    finally:
        client.node.destroy_subscription(info_subscription)
        client.node.destroy_publisher(info_publisher)
    for msg in reply.outputs.values():  # at the network's 192x256, not the camera's 360x480
        assert (msg.height, msg.width, msg.header.frame_id) == (192, 256, "jpeg_camera")
    score = image_to_numpy(reply.outputs[SCORE_TOPIC])
    mask = image_to_numpy(reply.outputs[MASK_TOPIC])
    np.testing.assert_array_equal(mask, np.where(score >= MASK_THRESHOLD, 255, 0))
    assert "input 192x256" in compressed_node.log_path.read_text()
    # camera_info scaled from 360x480 to 192x256, with the image's header
    info = next(i for i in infos if i.header.stamp.sec == stamp)
    assert (info.height, info.width, info.header.frame_id) == (192, 256, "jpeg_camera")
    np.testing.assert_allclose([info.k[0], info.k[2], info.k[4], info.k[5]],
                               [400 * 256 / 480, 240 * 256 / 480, 400 * 192 / 360,
                                180 * 192 / 360])


def _camera_message(rgb, encoding, header):
    """Return a camera message for an RGB frame in ``encoding`` as a driver would send it."""
    wire = {"rgba8": lambda: cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA),
            "bayer_rggb8": lambda: _mosaic(rgb),
            "yuv422_yuy2": lambda: cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_YUY2),
            "mono16": lambda: cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257,
            }[encoding]()
    return numpy_to_image(np.ascontiguousarray(wire), encoding, header)


def _mosaic(rgb):
    mosaic = rgb[..., 1].copy()
    mosaic[0::2, 0::2], mosaic[1::2, 1::2] = rgb[0::2, 0::2, 0], rgb[1::2, 1::2, 2]
    return mosaic


@pytest.mark.parametrize("encoding", ["rgba8", "bayer_rggb8", "yuv422_yuy2", "mono16"])
def test_camera_driver_encodings_are_answered(client, camvid_frame, encoding):
    """Each reaches the model as the scene: labels agree with the rgb8 frame's on most pixels."""
    reference = client.request(numpy_to_image(camvid_frame, "rgb8", stamped_header(1_700_004_000)),
                               timeout_s=STARTUP_TIMEOUT_S)
    reply = client.request(_camera_message(camvid_frame, encoding, stamped_header(1_700_004_001)),
                           timeout_s=30.0)
    labels = image_to_numpy(reply.outputs[LABELS_TOPIC])
    assert labels.shape == (360, 480)
    agreement = np.mean(labels == image_to_numpy(reference.outputs[LABELS_TOPIC]))
    assert agreement > (0.6 if encoding == "mono16" else 0.9), agreement


@pytest.mark.parametrize("height, width", [(720, 1280), (1080, 1920), (2160, 3840)])
def test_camera_sized_frames_arrive_on_the_first_send(
        any_layout_client, camvid_frame, height, width):
    """Frames far above the default transports' 512 KB arrive, with the shipped profile.

    config/fastdds_large_data.xml is used on both sides; the outputs have the frame's size.
    The same for the node run from the source tree and the colcon-installed one.
    """
    frame = cv2.resize(camvid_frame, (width, height), interpolation=cv2.INTER_LINEAR)
    header = stamped_header(1_700_005_000 + height)
    reply = any_layout_client.request(numpy_to_image(frame, "rgb8", header), timeout_s=60.0,
                                      resend_period_s=30.0)
    assert reply.sends == 1, "the frame was lost on the way in"
    assert (reply.outputs[LABELS_TOPIC].height, reply.outputs[LABELS_TOPIC].width) == (height,
                                                                                       width)


def test_a_fast_camera_every_frame_accounted_for_outputs_complete_and_in_order(
        client, camvid_frame):
    """A camera faster than the node: the newest frame wins, and nothing is unaccounted for.

    Afterwards received = processed + bad + dropped (nothing pending), every processed frame
    reached this reliable subscriber on all output topics (all or none), and each topic's
    stamps only increase.
    """
    statuses, diagnostics = node_statuses(client, NAMESPACE)
    arrivals = {name: [] for name in client.output_names}
    subscriptions = [client.node.create_subscription(
        Image, node_topic(output_topic(name), NAMESPACE),
        lambda msg, name=name: arrivals[name].append(msg.header.stamp.sec), QoSProfile(depth=10))
        for name in client.output_names]
    try:
        client.request(numpy_to_image(camvid_frame, "rgb8", stamped_header(1_700_006_000)),
                       timeout_s=STARTUP_TIMEOUT_S)
        _, before = wait_for_status(client, statuses, lambda s, v: True, 10.0)
        for arrival in arrivals.values():
            arrival.clear()
        frame = numpy_to_image(camvid_frame, "rgb8")
        sent = 60
        for index in range(sent):  # ~30 Hz: faster than the node on 2 busy cores
            frame.header = stamped_header(1_700_006_001 + index)
            client.camera_publisher.publish(frame)
            client.executor.spin_once(timeout_sec=1 / 30)
        _, after = wait_for_status(client, statuses,
                                   lambda s, v: v["frames_pending"] == "0"
                                   and int(v["frames_received"]) > int(before["frames_received"]),
                                   30.0)
        for _ in range(100):
            client.spin_once()
    finally:
        for subscription in subscriptions + [diagnostics]:
            client.node.destroy_subscription(subscription)
    counts = {key[len("frames_"):]: int(value) for key, value in after.items()
              if key.startswith("frames_") and key != "frames_per_second"}
    assert counts["received"] == (counts["processed"] + counts["bad"] + counts["dropped_stale"]
                                  + counts["dropped_while_loading"])
    received = counts["received"] - int(before["frames_received"])
    processed = counts["processed"] - int(before["frames_processed"])
    assert 0 < processed <= received <= sent
    stamps = {name: arrival for name, arrival in arrivals.items()}
    for name, arrival in stamps.items():
        assert arrival == sorted(set(arrival)), f"{name}: out of order or repeated"
        assert len(arrival) == processed, f"{name}: {processed - len(arrival)} outputs lost"
    assert len({tuple(arrival) for arrival in stamps.values()}) == 1, "not all-or-none per frame"


# --- hostile input (issue 17): no message stops the node, each is counted, none answered ---

@contextmanager
def watching(client, namespace):
    """Collect the detector's diagnostics and the header stamps of all its outputs."""
    output_stamps = set()
    statuses, diagnostics = node_statuses(client, namespace)
    subscriptions = [diagnostics]
    subscriptions += [client.node.create_subscription(
        Image, node_topic(output_topic(name), namespace), lambda msg: output_stamps.add(
            (msg.header.stamp.sec, msg.header.stamp.nanosec)), QoSProfile(depth=10))
        for name in client.output_names]
    try:
        yield statuses, output_stamps
    finally:
        for subscription in subscriptions:
            client.node.destroy_subscription(subscription)


def survive(node, statuses, output_stamps, bad_msg, reason, good_msg) -> int:
    """Send ``bad_msg`` until /diagnostics counts it, then have ``good_msg`` answered.

    The count must come with a WARN status whose message matches ``reason`` (a regex); the
    node must still run, and nothing may have been published with ``bad_msg``'s stamp.
    Returns the bad frames counted so far.
    """
    client = node.client
    _, values = wait_for_status(client, statuses, lambda s, v: True, 10.0)
    before = int(values["frames_bad"])
    # (a copy of the previous good frame, re-sent while its answer was awaited, may come
    # between: the bad frame is re-sent until a status shows it as the latest frame)
    _, values = wait_for_status(
        client, statuses, lambda s, v: (int(v["frames_bad"]) > before
                                        and s.level == DiagnosticStatus.WARN
                                        and re.search(reason, s.message) is not None),
        20.0, publish=lambda: client.camera_publisher.publish(bad_msg))
    client.request(good_msg, timeout_s=30.0)
    assert node.process.poll() is None
    stamp = (bad_msg.header.stamp.sec, bad_msg.header.stamp.nanosec)
    assert stamp not in output_stamps, "outputs were published for a bad frame"
    return int(values["frames_bad"])


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
         "unsupported camera image encoding '32FC1'; supported: rgb8, bgr8, .*, yuyv$"),
    ]
    good = numpy_to_image(cv2.resize(camvid_frame, (240, 180)), "rgb8")
    sec = 1_700_002_000
    node = SimpleNamespace(process=detector_node.process, client=client)
    with watching(client, NAMESPACE) as (statuses, output_stamps):
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
        process = start_detector({"model_path": str(model_path)}, log=log,
                                 namespace="dds_test/start_up")
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
    namespace = "dds_test/stream"
    log_path = tmp_path / "node.log"
    with log_path.open("w") as log:
        process = start_detector({"model_path": str(model_path), "backend": "torch"}, log=log,
                                 namespace=namespace)
        try:
            with DetectorClient(namespace, detector_process=process, context=ros_context,
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
    ("max_input_pixels", 0, "must be at least 1"),
    ("max_input_pixels", 1.5, "must be of type int"),
    ("compressed", "yes", "must be of type bool"),
    ("input_qos_depth", 0, "must be at least 1"),
    ("output_qos_depth", True, "must be of type int"),
    ("error_after_failures", 0, "must be at least 1"),
    ("mask_threshold", "0.5", "must be a finite number or 'off'"),
    ("mask_threshold", float("nan"), "must be a finite number or 'off'"),
    ("mask_threshold", True, "must be a finite number or 'off'"),
    ("precision", "int4", "choose one of \\['bf16', 'fp16', 'fp32', 'int8'\\]"),
    ("output_resolution", "4k", "choose one of \\['camera', 'network'\\]"),
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


@pytest.mark.parametrize("name, value", [("output_resolution", "4k"), ("input_size", [7, 9])])
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
    parameters = document["/**/detector"]["ros__parameters"]  # the node in any namespace
    assert set(parameters) == set(PARAMETERS) - {"model_path", "input_size"}
    assert {name: value for name, value in parameters.items()
            if value != DEFAULTS[name]} == {}, "the file documents the node's defaults"
    settings = validate_parameters({**DEFAULTS, **parameters})
    assert settings.model_path == model_path  # default: the package's models/default.pt
    assert (settings.backend, settings.input_qos_depth, settings.output_qos_depth,
            settings.mask_threshold) == ("auto", 5, 10, None)
    assert settings.max_input_pixels == DEFAULT_MAX_INPUT_PIXELS == 4096 * 3072


def test_launch_file_compiles():
    py_compile.compile(str(LAUNCH_FILE), doraise=True)


class _Recorder:
    """Stands for a launch class: records its constructor's arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _Configuration(str):
    """Stands for a LaunchConfiguration: ``$(name)``, performed from a dict context."""

    def perform(self, context):
        return context[self[2:-1]]


def test_launch_file_remaps_the_private_topics_and_sets_the_dds_profile(monkeypatch, tmp_path):
    """Run generate_launch_description against recording stand-ins for launch / launch_ros.

    The real ones are not installable here; test_launch_file_builds_a_launch_description
    runs with them where they are.
    """
    import sys
    import types

    share = tmp_path / "share" / "dense_ood_ros"
    modules = {
        "ament_index_python": types.ModuleType("ament_index_python"),
        "ament_index_python.packages": types.SimpleNamespace(
            get_package_share_directory=lambda package: str(share)),
        "launch": types.SimpleNamespace(LaunchDescription=_Recorder),
        "launch.actions": types.SimpleNamespace(DeclareLaunchArgument=_Recorder,
                                                SetEnvironmentVariable=_Recorder,
                                                OpaqueFunction=_Recorder, LogInfo=_Recorder),
        "launch.substitutions": types.SimpleNamespace(
            EnvironmentVariable=_Recorder,
            LaunchConfiguration=lambda name: _Configuration(f"$({name})")),
        "launch_ros": types.ModuleType("launch_ros"),
        "launch_ros.actions": types.SimpleNamespace(Node=_Recorder),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("detector_launch_stubbed", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    entities = module.generate_launch_description().args[0]
    arguments = {e.args[0]: e.kwargs for e in entities if "default_value" in e.kwargs}
    node = next(e for e in entities if e.kwargs.get("executable") == "detector")
    use_profile = next(e for e in entities if "function" in e.kwargs).kwargs["function"]
    assert dict(node.kwargs["remappings"]) == {"~/input/image": "$(image)",
                                               "~/input/camera_info": "$(camera_info)"}
    assert node.kwargs["namespace"] == "$(namespace)" and node.kwargs["name"] == "detector"
    params_file, overrides = node.kwargs["parameters"]
    assert params_file == "$(params_file)"
    assert set(overrides) <= set(PARAMETERS), "launch arguments must be node parameters"
    assert overrides == {name: f"$({name})" for name in overrides}
    assert arguments["params_file"]["default_value"] == str(share / "config" / "detector.yaml")
    assert arguments["backend"]["default_value"] == DEFAULTS["backend"]
    assert arguments["model_path"]["default_value"] == str(share / "models" / "default.pt")
    profile = tmp_path / "profile.xml"
    profile.write_text("<dds/>")
    (environment,) = use_profile({"fastdds_profile": str(profile)})
    assert environment.args == ("FASTDDS_DEFAULT_PROFILES_FILE", str(profile))
    (warning,) = use_profile({"fastdds_profile": str(tmp_path / "missing.xml")})
    assert "WARNING" in warning.kwargs["msg"] and str(tmp_path / "missing.xml") in \
        warning.kwargs["msg"], "a missing profile is named, not set"
    profile_default = arguments["fastdds_profile"]["default_value"]
    assert profile_default.args == ("FASTDDS_DEFAULT_PROFILES_FILE",)
    assert profile_default.kwargs["default_value"] == str(share / "config" /
                                                          "fastdds_large_data.xml")


def test_launch_file_builds_a_launch_description():
    pytest.importorskip("launch_ros",
                        reason="launch_ros is not installed (ROS 2 launch system not available)")
    from launch_ros.actions import Node

    spec = importlib.util.spec_from_file_location("detector_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    assert any(isinstance(entity, Node) for entity in description.entities)


def test_backend_failures_are_counted_and_turn_diagnostics_to_error(ros_context, model_path):
    """Fault injection in this process: the backend raising mid-run.

    Each failure is one counted frame, nothing is published for it, the next good frame is
    answered, and ``error_after_failures`` failures in a row make /diagnostics ERROR.
    """
    from rclpy.parameter import Parameter

    from dense_ood_ros.ros.diagnostics import detector_status
    from dense_ood_ros.ros.node import DetectorNode

    node = DetectorNode(context=ros_context, namespace="dds_test/in_process",
                        parameter_overrides=[Parameter("model_path", value=str(model_path)),
                                             Parameter("error_after_failures", value=3)])
    published = []
    try:
        node.loader.join(STARTUP_TIMEOUT_S)
        assert node.pipeline is not None, node.load_error
        for publisher in node.publishers_by_topic.values():
            publisher.publish = published.append
        working = node.pipeline.detector

        def failing_backend(frame, output_size=None):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

        frame = serialize_message(numpy_to_image(np.zeros((40, 60, 3), np.uint8), "rgb8",
                                                 stamped_header(5)))
        node.pipeline.detector = failing_backend
        levels = []
        for _ in range(3):
            node._run(frame, time.perf_counter())
            levels.append(detector_status("n", "h", node.stats, {}).level)
        assert (node.stats.bad["inference_error"], node.stats.processed, published) == (3, 0, [])
        assert DiagnosticStatus.ERROR not in levels[:2] and levels[2] == DiagnosticStatus.ERROR
        assert "the last 3 frames failed in inference: RuntimeError: CUDA error" in \
            detector_status("n", "h", node.stats, {}).message
        node.pipeline.detector = working
        node._run(frame, time.perf_counter())
        assert (node.stats.bad_total, node.stats.processed, len(published)) == (3, 1, 3)
        assert detector_status("n", "h", node.stats, {}).level == DiagnosticStatus.OK
    finally:
        node.stop()
        node.destroy_node()


def test_the_newest_frame_wins_and_every_frame_is_accounted_for():
    """The one-slot mailbox: a newer frame replaces an untaken one, close() reports a leftover."""
    from dense_ood_ros.ros.node import NewestFrame

    newest = NewestFrame()
    assert newest.take(0.01) is None
    assert newest.put(b"1", 1.0) is False
    assert newest.put(b"2", 2.0) is True  # 1 replaced: dropped as stale
    assert newest.take(0.01) == (b"2", 2.0)
    assert newest.put(b"3", 3.0) is False
    assert newest.close() is True and newest.take(0.01) is None
