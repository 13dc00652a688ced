"""Secrets, from the environment only (or generated on this machine for the embedded profiles).

``ECOM_PII_KEY`` keys the HMAC that pseudonymises e-mail addresses. For the
embedded profiles (local, test) a missing key is generated once into
``<data_dir>/secrets/pii_key`` (mode 0600, never committed) so the demo runs
without set-up; every other profile must set the variable.

PostgreSQL passwords: the configured user's comes from ``ECOM_POSTGRES_PASSWORD``
or ``postgres.credentials_file``; the roles of migration 0005 (dashboard reader,
triage analyst, pipeline writer) from ``ECOM_POSTGRES_<ROLE>_PASSWORD``. For the
embedded server with SCRAM (``postgres.auth``), missing ones are generated once
into ``<data_dir>/secrets/`` (mode 0600) and set on the server by ``ecom up``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from ecom.errors import MissingSecret
from ecom.settings import Settings

EMBEDDED_PROFILES = {"local", "test"}


def pii_key(settings: Settings) -> bytes:
    value = os.environ.get("ECOM_PII_KEY")
    if value:
        return value.encode()
    if settings.profile not in EMBEDDED_PROFILES:
        raise MissingSecret(
            f"ECOM_PII_KEY is not set; profile {settings.profile!r} needs it to pseudonymise e-mails: "
            "export ECOM_PII_KEY=<a long random string> (keep it: changing it changes every e-mail hash)"
        )
    return generated_secret(Path(settings.data_dir) / "secrets" / "pii_key").encode()


def generated_secret(path: Path) -> str:
    """The secret stored in ``path``, made (random hex, file mode 0600) the first time."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # made meanwhile by another process
            return path.read_text().strip()
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip()


# PostgreSQL roles of migration 0005 -> the variable holding the role's password
ROLE_PASSWORD_ENV = {
    "ecom_reader": "ECOM_POSTGRES_READER_PASSWORD",
    "ecom_analyst": "ECOM_POSTGRES_ANALYST_PASSWORD",
    "ecom_writer": "ECOM_POSTGRES_WRITER_PASSWORD",
}


def _generates_postgres_passwords(settings: Settings) -> bool:
    pg = settings.postgres
    return pg.embedded and pg.auth == "scram" and bool(pg.credentials_file)


def postgres_password(settings: Settings) -> str | None:
    """The configured user's password (``postgres.password``); for the embedded server with SCRAM and none
    set, made once into ``postgres.credentials_file``."""
    if settings.postgres.password is None and _generates_postgres_passwords(settings):
        return generated_secret(Path(settings.postgres.credentials_file))
    return settings.postgres.password


def role_password(settings: Settings, role: str, environ: dict[str, str] | None = None) -> str | None:
    """The password of a role (``ecom_reader``, ``ecom_analyst``, ``ecom_writer``): its variable
    (``ROLE_PASSWORD_ENV``); for the embedded server with SCRAM, else one made once next to the credentials
    file; else None (a trusting server, or one whose operator sets role passwords)."""
    env = os.environ if environ is None else environ
    if env.get(ROLE_PASSWORD_ENV[role]):
        return env[ROLE_PASSWORD_ENV[role]]
    if _generates_postgres_passwords(settings):
        return generated_secret(Path(settings.postgres.credentials_file).parent / f"postgres_{role}")
    return None
