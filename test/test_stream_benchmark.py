"""dense-ood-stream-benchmark: a short run over real DDS, and its stamp patching."""

import json

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="the ROS 2 Python client library (rclpy) is not installed")

from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from dense_ood_ros.ros.conversions import numpy_to_image  # noqa: E402
from dense_ood_ros.ros.stream_benchmark import main, patch_stamp, stamp_of  # noqa: E402

pytestmark = pytest.mark.ros


def test_patched_stamp_is_the_stamp_of_the_deserialized_message():
    serialized = bytearray(serialize_message(numpy_to_image(np.zeros((4, 6, 3), np.uint8),
                                                            "rgb8")))
    patched = patch_stamp(serialized, 1_700_000_123, 456)
    msg = deserialize_message(patched, Image)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1_700_000_123, 456)
    assert (msg.height, msg.width, msg.encoding) == (4, 6, "rgb8")
    assert stamp_of(patched) == 1_700_000_123


def test_a_short_stream_is_answered_and_accounted_for(tmp_path, capsys):
    out = tmp_path / "stream"
    assert main(["--rates", "5", "--frames", "8", "--consumer", "--out", str(out)]) == 0
    report = json.loads(out.with_name("stream.json").read_text())
    (run,) = report["runs"]
    assert run["size"] == "360x480" and run["sent"] == 8
    assert 0 < run["answered"] <= 8 and run["partial"] == 0 and run["outputs_in_order"]
    counts = run["node_counts"]
    assert counts["received"] == counts["processed"] + counts["dropped_stale"] + counts["bad"]
    assert counts["processed"] == run["answered"]
    assert report["bare"]["360x480"]["fps"] > 0
    assert "| 360x480 | 5 Hz | 8 |" in out.with_name("stream.md").read_text()
    # where the node's time went, and the consumer process received what the node answered
    stages = run["stage_p50_ms"]
    assert set(stages) == {"wait", "deserialize", "inference", "pipeline_other", "publish"}
    assert all(value is not None and value >= 0 for value in stages.values())
    assert stages["inference"] > stages["deserialize"]
    assert report["consumer"] and run["consumer_answered"] == run["answered"]
