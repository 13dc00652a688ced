"""``ecom train --bootstrap``: docker-compose's training step hands over to the demo's first-model bootstrap."""

from __future__ import annotations

from ecom.cli import build_parser
from ecom.settings import load_settings


def test_bootstrap_runs_the_demos_first_model_steps_with_the_given_history(monkeypatch):
    import ecom.demo
    from ml.train import run_train

    calls = []
    monkeypatch.setattr(ecom.demo, "bootstrap_model", lambda *args: calls.append(args))
    monkeypatch.setattr(ecom.demo, "needs_model", lambda settings: True)  # no registry is asked
    settings = load_settings("docker", environ={})
    args = build_parser().parse_args(["train", "--bootstrap", "--bootstrap-days", "7", "--bootstrap-count", "5000"])
    assert run_train(settings, args) == 0
    [(got_settings, env, days, count, _steps)] = calls
    assert got_settings is settings and env["ECOM_PROFILE"] == "docker" and (days, count) == (7, 5000)

    monkeypatch.setattr(ecom.demo, "needs_model", lambda settings: False)  # a champion is registered: nothing
    assert run_train(settings, args) == 0
    assert len(calls) == 1


def test_bootstrap_defaults_are_the_demos():
    args = build_parser().parse_args(["train", "--bootstrap"])
    demo = build_parser().parse_args(["demo"])
    assert (args.bootstrap_days, args.bootstrap_count) == (demo.backfill_days, demo.backfill_count)
    assert not build_parser().parse_args(["train"]).bootstrap
