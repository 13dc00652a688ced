"""One Dash app for the session, so the page modules (registered by it) can be imported by the tests."""

import pytest


@pytest.fixture(scope="session")
def dash_app(settings):
    from dashboard.app import create_app

    return create_app(settings, users={})
