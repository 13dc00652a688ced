"""``make chaos``: the fault suite against the real local stack, ending with a table of its checks.

Runs pytest sessions of the test profile (its Kafka, PostgreSQL and data folder; started if they are not
running, and stopped again afterwards):

- ``faults``: every test marked ``fault`` (they also run in the default suite) or ``chaos`` (only here):
  records a sink refuses, PostgreSQL stopped mid-stream, the broker stopped under load (15 s and 60 s, the
  producer alone and with the stream running), kill -9 of the stream at every point, a second stream on a
  checkpoint in use, alert sends Kafka does not confirm, crash-safe PostgreSQL, pid reuse, an interrupted demo;
- ``fuzzer``: the payload fuzzer over the whole silver path with ``--fuzz-examples`` examples.

Tests hand their figures to pytest's ``record_property`` (counts; names ending in ``_s`` are seconds, such
as recovery times). The table lists each check: pass or fail, its counts, its times, how long it took.
``--doc FILE`` also writes the table into FILE, between the ``chaos-table`` markers.

    python -m tests.chaos                       # everything (about an hour on 2 cores)
    python -m tests.chaos -k kafka_outage       # only the checks whose name matches
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUZZER = "tests/integration/test_fuzz_path.py"
SUITES = {
    "faults": ["tests", "-m", "fault or chaos", f"--ignore={FUZZER}"],
    "fuzzer": [FUZZER],
}
START, END = "<!-- chaos-table:start -->", "<!-- chaos-table:end -->"


@dataclass
class Check:
    """One test of the run, as the JUnit report has it."""

    suite: str
    name: str
    outcome: str  # pass, FAIL, skip
    seconds: float
    figures: dict[str, str] = field(default_factory=dict)

    @property
    def counts(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.figures.items() if not k.endswith("_s"))

    @property
    def times(self) -> str:
        return ", ".join(f"{k[:-2]} {v} s" for k, v in self.figures.items() if k.endswith("_s"))


def readable(classname: str, name: str) -> str:
    """``tests.integration.test_kafka_outage`` + ``test_a_broker_outage[15.0]`` -> ``kafka outage: a broker outage [15.0]``."""
    module = classname.rsplit(".", 1)[-1].removeprefix("test_").replace("_", " ")
    function, _, params = name.partition("[")
    words = function.removeprefix("test_").replace("_", " ")
    return f"{module}: {words}" + (f" [{params}" if params else "")


def read_report(suite: str, path: Path) -> list[Check]:
    """The checks of one JUnit XML report (xunit1, so properties are kept)."""
    if not path.exists():
        return [Check(suite, f"{suite}: pytest wrote no report", "FAIL", 0.0)]
    checks = []
    for case in ET.parse(path).iter("testcase"):
        if case.find("skipped") is not None:
            outcome = "skip"
        elif case.find("failure") is not None or case.find("error") is not None:
            outcome = "FAIL"
        else:
            outcome = "pass"
        figures = {p.get("name"): p.get("value") for p in case.iter("property")}
        checks.append(Check(suite, readable(case.get("classname", ""), case.get("name", "")), outcome,
                            float(case.get("time") or 0), figures))  # fmt: skip
    return checks


def table(checks: list[Check]) -> str:
    """A Markdown table: one row per check."""
    rows = ["| check | result | counts | times | took |", "| --- | --- | --- | --- | ---: |"]
    rows += [f"| {c.name} | {c.outcome} | {c.counts} | {c.times} | {c.seconds:.0f} s |" for c in checks]
    return "\n".join(rows)


def summary(checks: list[Check], started: datetime, wall_s: float) -> str:
    passed = sum(c.outcome == "pass" for c in checks)
    failed = sum(c.outcome == "FAIL" for c in checks)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    machine = f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores"
    return (
        f"{started:%Y-%m-%d %H:%M} UTC, commit {commit.stdout.strip() or 'unknown'}, {machine}: "
        f"{passed} passed, {failed} failed, {len(checks) - passed - failed} skipped in {wall_s / 60:.0f} min"
    )


def write_doc(doc: Path, text: str) -> None:
    """Replace what stands between the chaos-table markers of ``doc`` by ``text``."""
    content = doc.read_text()
    if START not in content or END not in content:
        raise SystemExit(f"{doc} has no {START} ... {END} block to write the table into")
    head, rest = content.split(START, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{START}\n{text}\n{END}{tail}")


def stack_running() -> bool:
    from ecom.runtime.kafka import EmbeddedKafka
    from ecom.runtime.postgres import EmbeddedPostgres
    from ecom.settings import load_settings

    settings = load_settings("test")
    return EmbeddedKafka(settings).is_running() and EmbeddedPostgres(settings).is_running()


def run(args: argparse.Namespace) -> int:
    started, clock = datetime.now(UTC), time.monotonic()
    was_running = stack_running()
    env = {
        **os.environ,
        "ECOM_PROFILE": "test",
        "ECOM_TEST_KEEP_STACK": "1",  # one stack for every session; stopped below if this run started it
        "ECOM_FUZZ_EXAMPLES": str(args.fuzz_examples),
    }
    checks: list[Check] = []
    with tempfile.TemporaryDirectory(prefix="ecom-chaos-") as reports:
        for suite, selection in SUITES.items():
            if args.suite and suite not in args.suite:
                continue
            report = Path(reports) / f"{suite}.xml"
            cmd = [sys.executable, "-m", "pytest", *selection, "-v", "-p", "no:cacheprovider",
                   "-o", "junit_family=xunit1", f"--junitxml={report}", *(["-k", args.keyword] if args.keyword else [])]  # fmt: skip
            print(f"\n=== {suite}: {' '.join(cmd[3:])}", flush=True)
            subprocess.run(cmd, cwd=ROOT, env=env)
            checks += read_report(suite, report)
    if not was_running and not os.environ.get("ECOM_TEST_KEEP_STACK"):
        from ecom.runtime import stack
        from ecom.settings import load_settings

        stack.down(load_settings("test"), log=lambda *_: None)
    text = f"{summary(checks, started, time.monotonic() - clock)}\n\n{table(checks)}"
    print(f"\n{text}")
    if args.doc:
        write_doc(args.doc, text)
        print(f"\ntable written to {args.doc}")
    return 1 if not checks or any(c.outcome == "FAIL" for c in checks) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos",
        description="Run the fault suite (outages, kill -9, interrupts, fuzzing) against the real local stack "
        "of the test profile and print a table: each check, pass or fail, its counts and recovery times.",
    )
    parser.add_argument("--fuzz-examples", type=int, default=200, help="payload fuzzer examples (default 200)")
    parser.add_argument("-k", dest="keyword", help="only checks whose name matches this pytest -k expression")
    parser.add_argument("--suite", action="append", choices=sorted(SUITES), help="run only this suite (repeatable)")
    parser.add_argument("--doc", type=Path, help="also write the table into this Markdown file (chaos-table block)")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
