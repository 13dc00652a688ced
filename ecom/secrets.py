"""Secrets, from the environment only.

``ECOM_PII_KEY`` keys the HMAC that pseudonymises e-mail addresses. For the
embedded profiles (local, test) a missing key is generated once into
``<data_dir>/secrets/pii_key`` (mode 0600, never committed) so the demo runs
without set-up; every other profile must set the variable.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from ecom.settings import Settings

EMBEDDED_PROFILES = {"local", "test"}


class MissingSecret(RuntimeError):
    pass


def pii_key(settings: Settings) -> bytes:
    value = os.environ.get("ECOM_PII_KEY")
    if value:
        return value.encode()
    if settings.profile not in EMBEDDED_PROFILES:
        raise MissingSecret(f"ECOM_PII_KEY is not set; profile {settings.profile!r} needs it to pseudonymise e-mails")
    path = Path(settings.data_dir) / "secrets" / "pii_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip().encode()
