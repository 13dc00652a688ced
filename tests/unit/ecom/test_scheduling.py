"""The shared ``--every`` schedule of ecom batch, lifecycle and maintain."""

from __future__ import annotations

import argparse

import pytest

from ecom import scheduling


class Stop(BaseException):
    """Ends the endless schedule in a test (not an Exception: the schedule must not swallow it)."""


def test_without_every_it_runs_once_and_raises_what_the_run_raises():
    calls = []
    assert scheduling.run_on_schedule(lambda: calls.append(1), None, 5.0, "job") == 0
    assert calls == [1]
    with pytest.raises(ZeroDivisionError):
        scheduling.run_on_schedule(lambda: 1 / 0, None, 0.0, "job")


def test_a_scheduled_run_that_fails_is_reported_and_the_next_one_runs(monkeypatch, capsys):
    sleeps, runs, cleanups = [], [], []
    monkeypatch.setattr(scheduling.time, "sleep", sleeps.append)

    def once():
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("disk full")
        if len(runs) == 3:
            raise Stop

    with pytest.raises(Stop):
        scheduling.run_on_schedule(once, 60.0, 30.0, "gold batch", after_each=lambda: cleanups.append(1))
    assert len(runs) == 3
    assert len(cleanups) == 2  # after the failed run and the good one
    assert sleeps[0] == 30.0 and all(0 < s <= 60.0 for s in sleeps[1:])
    assert "gold batch failed: RuntimeError: disk full" in capsys.readouterr().err


def test_dates_and_schedule_arguments_parse():
    parser = argparse.ArgumentParser()
    parser.add_argument("--as-of", type=scheduling.iso_date)
    scheduling.add_schedule_arguments(parser)
    args = parser.parse_args(["--as-of", "2026-11-01", "--every", "900", "--first-after", "60"])
    assert (str(args.as_of), args.every, args.first_after) == ("2026-11-01", 900.0, 60.0)
    assert parser.parse_args([]).first_after == 0.0
    with pytest.raises(SystemExit):
        parser.parse_args(["--as-of", "2026-13-01"])
