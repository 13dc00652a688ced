"""Sign-in for the dashboard: users with password hashes from the environment or a secrets file.

Layer: dashboard. Input: ``ECOM_DASHBOARD_USERS`` (entries ``name:hash``,
separated by new lines or commas) and/or ``ECOM_DASHBOARD_USERS_FILE`` (a file
outside the repository, one ``name:hash`` per line, ``#`` comments), where a
hash is a Werkzeug password hash (scrypt or pbkdf2); ``ECOM_DASHBOARD_SECRET_KEY``
signs the session cookie (without it, a random key: sessions end when the
dashboard restarts); ``ECOM_DASHBOARD_SECURE_COOKIE=1`` behind HTTPS. Output:
a login form at ``/login``, ``/logout``, and a
guard in front of every other route: pages redirect to the form, data requests
get 401. Outside the test profile the dashboard refuses to start without users.

``python -m dashboard.auth NAME`` asks for a password and prints the ``NAME:hash``
line to add to the users file.
"""

from __future__ import annotations

import getpass
import hmac
import html
import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from flask import Flask, Response, redirect, request, session
from werkzeug.security import check_password_hash, generate_password_hash

USERS_ENV = "ECOM_DASHBOARD_USERS"
USERS_FILE_ENV = "ECOM_DASHBOARD_USERS_FILE"
SECRET_KEY_ENV = "ECOM_DASHBOARD_SECRET_KEY"
SECURE_COOKIE_ENV = "ECOM_DASHBOARD_SECURE_COOKIE"  # "1" behind HTTPS: the session cookie is sent over HTTPS only
NO_AUTH_PROFILES = {"test"}  # the only profile that may serve without users (tests that do not sign in)
HASH_METHODS = ("scrypt:", "pbkdf2:")
PUBLIC_PATHS = ("/login", "/assets/bootstrap-cyborg", "/_favicon.ico", "/favicon.ico", "/healthz")
_DUMMY_HASH = generate_password_hash("not a password")  # unknown users take as long as wrong passwords


class AuthConfigError(RuntimeError):
    """The dashboard has no usable users; the message says how to add one."""


def parse_users(text: str, source: str) -> dict[str, str]:
    """``name:hash`` entries (new lines or commas between them) -> {name: hash}; plain passwords are refused."""
    users: dict[str, str] = {}
    for raw in text.replace(",", "\n").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, hashed = line.partition(":")
        if not sep or not name.strip():
            raise AuthConfigError(f"{source}: an entry is not 'name:hash'")
        if not hashed.startswith(HASH_METHODS):
            raise AuthConfigError(
                f"{source}: the password of {name.strip()!r} is not a scrypt or pbkdf2 hash; "
                "make one with `python -m dashboard.auth NAME`"
            )
        users[name.strip()] = hashed.strip()
    return users


def load_users(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Users from ``ECOM_DASHBOARD_USERS`` and ``ECOM_DASHBOARD_USERS_FILE`` (both may be set)."""
    env = os.environ if environ is None else environ
    users = parse_users(env.get(USERS_ENV, ""), USERS_ENV)
    path = env.get(USERS_FILE_ENV)
    if path:
        file = Path(path).expanduser()
        if not file.is_file():
            raise AuthConfigError(f"{USERS_FILE_ENV}={path}: no such file")
        users.update(parse_users(file.read_text(), str(file)))
    return users


def required_users(profile: str, environ: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """The users to sign in with, or None (sign-in off) in the test profile when none are given.
    Raises ``AuthConfigError`` with instructions in any other profile without users."""
    users = load_users(environ)
    if users:
        return users
    if profile in NO_AUTH_PROFILES:
        return None
    raise AuthConfigError(
        f"the dashboard needs at least one user to sign in (profile {profile!r}). Create a password hash with "
        f"`python -m dashboard.auth NAME` and put the printed line in {USERS_ENV} or in a file outside the "
        f"repository named by {USERS_FILE_ENV}; `ecom demo` makes a demo user by itself."
    )


def verify(users: Mapping[str, str], name: str, password: str) -> bool:
    """True if ``name`` is a user and ``password`` matches its hash (same work for unknown names)."""
    hashed = users.get(name)
    ok = check_password_hash(hashed or _DUMMY_HASH, password)
    return ok and hashed is not None


def current_user() -> str | None:
    """The signed-in user of this request (``None`` without a session)."""
    return session.get("user")


def _safe_next(target: str | None) -> str:
    """Only same-site paths: never redirect to another host after sign-in."""
    if not target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


def _login_page(error: str = "", next_path: str = "/", token: str = "") -> str:
    message = f'<div class="alert alert-danger py-2">{html.escape(error)}</div>' if error else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · E-commerce lakehouse</title>
<link rel="stylesheet" href="/assets/bootstrap-cyborg-5.3.8.min.css"></head>
<body><main class="container" style="max-width: 24rem; padding-top: 12vh">
<h1 class="h4 mb-3">E-commerce lakehouse</h1>
<form method="post" action="/login" id="login-form">{message}
<input type="hidden" name="next" value="{html.escape(next_path)}"><input type="hidden" name="token" value="{token}">
<div class="mb-3"><label class="form-label" for="username">User</label>
<input class="form-control" id="username" name="username" autocomplete="username" required autofocus></div>
<div class="mb-3"><label class="form-label" for="password">Password</label>
<input class="form-control" id="password" name="password" type="password" autocomplete="current-password" required>
</div><button class="btn btn-primary w-100" id="login-submit" type="submit">Sign in</button></form>
</main></body></html>"""


def install(server: Flask, users: Mapping[str, str] | None, secret_key: str | None = None) -> None:
    """Add the session key, ``/login``, ``/logout`` and the guard to ``server``; ``users=None`` turns
    sign-in off (test profile only, see ``required_users``)."""
    server.secret_key = secret_key or os.environ.get(SECRET_KEY_ENV) or secrets.token_hex(32)
    server.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=os.environ.get(SECURE_COOKIE_ENV) == "1",
    )
    server.config["ECOM_AUTH_ENABLED"] = users is not None

    @server.route("/healthz")
    def healthz() -> Response:
        return Response("ok\n", mimetype="text/plain")

    if users is None:
        return

    @server.before_request
    def guard():
        if current_user() or request.path.startswith(PUBLIC_PATHS):
            return None
        wants_page = request.method == "GET" and "text/html" in request.headers.get("Accept", "")
        if wants_page and not request.path.startswith("/_dash"):
            return redirect(f"/login?next={request.full_path.rstrip('?')}")
        return Response('{"error": "sign in first"}', status=401, mimetype="application/json")

    @server.route("/login", methods=["GET", "POST"])
    def login():
        if request.method == "GET":  # one token per browser session: a second tab's form stays valid
            token = session.setdefault("login_token", secrets.token_urlsafe(16))
            return _login_page(next_path=_safe_next(request.args.get("next")), token=token)
        form = request.form
        next_path = _safe_next(form.get("next"))
        expected = session.get("login_token", "")
        if not expected or not hmac.compare_digest(expected, form.get("token", "")):
            session["login_token"] = token = secrets.token_urlsafe(16)
            return _login_page("The form expired; please sign in again.", next_path, token), 400
        name = form.get("username", "").strip()
        if not verify(users, name, form.get("password", "")):
            return _login_page("Wrong user or password.", next_path, expected), 401
        session.clear()
        session["user"] = name
        return redirect(next_path)

    @server.route("/logout")
    def logout():
        session.clear()
        return redirect("/login")


def main(argv: list[str] | None = None) -> int:
    """``python -m dashboard.auth NAME``: print ``NAME:hash`` for a password typed twice."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[0])
        print("usage: python -m dashboard.auth NAME   (prints NAME:hash for the users file)")
        return 0 if args and args[0] in ("-h", "--help") else 2
    password = getpass.getpass(f"password for {args[0]}: ")
    if password != getpass.getpass("again: "):
        print("the passwords differ", file=sys.stderr)
        return 1
    if len(password) < 10:
        print("use at least 10 characters", file=sys.stderr)
        return 1
    print(f"{args[0]}:{generate_password_hash(password)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
