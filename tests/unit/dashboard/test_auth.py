"""Sign-in: users from the environment or a file, hashes only, refused without users outside the test profile,
and the guard in front of every route (a bare Flask app, no browser)."""

import re

import pytest
from flask import Flask
from werkzeug.security import generate_password_hash

from dashboard import auth

HASH = generate_password_hash("correct horse battery")


def test_users_come_from_the_variable_and_the_file_together(tmp_path):
    other = generate_password_hash("another secret")
    file = tmp_path / "users"
    file.write_text(f"# analysts\nbob:{other}\n")
    users = auth.load_users({auth.USERS_ENV: f"alice:{HASH}", auth.USERS_FILE_ENV: str(file)})
    assert users == {"alice": HASH, "bob": other}


def test_entries_may_be_separated_by_commas_or_new_lines():
    text = f"alice:{HASH},\n bob:{HASH}\n"
    assert set(auth.parse_users(text, "env")) == {"alice", "bob"}


@pytest.mark.parametrize("entry", ["alice:hunter2", "alice", ":" + HASH])
def test_plain_passwords_and_malformed_entries_are_refused(entry):
    with pytest.raises(auth.AuthConfigError):
        auth.parse_users(entry, "env")


def test_a_missing_users_file_is_an_error_not_an_empty_list(tmp_path):
    with pytest.raises(auth.AuthConfigError, match="no such file"):
        auth.load_users({auth.USERS_FILE_ENV: str(tmp_path / "absent")})


def test_outside_the_test_profile_the_dashboard_refuses_to_start_without_users():
    with pytest.raises(auth.AuthConfigError, match="python -m dashboard.auth"):
        auth.required_users("local", {})
    assert auth.required_users("test", {}) is None  # sign-in off for tests that do not sign in
    assert auth.required_users("local", {auth.USERS_ENV: f"alice:{HASH}"}) == {"alice": HASH}


def test_verify_accepts_only_the_right_password_of_a_known_user():
    users = {"alice": HASH}
    assert auth.verify(users, "alice", "correct horse battery")
    assert not auth.verify(users, "alice", "wrong")
    assert not auth.verify(users, "mallory", "correct horse battery")


@pytest.fixture
def client():
    server = Flask(__name__)
    auth.install(server, {"alice": HASH}, secret_key="k" * 32)

    @server.route("/")
    def home():
        return "dashboard"

    @server.route("/_dash-update-component", methods=["POST"])
    def data():
        return "{}"

    return server.test_client()


def _token(client, path="/login") -> str:
    return re.search(r'name="token" value="([^"]+)"', client.get(path).get_data(as_text=True)).group(1)


def test_without_a_session_pages_redirect_to_sign_in_and_data_requests_get_401(client):
    page = client.get("/fraud?x=1", headers={"Accept": "text/html"})
    assert page.status_code == 302 and page.headers["Location"].endswith("/login?next=/fraud?x=1")
    assert client.post("/_dash-update-component", json={}).status_code == 401
    assert client.get("/favicon.ico", headers={"Accept": "image/*"}).status_code in (401, 404)


def test_signing_in_opens_the_pages_and_signing_out_closes_them(client):
    token = _token(client)
    bad = client.post("/login", data={"username": "alice", "password": "nope", "token": token})
    assert bad.status_code == 401 and "Wrong user or password" in bad.get_data(as_text=True)
    ok = client.post("/login", data={"username": "alice", "password": "correct horse battery", "token": token,
                                     "next": "/fraud"})  # fmt: skip
    assert ok.status_code == 302 and ok.headers["Location"] == "/fraud"
    assert client.get("/").get_data(as_text=True) == "dashboard"
    assert client.post("/_dash-update-component", json={}).status_code == 200
    client.get("/logout")
    assert client.post("/_dash-update-component", json={}).status_code == 401


def test_a_post_without_the_form_token_is_refused(client):
    client.get("/login")
    response = client.post("/login", data={"username": "alice", "password": "correct horse battery"})
    assert response.status_code == 400
    assert client.post("/_dash-update-component", json={}).status_code == 401


def test_after_sign_in_only_same_site_paths_are_followed(client):
    token = _token(client)
    response = client.post("/login", data={"username": "alice", "password": "correct horse battery",
                                           "token": token, "next": "https://evil.example/"})  # fmt: skip
    assert response.headers["Location"] == "/"


def test_the_login_page_escapes_what_it_echoes(client):
    body = client.get('/login?next=/"><script>x</script>').get_data(as_text=True)
    assert "<script>x</script>" not in body
