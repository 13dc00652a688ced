"""Several job files in one Spark driver, one after another: ``spark-submit stages.py JOB ARGS [-- JOB ARGS ...]``.

Each job file runs as ``spark-submit`` runs it (as ``__main__``, with its own arguments in ``sys.argv``); they
share the driver's session (``ecom.spark.get_spark`` returns the running one). The Spark cluster test's
local-mode reference runs its stages this way: one JVM start-up instead of one per stage. Only the standard
library is imported here: the job files come from the shipped wheel, which ``--py-files`` puts on the path.
"""

from __future__ import annotations

import runpy
import sys


def split_runs(argv: list[str]) -> list[list[str]]:
    """``JOB ARGS -- JOB ARGS`` -> ``[[JOB, *ARGS], [JOB, *ARGS]]``."""
    runs: list[list[str]] = [[]]
    for arg in argv:
        if arg == "--":
            runs.append([])
        else:
            runs[-1].append(arg)
    return [run for run in runs if run]


def run_job(job_argv: list[str]) -> None:
    """Run the job file ``job_argv[0]`` as ``__main__`` with ``job_argv`` as its arguments; a non-zero exit
    ends the whole run with that exit."""
    sys.argv = list(job_argv)
    try:
        runpy.run_path(job_argv[0], run_name="__main__")
    except SystemExit as stop:
        if stop.code not in (None, 0):
            raise


if __name__ == "__main__":
    for job in split_runs(sys.argv[1:]):
        run_job(job)
