"""Headless Chromium for the page tests: Debian's `chromium` driven by playwright (its own
browser download is never used). Tests skip, saying why, when either is missing."""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install playwright; never `playwright install`)"
    if shutil.which("chromium") is None:
        return "Debian chromium is not installed (apt-get install -y chromium)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Module-scoped: playwright's sync API keeps an event loop running in this thread while it
    is open, and the pipeline fixture's commands call asyncio.run; a module that needs both asks
    for the pipeline first."""
    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    """A page that fails the test if any dialog (alert, confirm) opens: injected script ran."""
    dialogs: list[str] = []
    context = browser.new_context()  # type: ignore[attr-defined]
    page = context.new_page()
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    yield page
    context.close()
    assert dialogs == [], f"a dialog opened: script from the data ran: {dialogs}"
