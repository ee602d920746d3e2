"""Browser fixtures: Playwright (sync API) driving Debian's Chromium against a real hotspotd.

``browser`` is one headless Chromium for the whole ``tests/e2e`` package; ``phone`` and ``desktop``
are a fresh page in a fresh context (no cookies, no cache) per test; ``daemon`` is a hotspotd on
port 0 with RADIUS, the scheduler, the Daraja simulator and the simulated MikroTik.

Gotchas:

- The browser is package-scoped, not session-scoped: while Playwright's sync API is started it
  leaves its asyncio loop marked as *running* in the main thread between calls, so ``asyncio.run()``
  (or a second ``sync_playwright()``) anywhere in the process fails with "cannot be called from a
  running event loop". Stopping Playwright after the last browser test keeps the rest of the suite
  free of that loop. Use the sync API only; no pytest-asyncio here.
- Never ``playwright install``: its browser download does not work here; Debian's Chromium is
  installed by ``scripts/bootstrap --test``. As root Chromium needs ``--no-sandbox``.
- The portal's Content-Security-Policy forbids eval, so ``page.wait_for_function("…")`` fails
  ("violates … 'unsafe-eval'"). Wait with ``expect(locator)…`` (it retries, also across the wait
  page's reloads); ``page.evaluate`` is fine. Don't ``bypass_csp``: the tests should see the real policy.
- ``page.on(event, handler)`` needs a Python function or lambda, not a builtin such as ``list.append``
  (Playwright sets an attribute on the handler).
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.helpers import DESKTOP, PHONE, RADIUS

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
TIMEOUT_MS = 10_000   # Playwright's default of 30 s only makes a broken page slower to report


def launch_chromium(playwright, **kwargs):
    """Debian's Chromium, headless. Root needs ``--no-sandbox`` (Chromium refuses to start as root
    with its sandbox; Playwright also adds it unless ``chromium_sandbox=True``)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: run scripts/bootstrap --test (apt package chromium); "
                    "never `playwright install`, its browser download does not work here")
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    return playwright.chromium.launch(executable_path=CHROMIUM, args=args, headless=True, **kwargs)


@pytest.fixture(scope="package")
def browser():
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()
    finally:
        playwright.stop()


def _page(browser, options):
    context = browser.new_context(**options)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def phone(browser):
    """A page on a 360×740 Android phone (touch, 2× pixels, en-KE)."""
    yield from _page(browser, PHONE)


@pytest.fixture
def desktop(browser):
    """A page on a 1366×768 laptop browser."""
    yield from _page(browser, DESKTOP)


@pytest.fixture
def new_page(browser):
    """``new_page(**context_options)``: a page in a context of your own (e.g. ``java_script_enabled=False``),
    closed after the test."""
    contexts = []

    def make(**options):
        context = browser.new_context(**options)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def screenshots() -> Path:
    """``test-artifacts/screenshots/`` at the repository root (git-ignored), created if missing."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture
def daemon(make_hotspot):
    """A running hotspotd: portal on port 0, RADIUS on port 0, scheduler on, simulated Daraja and MikroTik."""
    return make_hotspot(radius=RADIUS, scheduler={"enabled": True})


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class RequestLog:
    """Every URL a page requests (documents, CSS, JS, images, favicon, form posts), in order."""

    def __init__(self, page):
        self.urls: list[str] = []
        page.on("request", lambda request: self.urls.append(request.url))

    def outside(self, allowed_origin: str) -> list[str]:
        """The requests that went anywhere but ``allowed_origin`` (``data:`` URLs fetch nothing)."""
        allowed = origin(allowed_origin)
        return [u for u in self.urls if not u.startswith("data:") and origin(u) != allowed]


@pytest.fixture
def record_requests():
    """``record_requests(page)`` → a :class:`RequestLog` filled as the page loads things."""
    return RequestLog
