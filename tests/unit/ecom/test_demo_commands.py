"""The demo's background processes are started with arguments the real ``ecom`` parser accepts."""

from __future__ import annotations

import pytest

from ecom.cli import build_parser
from ecom.demo import process_commands
from ecom.settings import load_settings


@pytest.mark.parametrize("name", ["stream", "stream-gold", "gold-batch", "lifecycle", "maintain", "dashboard"])
def test_each_demo_process_command_parses(name):
    settings = load_settings("test")
    args = build_parser().parse_args(process_commands(settings)[name])  # argparse exits (2) on an unknown argument
    assert callable(args.func)


def test_the_scheduled_gold_batch_runs_daily_every_schedule_s_after_waiting_as_long():
    settings = load_settings("test")
    args = build_parser().parse_args(process_commands(settings)["gold-batch"])
    assert args.job == "daily"
    assert args.every == settings.gold.schedule_s
    assert args.first_after == settings.gold.schedule_s


def test_the_demo_runs_the_per_order_alert_path_when_the_profile_asks_for_it():
    local, test = load_settings("local"), load_settings("test")
    assert local.fraud.fast_path and not test.fraud.fast_path
    assert "stream-alerts" not in process_commands(test)
    args = build_parser().parse_args(process_commands(local)["stream-alerts"])
    assert (args.func.__name__, args.layer, args.partitions) == ("cmd_stream", "alerts", None)


def test_stream_partitions_are_for_the_alert_path_only():
    args = build_parser().parse_args(["stream", "alerts", "--partitions", "0,2"])
    assert args.partitions == [0, 2]
    with pytest.raises(SystemExit, match="--partitions is for ecom stream alerts"):
        args = build_parser().parse_args(["stream", "all", "--partitions", "1"])
        args.func(args)
    with pytest.raises(SystemExit, match="runs until stopped"):
        args = build_parser().parse_args(["stream", "alerts", "--once"])
        args.func(args)
