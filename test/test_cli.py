"""One command-line dialect.

Every command's --help says what it writes and uses the shared option names; the shared
parsers accept and refuse the same texts everywhere.
"""

import argparse
import importlib

import pytest

from dense_ood_ros.cli import parse_ints, parse_scores, parse_size

COMMANDS = ["dense_ood_ros.export", "dense_ood_ros.evaluate", "dense_ood_ros.benchmark",
            "dense_ood_ros.ros.demo", "training.train", "training.plots", "training.misses",
            "training.figures", "training.report",
            "training.data.camvid_paste"]


def _help(module_name: str, capsys) -> str:
    module = importlib.import_module(module_name)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("module_name", COMMANDS)
def test_help_states_what_the_command_writes_in_the_shared_dialect(module_name, capsys):
    text = _help(module_name, capsys)
    assert "Writes:" in text
    for retired in ("--model-path", "--output ", "--json", "--markdown"):
        assert retired not in text
    if "--input-size" in text:
        assert "--input-size HxW" in text


def test_sizes_scores_and_integers_parse_alike_everywhere():
    assert parse_size("360x480") == (360, 480) and parse_size("720X1280") == (720, 1280)
    for bad in ("360 480", "360x", "16x16", "axb"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_size(bad)
    assert parse_scores("jsd, msp") == ("jsd", "msp")
    for bad in ("", "jsd,energy"):
        with pytest.raises(argparse.ArgumentTypeError, match="unknown anomaly score"):
            parse_scores(bad)
    assert parse_ints("1,2") == (1, 2)
    with pytest.raises(argparse.ArgumentTypeError, match="comma-separated integers"):
        parse_ints("1,two")
