"""The arguments of ``ecom train`` (``ml.train``), apart from the training code so that ``--help`` loads no
pandas, scikit-learn or MLflow."""

from __future__ import annotations

import argparse


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--silver", help="silver/transactions Delta path (default: from the lake settings)")
    parser.add_argument("--labels-topic", help="fraud-labels topic (default: kafka.topics.labels)")
    parser.add_argument(
        "--holdout-fraction",
        type=float,
        help="newest share of rows held out for evaluation (default: fraud.holdout_fraction)",
    )
    parser.add_argument("--no-challenger", action="store_true", help="train only the Isolation Forest")
    parser.add_argument(
        "--promote-challenger",
        action="store_true",
        help="let the supervised challenger become champion if it wins by the rule in docs/fraud.md",
    )
    parser.add_argument(
        "--bootstrap",
        action="store_true",
        help="only if no model is registered yet: backfill history, stream it into silver, train, register and "
        "score it, as `ecom demo` does the first time; with a champion, do nothing (docker-compose's training step)",
    )
    parser.add_argument(
        "--bootstrap-days", type=int, default=30, help="--bootstrap: days of backfilled history (default 30)"
    )
    parser.add_argument(
        "--bootstrap-count", type=int, default=60000, help="--bootstrap: orders in that history (default 60,000)"
    )
