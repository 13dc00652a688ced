"""Silver's quality rules for one Kafka value at a time, in plain Python: a conservative twin of the Spark rules.

The per-order scoring path (issue 15) cannot wait for a Spark job to check an order. ``checked(value, now)``
gives the order as silver would store it (``Order``), or None. The promise is one-sided:

- **sound:** every order it accepts passes every rule of ``pipelines.silver.transforms.QUALITY_RULES`` (so a
  fast alert is never raised for an order the micro-batch quarantines), with the same values Spark's
  ``from_json`` gives (amount, lines, event time);
- **complete on the contract's own form:** an order as the simulator and the contract write it (JSON strings
  for text, JSON numbers with at most two decimals for money, ISO-8601 event times with ``Z`` or an offset)
  is accepted whenever Spark accepts it.

Anything in the space between, which Spark accepts through its permissive parsing (a number where text is
expected, a money value it rounds, a string for a number, an event time like ``2026-1-5 1:2:3 UTC``, trailing
text after the JSON), is refused here and left to the micro-batch, which remains the record. So are values at
the edges where the two clocks could disagree (an event time within a minute of "now + 1 day").

``tests/unit/pipelines/test_alerts_validate.py`` checks both halves against the Spark rules on generated
payloads.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from ecom.schemas import (
    CHANNELS,
    CURRENCIES,
    MAX_EMAIL_CHARS,
    MAX_ID_CHARS,
    MAX_ITEMS,
    MAX_PAYLOAD_BYTES,
    MAX_QUANTITY,
    MIN_EVENT_TIME,
    PAYMENT_METHODS,
    SCHEMA_VERSION,
)
from pipelines.silver.transforms import ID_FIELDS, REPLACEMENT_CHARACTER  # the rules' own lists

OPTIONAL_TEXT = ("customer_email", "device_id", "ip_country", "shipping_country")
CENT = Decimal("0.01")
MAX_MONEY = Decimal("9999999999.99")  # DECIMAL(12,2)
EARLIEST = dt.datetime.fromisoformat(MIN_EVENT_TIME).replace(tzinfo=dt.UTC)
FUTURE_MARGIN = dt.timedelta(days=1) - dt.timedelta(minutes=1)  # the rule's 1 day, less a clock margin
# The contract's event time: date, time, up to microseconds, then Z or an offset.
EVENT_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")
COUNTRY = re.compile(r"[A-Z]{2}")
# Unicode Cc (as Java's \p{Cc}) and the surrogates (a lone one cannot come from valid UTF-8, only an escape).
MAX_DEPTH = 32  # an order nests 3 levels (event, items, line)
CONTROL_OR_SURROGATE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


class Refused(ValueError):
    """The value is not an order this path takes; the micro-batch decides what it is."""


@dataclass(frozen=True)
class Line:
    product_id: str
    category: str
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True)
class Order:
    """An order as silver stores it (the fields the scoring path needs)."""

    event_id: str
    transaction_id: str
    event_time: dt.datetime  # aware, UTC
    customer_id: str
    customer_email: str | None
    items: tuple[Line, ...]
    amount: Decimal
    currency: str
    payment_method: str
    channel: str
    device_id: str | None
    ip_country: str | None
    shipping_country: str | None


def _object(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise Refused("duplicate key")
        out[key] = value
    return out


def _constant(name: str):
    raise Refused(f"not JSON: {name}")


def _parse(value: bytes | None) -> dict:
    if value is None or len(value) > MAX_PAYLOAD_BYTES:
        raise Refused("missing or too large")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refused("not UTF-8") from exc
    if REPLACEMENT_CHARACTER in text:  # bronze cannot tell it from a replaced byte: silver quarantines it
        raise Refused("replacement character")
    try:
        event = json.loads(text, object_pairs_hook=_object, parse_float=Decimal, parse_constant=_constant)
    except Refused:
        raise
    except (ValueError, RecursionError) as exc:
        raise Refused("not JSON") from exc
    if not isinstance(event, dict):
        raise Refused("not an object")
    if _deeper_than(event, MAX_DEPTH):  # Spark's JSON parser has its own nesting limit: stay far below it
        raise Refused("nested too deep")
    return event


def _deeper_than(value: object, limit: int) -> bool:
    """Whether lists and objects nest more than ``limit`` levels in ``value``."""
    level = [value]
    for _ in range(limit):  # after k rounds, level holds the containers at depth k + 1 (the value is at 1)
        level = [
            child
            for node in level
            if isinstance(node, dict | list)
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, dict | list)
        ]
        if not level:
            return False
    return True


def _text(event: dict, name: str, optional: bool = False) -> str | None:
    value = event.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise Refused(f"{name}: not text")
    if CONTROL_OR_SURROGATE.search(value):
        raise Refused(f"{name}: control character")
    return value


def _money(value: object, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise Refused(f"{name}: not a number")
    try:
        money = Decimal(value)
        if money != money.quantize(CENT):  # Spark would round it: leave that to Spark
            raise Refused(f"{name}: more than two decimals")
    except InvalidOperation as exc:
        raise Refused(f"{name}: out of range") from exc
    if not 0 < money <= MAX_MONEY:
        raise Refused(f"{name}: out of range")
    return money.quantize(CENT)


def _line(value: object) -> Line:
    if not isinstance(value, dict):
        raise Refused("items: a line is not an object")
    product_id, category = _text(value, "product_id"), _text(value, "category")
    if not product_id or not category or max(len(product_id), len(category)) > MAX_ID_CHARS:
        raise Refused("items: product")
    quantity = value.get("quantity")
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= MAX_QUANTITY:
        raise Refused("items: quantity")
    return Line(product_id, category, quantity, _money(value.get("unit_price"), "unit_price"))


def _event_time(value: str, now: dt.datetime) -> dt.datetime:
    if not EVENT_TIME.fullmatch(value):
        raise Refused("event_time: not the contract's form")
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.UTC)
    except ValueError as exc:
        raise Refused("event_time: no such time") from exc
    if not EARLIEST <= when <= now + FUTURE_MARGIN:
        raise Refused("event_time: out of range")
    return when


def order(value: bytes | None, now: dt.datetime) -> Order:
    """The order in a Kafka value, as silver stores it; ``Refused`` (with why) when this path does not take it.
    ``now``: aware, the time the value is checked."""
    event = _parse(value)
    if type(event.get("schema_version")) is not int or event["schema_version"] != SCHEMA_VERSION:
        raise Refused("schema_version")
    texts = {name: _text(event, name, optional=name in OPTIONAL_TEXT) for name in (*ID_FIELDS, *OPTIONAL_TEXT)}
    texts |= {name: _text(event, name) for name in ("event_time", "currency", "payment_method", "channel")}
    if not texts["event_id"] or not texts["customer_id"]:
        raise Refused("missing id")
    if any(len(texts[name] or "") > MAX_ID_CHARS for name in ID_FIELDS):
        raise Refused("id too long")
    if len(texts["customer_email"] or "") > MAX_EMAIL_CHARS:
        raise Refused("customer_email too long")
    lines = event.get("items")
    if not isinstance(lines, list) or not 1 <= len(lines) <= MAX_ITEMS:
        raise Refused("items")
    items = tuple(_line(line) for line in lines)
    amount = _money(event.get("amount"), "amount")
    if abs(amount - sum(line.quantity * line.unit_price for line in items)) > CENT:
        raise Refused("amount does not match the lines")
    if texts["currency"] not in CURRENCIES or texts["payment_method"] not in PAYMENT_METHODS:
        raise Refused("currency or payment method")
    if texts["channel"] not in CHANNELS:
        raise Refused("channel")
    for name in ("ip_country", "shipping_country"):
        if texts[name] is not None and not COUNTRY.fullmatch(texts[name]):
            raise Refused(name)
    return Order(
        event_id=texts["event_id"],
        transaction_id=texts["transaction_id"],
        event_time=_event_time(texts["event_time"], now),
        customer_id=texts["customer_id"],
        customer_email=texts["customer_email"],
        items=items,
        amount=amount,
        currency=texts["currency"],
        payment_method=texts["payment_method"],
        channel=texts["channel"],
        device_id=texts["device_id"],
        ip_country=texts["ip_country"],
        shipping_country=texts["shipping_country"],
    )


def checked(value: bytes | None, now: dt.datetime) -> Order | None:
    """``order(value, now)``, or None when this path does not take the value."""
    try:
        return order(value, now)
    except Refused:
        return None
