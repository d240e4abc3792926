"""`jodo hes-sim` / `python -m headend.sim`: every knob documented and wired into SimConfig."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from headend.sim.cli import add_arguments, config_from_args
from headend.sim.config import DailyReadsMode, LatencySpec, OutageMode, SimConfig

KNOBS = [
    "--host", "--port", "--port-file", "--max-frame-bytes", "--max-batch", "--meters", "--serial-prefix",
    "--serial-width", "--seed", "--modes", "--disconnected-fraction", "--latency", "--failure-rate",
    "--failure-mix", "--misreport-rate", "--drop-rate", "--duplicate-rate", "--reorder-rate",
    "--reorder-window", "--outage", "--outage-mode", "--slow-start", "--rate-limit", "--read-rate-limit",
    "--rate-burst", "--stats-interval", "--daily-reads", "--load-seed",
    "--protocol", "--password-file", "--wport-base", "--refuse", "--mute", "--stick", "--unreachable",
    "--cim-delay", "--cim-duplicate-rate", "--cim-fail-rate", "--cim-reply-fail-rate", "--cim-silent-rate",
    "--cim-token-file",
]  # fmt: skip


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hes-sim")
    add_arguments(p)
    return p


def test_every_option_has_a_help_text_and_the_knob_list_is_complete() -> None:
    options = {
        opt: action.help
        for action in parser()._actions
        for opt in action.option_strings
        if opt.startswith("--") and opt != "--help"
    }
    assert sorted(options) == sorted(KNOBS)
    for opt, text in options.items():
        assert text and len(text) > 15, f"{opt} is not explained"


def test_the_help_names_the_failure_codes_and_which_are_retryable() -> None:
    text = parser().format_help()
    for word in ("no_communication", "relay_stuck", "load_side_voltage_present", "retryable", "mode"):
        assert word in text


def test_the_defaults_are_the_config_defaults() -> None:
    # but one: the library's simulator sends no unasked reads; `jodo hes-sim` sends a day's at midnight IST
    assert config_from_args(parser().parse_args([])) == SimConfig(daily_reads=DailyReadsMode.WALL)


def test_every_knob_reaches_the_config() -> None:
    args = parser().parse_args(
        [
            "--meters", "500", "--serial-prefix", "X", "--serial-width", "6", "--seed", "9",
            "--modes", "2=0.5,1=0.5", "--disconnected-fraction", "0.25", "--latency", "exp:0.2",
            "--failure-rate", "0.05", "--failure-mix", "no_communication=1", "--misreport-rate", "0.01",
            "--drop-rate", "0.02", "--duplicate-rate", "0.03", "--reorder-rate", "0.04",
            "--reorder-window", "0.5", "--outage", "5:10", "--outage", "60:1", "--outage-mode", "close",
            "--slow-start", "2", "--rate-limit", "2000", "--read-rate-limit", "5000", "--rate-burst", "0.5",
            "--max-frame-bytes", "65536", "--max-batch", "100", "--daily-reads", "off", "--load-seed", "3",
        ]
    )  # fmt: skip
    assert config_from_args(args) == SimConfig(
        meters=500,
        serial_prefix="X",
        serial_width=6,
        seed=9,
        modes=((2, 0.5), (1, 0.5)),
        disconnected_fraction=0.25,
        latency=LatencySpec("exp", (0.2,)),
        failure_rate=0.05,
        failure_mix=(("no_communication", 1.0),),
        misreport_rate=0.01,
        drop_rate=0.02,
        duplicate_rate=0.03,
        reorder_rate=0.04,
        reorder_window=0.5,
        daily_reads=DailyReadsMode.OFF,
        load_seed=3,
        outages=((5.0, 10.0), (60.0, 1.0)),
        outage_mode=OutageMode.CLOSE,
        slow_start=2.0,
        rate_limit=2000.0,
        read_rate_limit=5000.0,
        rate_burst=0.5,
        max_frame_bytes=65536,
        max_batch=100,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--latency", "gamma:1"],
        ["--failure-rate", "2"],
        ["--modes", "two=1"],
        ["--outage", "5"],
        ["--outage-mode", "explode"],
    ],
)
def test_bad_values_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parser().parse_args(argv)
    assert caught.value.code == 2


def test_python_dash_m_headend_sim_prints_its_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "headend.sim", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert "--failure-rate" in done.stdout and "--outage" in done.stdout
