"""``ecom stream alerts`` lowers its CPU priority, and its session's autogroup's where the kernel has one."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import os
from ecom.cli import lower_priority
{setsid}
lower_priority(7)
group = "none"
if os.path.exists("/proc/self/autogroup"):
    with open("/proc/self/autogroup") as f:
        group = (f.read().split() or ["none"])[-1]
print(os.nice(0), group)
"""


def shell_autogroup() -> str | None:
    """This process's autogroup nice, or None where the kernel has none or shows none (some sandboxes keep the
    file but leave it empty)."""
    try:
        with open("/proc/self/autogroup") as f:
            fields = f.read().split()
    except OSError:
        return None
    return fields[-1] if fields else None


def probe(own_session: bool) -> tuple[int, str]:
    code = PROBE.format(setsid="os.setsid()" if own_session else "")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), out[1]


def test_a_process_in_its_own_session_lowers_itself_and_its_autogroup():
    nice, group = probe(own_session=True)
    assert nice == os.nice(0) + 7
    if group != "none":
        assert group == "7"


@pytest.mark.skipif(shell_autogroup() is None, reason="no readable autogroup on this kernel")
def test_a_process_started_from_a_shell_leaves_the_shells_group_alone():
    before = shell_autogroup()
    nice, group = probe(own_session=False)
    assert nice == os.nice(0) + 7 and group == before
