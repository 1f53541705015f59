"""The dashboard run headless under streamlit's AppTest: the app or one page, and the check that
a page drew without an exception or an error."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

DASH = Path(__file__).resolve().parents[2] / "apps" / "dashboard"
TIMEOUT = 180  # a page's first run loads a model (the crosscoder page's steering two); the machine is shared


def app() -> AppTest:
    return AppTest.from_file(str(DASH / "app.py"), default_timeout=TIMEOUT).run()


def page(name: str, **query) -> AppTest:
    """pages/NAME.py run once, with `query` as its URL's query parameters."""
    at = AppTest.from_file(str(DASH / "pages" / f"{name}.py"), default_timeout=TIMEOUT)
    for key, value in query.items():
        at.query_params[key] = value
    return at.run()


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at
