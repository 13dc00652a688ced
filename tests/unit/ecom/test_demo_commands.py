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
