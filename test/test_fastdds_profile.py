"""A Fast DDS profile that does not exist is never set silently."""

import logging

import pytest

pytest.importorskip("rclpy", reason="the ROS 2 Python client library (rclpy) is not installed")

from dense_ood_ros.ros.client import FASTDDS_PROFILE, large_data_environment  # noqa: E402


def test_the_shipped_profile_is_set_when_none_is():
    env = large_data_environment({})
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"] == str(FASTDDS_PROFILE)
    assert FASTDDS_PROFILE.is_file()


def test_a_user_profile_is_kept():
    env = large_data_environment({"FASTRTPS_DEFAULT_PROFILES_FILE": "/mine.xml"})
    assert "FASTDDS_DEFAULT_PROFILES_FILE" not in env


def test_a_missing_profile_is_named_and_not_set(tmp_path, caplog):
    missing = tmp_path / "config" / "fastdds_large_data.xml"
    with caplog.at_level(logging.WARNING):
        env = large_data_environment({}, profile=missing)
    assert "FASTDDS_DEFAULT_PROFILES_FILE" not in env
    assert str(missing) in caplog.text and "not found" in caplog.text
