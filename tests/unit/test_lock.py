"""requirements.lock is in step with pyproject.toml: every dependency (and dev tool) is pinned, with hashes, at a
version pyproject allows. A failure here means `make lock` was not run after editing the dependencies."""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ecom.settings import ROOT

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def lock_pins() -> dict[str, str]:
    """Package name -> pinned version; each pin must carry at least one hash."""
    pins: dict[str, str] = {}
    lines = (ROOT / "requirements.lock").read_text().splitlines()
    for i, line in enumerate(lines):
        match = PIN.match(line)
        if match:
            assert lines[i + 1].strip().startswith("--hash=sha256:"), f"{line}: no hash"
            pins[canonicalize_name(match[1])] = match[2]
    return pins


def test_every_dependency_and_dev_tool_is_pinned_at_an_allowed_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = lock_pins()
    for spec in project["dependencies"] + project["optional-dependencies"]["dev"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in requirements.lock: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {req.name}=={pins[name]}, outside {req.specifier}: run `make lock`"
        )
