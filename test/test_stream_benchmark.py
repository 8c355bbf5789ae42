"""dense-ood-stream-benchmark: a short run over real DDS, and its stamp patching."""

import json

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="the ROS 2 Python client library (rclpy) is not installed")

from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from dense_ood_ros.ros.conversions import numpy_to_image  # noqa: E402
from dense_ood_ros.ros.stream_benchmark import (main, markdown, median_bare,  # noqa: E402
                                                patch_stamp, round_summary, stamp_of)

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


def test_rounds_are_summarised_by_their_median_and_lowest_ratio():
    """--rounds: each run against its own round's bare figure; median and lowest ratio."""
    bare_rounds = [{"360x480": {"fps": fps, "latency_ms": {"p50": 60.0, "p95": p95}}}
                   for fps, p95 in ((16.0, 70.0), (20.0, 80.0), (18.0, 90.0))]
    runs = [{"size": "360x480", "rate_hz": 30.0, "round": index, "output_fps": fps,
             "bare_fps": bare["360x480"]["fps"]}
            for index, (fps, bare) in enumerate(zip((15.2, 17.0, None), bare_rounds))]
    (row,) = round_summary(runs)
    assert row["rounds"] == 3 and row["output_fps_median"] == pytest.approx(15.2)
    assert (row["output_fps_min"], row["output_fps_max"]) == (0.0, 17.0)  # a run answered none
    assert row["ratio_median"] == pytest.approx(0.85) and row["ratio_min"] == 0.0
    bare = median_bare(bare_rounds)["360x480"]
    assert bare["fps"] == 18.0 and bare["latency_ms"]["p95"] == 80.0
    assert [r["fps"] for r in bare["rounds"]] == [16.0, 20.0, 18.0]
    for run in runs:
        run.update(sent=300, answered=150, partial=0, node_cpu_cores=1.3,
                   latency_ms={"labels": {"p50": 80.0, "p95": 100.0}}, node_counts={},
                   stage_p50_ms={})
    text = markdown({"backend": "b", "model": "m", "frames": 300, "rounds": 3, "consumer": False,
                     "machine": {"cpus": 2, "cpu_flags": ["avx2"]},
                     "bare": median_bare(bare_rounds), "runs": runs,
                     "summary": round_summary(runs)})
    assert "| 360x480 | 30 Hz | 2 | 300 | 150 | 0 | 17.0 | 20.0 |" in text  # round 2's own bare
    assert "| 360x480 | 30 Hz | 15.2 (0.0–17.0) | 0.85× | 0.00× |" in text
