"""The ``ecom`` command line: a parser that loads no heavy library, ``--version``, the exit codes, one-line errors.

No services: the parser is built in a fresh interpreter (``sys.modules`` shows what building it imported);
errors are raised by stand-in commands or built from the libraries' own exception classes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

import pytest

from ecom import cli, errors

HEAVY = ("pyspark", "delta", "mlflow", "sklearn", "scipy", "pandas", "pyarrow", "deltalake", "duckdb", "dash",
         "plotly", "kafka", "psycopg2")  # fmt: skip

PARSE_EVERY_HELP = """
import contextlib, io, json, sys
from ecom import cli
parser = cli.build_parser()
commands = sorted(parser._subparsers._group_actions[0].choices)
helps = {}
for argv in [["--help"]] + [[c, "--help"] for c in commands]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        parser.parse_args(argv)
    helps[" ".join(argv)] = out.getvalue()
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:]))
print(json.dumps({"commands": commands, "helps": helps, "heavy": heavy}))
"""


def test_building_the_parser_and_every_help_imports_no_heavy_library():
    done = subprocess.run(
        [sys.executable, "-c", PARSE_EVERY_HELP, *HEAVY], capture_output=True, text=True, timeout=120, check=True
    )
    result = json.loads(done.stdout)
    assert result["heavy"] == []
    assert {"stream", "train", "rescore", "batch", "generate", "logs", "ui"} <= set(result["commands"])
    assert all(text.startswith("usage: ecom") for text in result["helps"].values())
    assert "--model-version" in result["helps"]["rescore --help"]  # the arguments of the lazy modules are there
    assert "--promote-challenger" in result["helps"]["train --help"]


def test_the_gold_job_names_of_the_parser_are_the_batch_jobs():
    from pipelines.gold import batch, job

    assert job.JOBS == batch.JOBS


def test_version_comes_from_the_package_metadata(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"ecom {metadata.version('ecom-lakehouse')}\n"


def test_help_lists_every_exit_code_once():
    codes = [code for code, _ in errors.EXIT_CODES]
    assert len(codes) == len(set(codes))
    typed = [errors.UnknownProfile, errors.MissingSecret, errors.PostgresUnreachable, errors.KafkaUnreachable,
             errors.JarsUnresolvable, errors.ServiceError]  # fmt: skip
    assert {cls.exit_code for cls in typed} <= set(codes)
    epilog = cli.build_parser().epilog
    for code, what in errors.EXIT_CODES:
        assert f"{code:>3}  {what}" in epilog


def test_the_readme_lists_the_same_exit_codes():
    from ecom.settings import ROOT

    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| exit code | meaning |") :].split("\n\n")[0]
    listed = [int(row.split("|")[1]) for row in table.splitlines()[2:]]
    assert listed == [code for code, _ in errors.EXIT_CODES]


def _fail_with(exc: BaseException):
    def command(args):
        raise exc

    return command


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.UnknownProfile("unknown profile 'x'"), 10),
        (errors.MissingSecret("ECOM_PII_KEY is not set"), 11),
        (errors.PostgresUnreachable("PostgreSQL is unreachable"), 12),
        (errors.KafkaUnreachable("no Kafka broker answers"), 13),
        (errors.JarsUnresolvable("mvn could not resolve the jars"), 14),
        (errors.ServiceError("port taken"), 2),
    ],
)
def test_an_expected_failure_is_one_line_and_its_exit_code(monkeypatch, capsys, exc, code):
    monkeypatch.setattr(cli, "cmd_migrate", _fail_with(exc))
    assert cli.main(["migrate"]) == code
    err = capsys.readouterr().err
    assert err == f"ecom: {exc}\n"


def test_debug_shows_the_traceback_too(monkeypatch, capsys):
    monkeypatch.setattr(cli, "cmd_migrate", _fail_with(errors.MissingSecret("ECOM_PII_KEY is not set")))
    assert cli.main(["migrate", "--debug"]) == 11
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.endswith("ecom: ECOM_PII_KEY is not set\n")
    monkeypatch.setenv("ECOM_DEBUG", "1")
    assert cli.main(["migrate"]) == 11
    assert "Traceback" in capsys.readouterr().err


def test_an_unexpected_error_keeps_its_traceback(monkeypatch):
    monkeypatch.setattr(cli, "cmd_migrate", _fail_with(ZeroDivisionError("a bug")))
    with pytest.raises(ZeroDivisionError):
        cli.main(["migrate"])


def test_library_exceptions_of_the_common_failures_are_translated(settings):
    import psycopg2
    from kafka.errors import KafkaTimeoutError

    refused = psycopg2.OperationalError('connection to server at "127.0.0.1", port 1 failed: Connection refused')
    error = errors.from_exception(refused, settings)
    assert isinstance(error, errors.PostgresUnreachable) and error.exit_code == 12
    assert f"{settings.postgres.host}:{settings.postgres.port}" in str(error) and "ecom up" in str(error)
    for refused_password in (
        'connection to server at "db", port 5432 failed: FATAL:  password authentication failed for user "ecom"',
        'connection to server at "db", port 5432 failed: fe_sendauth: no password supplied',
    ):
        error = errors.from_exception(psycopg2.OperationalError(refused_password), settings)
        assert isinstance(error, errors.MissingSecret) and "ECOM_POSTGRES_PASSWORD" in str(error)
    other = psycopg2.OperationalError('connection to server failed: FATAL:  database "nope" does not exist')
    assert errors.from_exception(other, settings) is None

    error = errors.from_exception(KafkaTimeoutError("Unable to bootstrap from ['127.0.0.1:1']"), settings)
    assert isinstance(error, errors.KafkaUnreachable) and settings.kafka.bootstrap_servers in str(error)
    assert errors.from_exception(KafkaTimeoutError("Batch for topic expired"), settings) is None

    try:
        try:
            raise refused
        except psycopg2.OperationalError as inner:
            raise RuntimeError("the sink failed") from inner
    except RuntimeError as outer:
        assert isinstance(errors.from_exception(outer), errors.PostgresUnreachable)  # found through the cause
    assert errors.from_exception(ValueError("other")) is None


def test_unknown_profile_is_typed_and_still_a_value_error():
    from ecom.settings import load_settings

    with pytest.raises(errors.UnknownProfile, match="unknown profile 'nope'; use one of .*test") as raised:
        load_settings("nope")
    assert isinstance(raised.value, ValueError)


class FinishingQuery:
    """A streaming query that finishes after ``polls`` waits, one more micro-batch done at each."""

    def __init__(self, polls: int) -> None:
        self.polls, self.recentProgress = polls, []
        self.status = {"message": "Processing new data", "isDataAvailable": True, "isTriggerActive": True}

    def awaitTermination(self, timeout: float) -> bool:  # noqa: N802 (pyspark's name)
        self.recentProgress.append({"batchId": len(self.recentProgress), "numInputRows": 1000})
        self.polls -= 1
        return self.polls < 0


def test_stream_once_reports_progress_while_it_runs(capsys):
    progress = cli.OnceProgress("stream all --once", every_s=0)
    progress.wait(FinishingQuery(polls=2))
    assert (progress.batches, progress.rows) == (3, 3000)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "stream all --once: 1 micro-batches done, 1,000 rows so far; processing new data",
        "stream all --once: 2 micro-batches done, 2,000 rows so far; processing new data",
    ]


def test_steps_are_numbered_on_stderr(capsys):
    from ecom.progress import Steps

    step = Steps("train", 2)
    step("reading silver")
    step("fitting")
    out = capsys.readouterr()
    assert out.out == ""
    assert [line.rsplit(" (", 1)[0] for line in out.err.splitlines()] == [
        "train [1/2] reading silver",
        "train [2/2] fitting",
    ]
