"""Progress lines for long commands, on stderr (stdout keeps the command's result).

``Steps`` numbers the steps of a command whose steps are known: ``train [2/5] reading the fraud labels (3 s)``.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Steps:
    """Numbered steps of one command, each printed as it starts with the time since the first."""

    def __init__(self, name: str, total: int, out: TextIO | None = None) -> None:
        self.name, self.total, self.out = name, total, out
        self.done = 0
        self.started = time.monotonic()

    def __call__(self, what: str) -> None:
        """Start the next step."""
        self.done += 1
        elapsed = time.monotonic() - self.started
        print(
            f"{self.name} [{self.done}/{self.total}] {what} ({elapsed:.0f} s)", file=self.out or sys.stderr, flush=True
        )
