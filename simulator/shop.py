"""The recorded shop: what a later ``ecom generate`` needs to continue the same shop.

Input: the state of a finished run's simulators (``TransactionSimulator.state``,
one per backfill worker). Output: one JSON file per orders topic,
``<simulator.state_dir>/<topic>.json``. Grain: one record per topic; inside
it, one entry per customer with at least one order (index, orders, last and
first order times, churned, devices added since signup). Who a customer is
(persona, country, devices, email) is not stored: ``make_customer`` derives it
from the seed and the index.

A run holds a lock on the record while it generates, so two runs never
continue the same shop at once (they would hand out the same new ids).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

FORMAT = 1


class ShopError(RuntimeError):
    """A recorded shop cannot be continued as asked."""


@dataclass
class ShopState:
    """A shop as a run left it: its seed, catalogue size, next unused customer index and customer history."""

    seed: int
    products: int
    next_index: int
    live_runs: int = 0  # live runs that continued this shop so far (each draws its own random stream)
    until: datetime | None = None  # the last order's event time
    history: list[dict] = field(default_factory=list)  # CustomerBase.snapshot() rows

    @property
    def customers(self) -> int:
        return len(self.history)


def merge(parts: list[ShopState]) -> ShopState:
    """One shop from the states of the workers that shared its customers (customer i in worker i mod W)."""
    if not parts:
        raise ValueError("no shop state to merge")
    first = parts[0]
    if any((p.seed, p.products, p.live_runs) != (first.seed, first.products, first.live_runs) for p in parts):
        raise ValueError("the parts come from different shops")
    ends = [p.until for p in parts if p.until is not None]
    return ShopState(
        seed=first.seed,
        products=first.products,
        next_index=max(p.next_index for p in parts),  # above every index any worker handed out
        live_runs=first.live_runs,
        until=max(ends) if ends else None,
        history=[row for p in parts for row in p.history],
    )


def shop_path(state_dir: str, topic: str) -> Path:
    return Path(state_dir) / f"{topic}.json"


def _ms(ts: datetime | None) -> int | None:
    return None if ts is None else round(ts.timestamp() * 1000)


def _ts(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def save(path: Path, state: ShopState) -> None:
    """Write the record atomically (a reader sees the old or the new one, never half of it)."""
    rows = state.history
    doc = {
        "format": FORMAT,
        "seed": state.seed,
        "products": state.products,
        "next_index": state.next_index,
        "live_runs": state.live_runs,
        "until": _ms(state.until),
        "customers": {
            "index": [r["index"] for r in rows],
            "orders": [r["orders"] for r in rows],
            "last_order": [_ms(r["last_order"]) for r in rows],
            "signup": [_ms(r["signup"]) for r in rows],
            "churned": [int(r["churned"]) for r in rows],
            "added_devices": {str(r["index"]): r["added_devices"] for r in rows if r["added_devices"]},
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(doc, separators=(",", ":")))
    os.replace(tmp, path)


def load(path: Path) -> ShopState | None:
    """The recorded shop, or None if there is none."""
    if not path.exists():
        return None
    doc = json.loads(path.read_text())
    if doc.get("format") != FORMAT:
        raise ShopError(f"{path} has record format {doc.get('format')}, this simulator reads {FORMAT}")
    c = doc["customers"]
    added = c["added_devices"]
    history = [
        {
            "index": index,
            "orders": orders,
            "last_order": _ts(last),
            "signup": _ts(signup),
            "churned": bool(churned),
            "added_devices": added.get(str(index), []),
        }
        for index, orders, last, signup, churned in zip(
            c["index"], c["orders"], c["last_order"], c["signup"], c["churned"], strict=True
        )
    ]
    return ShopState(doc["seed"], doc["products"], doc["next_index"], doc["live_runs"], _ts(doc["until"]), history)


def to_continue(record: ShopState | None, *, seed: int | None, products: int, where: Path) -> ShopState | None:
    """The recorded shop a live run continues (None: there is none), or ShopError if it cannot be continued."""
    if record is None:
        return None
    if seed is not None and seed != record.seed:
        raise ShopError(
            f"the shop recorded in {where} was generated with seed {record.seed}, not {seed}: "
            "leave out --seed to continue it, or pass --fresh to start another shop"
        )
    if products != record.products:
        raise ShopError(
            f"the shop recorded in {where} has {record.products} products, the settings {products}: "
            "pass --fresh to start another shop"
        )
    return record


@contextmanager
def hold(path: Path) -> Iterator[None]:
    """Exclusive use of the record at ``path`` while a run generates into its topic (ShopError if another run has it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise ShopError(
                f"another `ecom generate` is generating the shop recorded in {path}; "
                "wait for it, or pass --fresh or another --topic"
            ) from exc
        yield
