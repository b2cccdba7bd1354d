"""Headless Chromium for the browser tests: one page per test, its last state kept as a
screenshot, and screenshots of a screen at desktop and phone sizes in test-artifacts/."""

import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextmanager
def chromium_page(last_state: str, *, viewport: dict = DESKTOP, accept_dialogs: bool = False):
    """A page in a fresh browser. The caller sets DJANGO_ALLOW_ASYNC_UNSAFE: Playwright's sync
    API keeps an event loop running in the test's thread, and the test's own ORM calls (setup
    and assertions, never concurrent with it) are safe."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium package")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=viewport)
        page.set_default_timeout(30_000)
        if accept_dialogs:
            page.on("dialog", lambda dialog: dialog.accept())
        try:
            yield page
        finally:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"{last_state}.png"), full_page=True)
            browser.close()


def shoot(page, name: str, *, full_page: bool = False) -> None:
    """The same screen at desktop and at phone size."""
    ARTIFACTS.mkdir(exist_ok=True)
    for size, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(viewport)
        page.wait_for_timeout(150)
        page.screenshot(path=str(ARTIFACTS / f"{name}-{size}.png"), full_page=full_page)
    page.set_viewport_size(DESKTOP)


def log_in(page, base: str, email: str, password: str = "correct horse battery") -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")
