"""A short soak of the detector node in CI (the long one: ``scripts/soak.sh``)."""

import pytest

pytest.importorskip("rclpy", reason="the ROS 2 Python client library (rclpy) is not installed")

from dense_ood_ros.ros.soak import failures, memory_growth_per_1000, soak  # noqa: E402

pytestmark = pytest.mark.ros


def test_memory_growth_is_the_slope_after_the_warm_up():
    samples = [{"frame": 0, "rss_mb": 900.0}] + [
        {"frame": f, "rss_mb": 1000.0 + 0.002 * f} for f in range(500, 5001, 500)]
    assert memory_growth_per_1000(samples, skip_frames=500) == pytest.approx(2.0)
    assert memory_growth_per_1000(samples[:2], skip_frames=500) is None


def test_a_short_soak_at_twice_the_node_rate_keeps_every_invariant(model_path):
    """300 frames at 20 Hz, more than the node runs here (5-15 FPS).

    It drops the stale ones, answers the newest, in order, every frame accounted for, and
    keeps running.
    """
    report = soak(model_path, "auto", (360, 480), 20.0, 300, sample_every=100)
    assert failures(report) == [], report
    run = report["run"]
    assert report["node_counts"]["dropped_stale"] > 0, "the camera was not faster than the node"
    assert len(report["rss_samples"]) == 4
    # memory: bounded, not a timing; a leak of a frame's outputs per frame would be ~1.7 GB
    growth = report["rss_samples"][-1]["rss_mb"] - report["rss_samples"][0]["rss_mb"]
    assert growth < 100, report["rss_samples"]
    assert run["latency_ms"]["labels"]["p99"] is not None
