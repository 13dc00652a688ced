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
