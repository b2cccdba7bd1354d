"""Site-wide UI in headless Chromium against a live server: the pages fit a 390 px phone with
tap targets of at least 32 px, the theme toggle (system / light / dark) is remembered and applied
before the first paint, and the error pages. Screenshots in both themes go to test-artifacts/."""

import pytest

from apps.conversations.tests.browser import ARTIFACTS, DESKTOP, PHONE, chromium_page, log_in, shoot

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MIN_TARGET_PX = 32
# Buttons, fields and menus anywhere; links where they are navigation (the top bar, nav menus,
# the sidebar), not links inside a sentence, which WCAG 2.5.8 exempts as inline targets.
TARGETS = (
    "button, summary, select, textarea, [role=button], "
    "input:not([type=hidden]):not([type=checkbox]):not([type=radio]), "
    ".topbar a, nav a, .new-chat, .conv-link"
)
# Inline citation markers inside an answer's text are inline targets too.
EXEMPT = ".cite"

SMALL_TARGETS_JS = """([selector, exempt, minimum]) => {
  const small = [];
  for (const el of document.querySelectorAll(selector)) {
    if (el.closest(exempt)) continue;
    const box = el.getBoundingClientRect();
    const style = getComputedStyle(el);
    if (box.width <= 1 || box.height <= 1 || style.visibility === "hidden") continue;  // not shown
    if (box.width < minimum || box.height < minimum) {
      const name = (el.getAttribute("aria-label") || el.textContent || el.name || "").trim().slice(0, 30);
      const size = `${Math.round(box.width)}x${Math.round(box.height)}`;
      small.push(`${el.tagName.toLowerCase()}.${el.className} "${name}" ${size}`);
    }
  }
  return small;
}"""


@pytest.fixture
def page(live_server_url, monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with chromium_page("site-ui-last-state", viewport=PHONE) as page:
        yield page


@pytest.fixture
def lived_in(make_user):
    """A user with a conversation (a code answer with a receipt), files, a context, a knowledge
    gap and an API key: the pages show their real content, not just empty states."""
    from apps.accounts.services import api_key_create
    from apps.conversations.models import Conversation, Message
    from apps.knowledge.models import Context, ContextFile, KnowledgeFile, KnowledgeGap

    user = make_user(email="ada@example.com", handle="ada")
    conversation = Conversation.objects.create(owner=user, title="Sorting a list in Python")
    question = Message.objects.create(
        conversation=conversation, owner=user, role="user", content="How do I sort a list of names in Python?"
    )
    answer = Message.objects.create(
        conversation=conversation,
        owner=user,
        parent=question,
        role="assistant",
        content=(
            "Use `sorted`, which returns a new list:\n\n```python\ndef by_name(names):\n"
            '    # case-insensitive\n    return sorted(names, key=str.lower)\n\nprint(by_name(["bob", "Ada"]))\n```'
        ),
        receipt={"model": "smollm2-135m", "prompt_tokens": 31, "completion_tokens": 42},
    )
    conversation.current_leaf = answer
    conversation.save()

    files = [
        KnowledgeFile.objects.create(
            owner=user,
            name="antarctic-station-field-safety-handbook-2024-edition.pdf",
            folder="research/safety",
            storage_path="unused",
            kind="pdf",
            size_bytes=2_400_000,
            sha256="a" * 64,
            status="ready",
            phase="done",
            chunks_total=48,
            chunks_done=48,
            page_count=12,
        ),
        KnowledgeFile.objects.create(
            owner=user,
            name="penguin-colonies.md",
            storage_path="unused",
            kind="markdown",
            size_bytes=18_000,
            sha256="b" * 64,
            status="processing",
            phase="embedding",
            chunks_total=20,
            chunks_done=7,
        ),
        KnowledgeFile.objects.create(
            owner=user,
            name="broken-scan.pdf",
            storage_path="unused",
            kind="pdf",
            size_bytes=900_000,
            sha256="c" * 64,
            status="failed",
            phase="done",
            error_message="The PDF has no text layer (a scan?); nothing could be extracted.",
        ),
    ]
    context = Context.objects.create(owner=user, name="Field season", description="Safety and wildlife notes.")
    ContextFile.objects.create(context=context, file=files[0])
    gap = KnowledgeGap.objects.create(owner=user, query="How cold does it get at the station in July?", best_score=0.31)
    gap.contexts.add(context)
    api_key_create(actor=user, name="laptop client")
    return {"user": user, "conversation": conversation, "context": context}


def _small_targets(page) -> list[str]:
    return page.evaluate(SMALL_TARGETS_JS, [TARGETS, EXEMPT, MIN_TARGET_PX])


def _sideways_overflow(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")


def test_phone_pages_fit_and_have_thumb_sized_targets(page, live_server_url, lived_in):
    base = live_server_url
    log_in(page, base, "ada@example.com")
    conversation, context = lived_in["conversation"], lived_in["context"]
    pages = {
        "chat": f"/c/{conversation.pk}/",
        "knowledge": "/knowledge/",
        "knowledge-context": f"/knowledge/contexts/{context.pk}/",
        "knowledge-gaps": "/knowledge/gaps/",
        "settings": "/accounts/settings/",
    }
    problems = {}
    for name, path in pages.items():
        page.goto(base + path, wait_until="load")  # not networkidle: the chat page polls /readyz
        assert page.evaluate("document.documentElement.clientWidth") == PHONE["width"]
        overflow = _sideways_overflow(page)
        if overflow > 0:
            problems[f"{name}: scrolls sideways by"] = overflow
        small = _small_targets(page)
        if small:
            problems[f"{name}: targets under {MIN_TARGET_PX} px"] = small
        # The folded top-bar menu, and the sidebar where there is one.
        page.click("button.nav-toggle")
        small = _small_targets(page)
        if small:
            problems[f"{name} (menu open): targets under {MIN_TARGET_PX} px"] = small
        page.click("button.nav-toggle")
        if page.locator(".menu-toggle").is_visible():
            page.click(".menu-toggle")
            page.locator(".sidebar").wait_for()
            small = _small_targets(page)
            if small:
                problems[f"{name} (sidebar open): targets under {MIN_TARGET_PX} px"] = small
            page.evaluate("document.body.classList.remove('show-sidebar')")
        page.screenshot(path=str(ARTIFACTS / f"site-ui-{name}-phone.png"), full_page=True)
    assert not problems, problems

    # The Knowledge page shows every file's name, status and actions on a phone.
    page.goto(base + "/knowledge/")
    row = page.locator("#file-table tr", has_text="antarctic-station-field-safety")
    assert row.locator("text=Ready").is_visible()
    assert row.locator("button >> text=Re-ingest").is_visible() and row.locator("button >> text=Delete").is_visible()
    assert page.locator("#file-table", has_text="no text layer").is_visible()
    # Only pages with a sidebar offer ☰; the settings page has none.
    page.goto(base + "/accounts/settings/")
    assert not page.locator(".menu-toggle").is_visible()


def test_theme_toggle_is_remembered_and_applied_before_first_paint(page, live_server_url, lived_in):
    base = live_server_url
    page.set_viewport_size(DESKTOP)
    page.emulate_media(color_scheme="light")
    # Records the theme <html> has when <body> first exists, i.e. before anything is painted.
    page.add_init_script(
        """new MutationObserver((records, observer) => {
             if (!document.body) return;
             window.themeAtBody = document.documentElement.getAttribute("data-theme") || "system";
             observer.disconnect();
           }).observe(document, {childList: true, subtree: true});"""
    )
    log_in(page, base, "ada@example.com")

    def background():
        return page.evaluate("getComputedStyle(document.body).backgroundColor")

    def theme():
        return page.evaluate("document.documentElement.getAttribute('data-theme')")

    toggle = page.locator("#theme-toggle")
    assert theme() is None and background() == "rgb(255, 255, 255)"
    assert "follows the system" in toggle.get_attribute("aria-label")
    # With no choice made, the system's dark scheme applies.
    page.emulate_media(color_scheme="dark")
    assert background() == "rgb(21, 23, 27)"
    # System → light (even though the system is dark) → dark → system.
    toggle.click()
    assert theme() == "light" and background() == "rgb(255, 255, 255)"
    assert "Colour theme: light" in toggle.get_attribute("aria-label")
    page.emulate_media(color_scheme="light")
    toggle.click()
    assert theme() == "dark" and background() == "rgb(21, 23, 27)"
    assert page.evaluate("localStorage.getItem('liminal-theme')") == "dark"

    # Remembered across pages, and on <html> before <body> exists (no white flash).
    for path in ("/knowledge/", "/accounts/settings/", "/no-such-page/"):
        page.goto(base + path)
        assert page.evaluate("window.themeAtBody") == "dark", path
        assert background() == "rgb(21, 23, 27)", path

    # Dark pages, looked at: chat with a code answer, knowledge, learning pages, settings, 404.
    screens = {
        "chat": f"/c/{lived_in['conversation'].pk}/",
        "knowledge": "/knowledge/",
        "knowledge-context": f"/knowledge/contexts/{lived_in['context'].pk}/",
        "feedback": "/feedback/",
        "memory": "/memory/",
        "adapters": "/adapters/",
        "skills": "/skills/",
        "settings": "/accounts/settings/",
        "not-found": "/no-such-page/",
    }
    for name, path in screens.items():
        # "load", not "networkidle": the chat page polls /readyz every 3 s while no worker has
        # a warm engine (none runs here), and under CI's load the quiet 500 ms never came.
        page.goto(base + path, wait_until="load")
        shoot(page, f"theme-dark-{name}", full_page=True)

    # Back to following the system; the choice is forgotten.
    page.click("#theme-toggle")
    assert theme() is None and page.evaluate("localStorage.getItem('liminal-theme')") is None
    page.goto(base + "/knowledge/")
    assert page.evaluate("window.themeAtBody") == "system" and background() == "rgb(255, 255, 255)"
    shoot(page, "theme-light-knowledge", full_page=True)


def test_error_pages_in_the_browser(page, live_server_url):
    page.set_viewport_size(DESKTOP)
    response = page.goto(f"{live_server_url}/no-such-page/")
    assert response.status == 404
    assert page.locator("h1").inner_text() == "Page not found"
    assert page.locator(".topbar a >> text=Log in").is_visible()
    shoot(page, "not-found-page")
