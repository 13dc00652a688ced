"""``ecom sql``: ad-hoc SQL over the lake's Delta tables with DuckDB, through delta-rs.

Tables are addressed by name, ``layer.table`` as in ``ecom.lake.TABLES``
(``silver.transactions``, ``gold.rfm``, ...). Only the tables a query names are
opened: each is a delta-rs ``DeltaTable`` at its current version (or at the
version or timestamp asked for), registered with an in-memory DuckDB as a
pyarrow dataset and exposed as a view ``layer.table``. Nothing is copied and
nothing is written: DuckDB's own Delta extension is not needed.

Time travel: ``--as-of-version N`` or ``--as-of TIMESTAMP`` applies to every
table the query names; ``TABLE=N`` / ``TABLE=TIMESTAMP`` to one of them (both
options repeat). A timestamp reads the last version committed at or before it.

Output: an aligned text table (``--format table``, at most ``--max-rows``
rows), CSV with a header, or a JSON array of objects; nested values (item
lines, reasons) are JSON in CSV. Exit codes: 0 done, 1 the query failed in
DuckDB, 2 an unknown table or a version that does not exist; each failure is
one line on stderr.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import decimal
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any

from ecom.settings import Settings

FORMATS = ("table", "csv", "json")
TABLE_CELL_CHARS = 48  # a longer value is cut in the text table (CSV and JSON keep it whole)
FETCH_ROWS = 10_000  # rows fetched from DuckDB at a time for CSV and JSON


class LakeSqlError(Exception):
    """A query that cannot run as asked: unknown table, missing table, version or timestamp out of range."""


@dataclass(frozen=True)
class TimeTravel:
    """Which state of one table to read: a version, a timestamp, or (both None) the current one."""

    version: int | None = None
    timestamp: dt.datetime | None = None


def known_tables() -> list[str]:
    """Every lake table by name, ``layer.table``, in the order of ``ecom.lake.TABLES``."""
    from ecom.lake import TABLES

    return [f"{layer}.{name}" for layer, name in TABLES]


def _walk_base_tables(node: Any, found: list[str]) -> list[str]:
    """Appends the ``schema.table`` of every qualified table reference in DuckDB's parse tree to ``found``."""
    if isinstance(node, dict):
        if node.get("type") == "BASE_TABLE" and node.get("schema_name"):
            found.append(f"{node['schema_name']}.{node['table_name']}".lower())
        for value in node.values():
            _walk_base_tables(value, found)
    elif isinstance(node, list):
        for value in node:
            _walk_base_tables(value, found)
    return found


def referenced_tables(query: str, layers: Iterable[str]) -> list[str]:
    """The ``layer.table`` names a query reads, in order of first mention, for the given layers.

    SELECT statements are parsed by DuckDB (a name inside a string literal is not a table); other
    statements (``DESCRIBE gold.rfm``, ``SUMMARIZE ...``) are scanned for ``layer.name`` words.
    """
    import duckdb

    layers = {layer.lower() for layer in layers}
    with duckdb.connect() as con:
        tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [query]).fetchone()[0])
    if tree.get("error"):
        pattern = r"\b(" + "|".join(map(re.escape, sorted(layers))) + r")\s*\.\s*\"?(\w+)\"?"
        names = [f"{layer}.{name}".lower() for layer, name in re.findall(pattern, query, flags=re.IGNORECASE)]
    else:
        names = _walk_base_tables(tree, [])
    return list(dict.fromkeys(n for n in names if n.split(".", 1)[0] in layers))


def _timestamp(text: str) -> dt.datetime:
    """An ISO-8601 time in UTC (a time without a zone is UTC)."""
    try:
        ts = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise LakeSqlError(f"not a timestamp (ISO-8601, e.g. 2026-11-01T00:00:00): {text}") from exc
    return ts.replace(tzinfo=dt.UTC) if ts.tzinfo is None else ts.astimezone(dt.UTC)


def _version(text: str) -> int:
    """A Delta table version: 0 or more."""
    if not text.isdigit():
        raise LakeSqlError(f"not a table version (0, 1, 2, ...): {text}")
    return int(text)


def time_travel(
    tables: Sequence[str], versions: Sequence[str] = (), timestamps: Sequence[str] = ()
) -> dict[str, TimeTravel]:
    """Each named table's ``TimeTravel`` from ``--as-of-version`` and ``--as-of`` values (``V`` or ``TABLE=V``)."""
    chosen: dict[str, TimeTravel] = {}

    def assign(values: Sequence[str], option: str, make) -> None:
        for value in values:
            target, _, raw = value.rpartition("=") if "=" in value else ("", "", value)
            target = target.strip().lower()
            if target and target not in tables:
                raise LakeSqlError(f"{option} names {target}, which the query does not read ({', '.join(tables)})")
            for table in [target] if target else tables:
                if table in chosen:
                    raise LakeSqlError(f"{table} is given more than one version or timestamp")
                chosen[table] = make(raw.strip())

    assign(versions, "--as-of-version", lambda raw: TimeTravel(version=_version(raw)))
    assign(timestamps, "--as-of", lambda raw: TimeTravel(timestamp=_timestamp(raw)))
    return chosen


def open_table(name: str, path: str, travel: TimeTravel):
    """The delta-rs ``DeltaTable`` of ``name`` at ``path``, loaded at the version or timestamp asked for."""
    from deltalake.exceptions import TableNotFoundError

    from ecom.storage import delta_table

    try:
        table = delta_table(path)
    except TableNotFoundError as exc:
        raise LakeSqlError(f"{name} has no Delta table at {path} yet (the stage that writes it has not run)") from exc
    latest = table.version()
    if travel.version is not None:
        if travel.version > latest:
            raise LakeSqlError(f"{name} has no version {travel.version}: its versions are 0 to {latest}")
        table.load_as_version(travel.version)
    elif travel.timestamp is not None:
        first = min(table.history(), key=lambda commit: commit["version"])
        created = dt.datetime.fromtimestamp(first["timestamp"] / 1000, dt.UTC)
        if travel.timestamp < created:
            raise LakeSqlError(
                f"{name} did not exist at {travel.timestamp.isoformat()}: "
                f"its first retained version {first['version']} is of {created.isoformat()}"
            )
        table.load_as_version(travel.timestamp)
    return table


def connect(settings: Settings, tables: Sequence[str], travel: dict[str, TimeTravel], log: IO[str] | None = None):
    """An in-memory DuckDB connection with a view ``layer.table`` over each of ``tables`` (delta-rs datasets)."""
    import duckdb

    con = duckdb.connect()
    for name in tables:
        layer, table_name = name.split(".", 1)
        chosen = travel.get(name, TimeTravel())
        table = open_table(name, settings.lake.table(layer, table_name), chosen)
        if log is not None and chosen != TimeTravel():
            print(f"{name}: version {table.version()}", file=log)
        source = f"__{layer}__{table_name}"
        con.register(source, table.to_pyarrow_dataset())
        con.execute(f'CREATE SCHEMA IF NOT EXISTS "{layer}"')
        con.execute(f'CREATE VIEW "{layer}"."{table_name}" AS SELECT * FROM "{source}"')
    return con


# -- output --------------------------------------------------------------------------------
def plain(value: Any) -> Any:
    """A DuckDB value as JSON can hold it: times ISO-8601, decimals as numbers, nested values kept."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def cell_text(value: Any) -> str:
    """One value as text: empty for null, decimals as written, JSON for nested values, ISO-8601 for times."""
    if value is None:
        return ""
    if isinstance(value, decimal.Decimal):
        return str(value)
    value = plain(value)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], more: bool = False) -> str:
    """An aligned text table (numbers right-aligned, long cells cut) with a row count line."""

    def cut(text: str) -> str:
        return text if len(text) <= TABLE_CELL_CHARS else text[: TABLE_CELL_CHARS - 1] + "…"

    cells = [[cut(cell_text(v)) for v in row] for row in rows]
    numeric = [
        bool(rows) and all(isinstance(row[i], int | float | decimal.Decimal) or row[i] is None for row in rows)
        for i in range(len(columns))
    ]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line(columns), "  ".join("-" * w for w in widths)]
    out.extend(line(row) for row in cells)
    count = f"{len(rows)} row{'' if len(rows) == 1 else 's'}"
    out.append(f"(first {count}; --max-rows for more, or --format csv)" if more else f"({count})")
    return "\n".join(out)


def write_csv(columns: Sequence[str], batches: Iterable[Sequence[Sequence[Any]]], out: IO[str]) -> int:
    """CSV with a header row; returns the rows written."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    written = 0
    for batch in batches:
        writer.writerows([cell_text(v) for v in row] for row in batch)
        written += len(batch)
    return written


def write_json(columns: Sequence[str], batches: Iterable[Sequence[Sequence[Any]]], out: IO[str]) -> int:
    """A JSON array with one object per row; returns the rows written."""
    written = 0
    out.write("[")
    for batch in batches:
        for row in batch:
            out.write(",\n" if written else "\n")
            out.write(json.dumps(dict(zip(columns, plain(list(row)), strict=True)), ensure_ascii=False))
            written += 1
    out.write("\n]\n" if written else "]\n")
    return written


def _batches(cursor) -> Iterable[list[tuple]]:
    """The rows of a DuckDB result, ``FETCH_ROWS`` at a time."""
    while batch := cursor.fetchmany(FETCH_ROWS):
        yield batch


def run_query(settings: Settings, query: str, args: argparse.Namespace, out: IO[str], err: IO[str]) -> None:
    """Open the tables ``query`` names, run it, write the result to ``out`` in ``args.format``."""
    known = known_tables()
    tables = referenced_tables(query, {name.split(".", 1)[0] for name in known})
    unknown = [name for name in tables if name not in known]
    if unknown:
        raise LakeSqlError(f"unknown table {', '.join(unknown)}; known tables: {', '.join(known)}")
    travel = time_travel(tables, args.as_of_version or (), args.as_of or ())
    con = connect(settings, tables, travel, log=err)
    cursor = con.execute(query)
    if cursor.description is None:  # a statement without a result
        return
    columns = [d[0] for d in cursor.description]
    if args.format == "csv":
        write_csv(columns, _batches(cursor), out)
    elif args.format == "json":
        write_json(columns, _batches(cursor), out)
    else:
        rows = cursor.fetchmany(args.max_rows + 1)
        print(format_table(columns, rows[: args.max_rows], more=len(rows) > args.max_rows), file=out)


def add_sql_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "query", help='SQL naming tables as layer.table, e.g. "select count(*) from gold.rfm"; - reads stdin'
    )
    parser.add_argument("--format", choices=FORMATS, default="table", help="table (default), csv or json")
    parser.add_argument(
        "--as-of-version",
        action="append",
        metavar="[TABLE=]N",
        help="read version N of every table named (or of TABLE only); repeatable",
    )
    parser.add_argument(
        "--as-of",
        action="append",
        metavar="[TABLE=]TIMESTAMP",
        help="read each table (or TABLE only) as it was at TIMESTAMP (ISO-8601, UTC if no zone); repeatable",
    )
    parser.add_argument("--max-rows", type=int, default=100, help="rows shown by --format table (default 100)")


def run_sql(settings: Settings, args: argparse.Namespace) -> int:
    """``ecom sql``: 0 done, 1 the query failed in DuckDB, 2 an unknown table or time travel out of range."""
    import duckdb

    query = sys.stdin.read() if args.query == "-" else args.query
    try:
        run_query(settings, query, args, sys.stdout, sys.stderr)
    except LakeSqlError as exc:
        print(f"ecom sql: {exc}", file=sys.stderr)
        return 2
    except duckdb.Error as exc:
        first_line = str(exc).strip().splitlines()[0]
        missing = re.search(r"Table with name (\S+) does not exist", first_line)
        if isinstance(exc, duckdb.CatalogException) and missing:
            print(
                f"ecom sql: unknown table {missing.group(1)} (lake tables are named layer.table); "
                f"known tables: {', '.join(known_tables())}",
                file=sys.stderr,
            )
            return 2
        print(f"ecom sql: {first_line}", file=sys.stderr)
        return 1
    return 0
