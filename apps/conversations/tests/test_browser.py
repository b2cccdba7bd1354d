"""The main chat flows in headless Chromium against a live server and a real worker."""

import pytest

from apps.conversations.tests.browser import ARTIFACTS, chromium_page

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def page(live_server_url, monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with chromium_page("chat-last-state", viewport={"width": 1200, "height": 800}) as page:
        yield page


def _final_answer(page, timeout=180_000):
    page.wait_for_selector(".msg.assistant:not(.queued):not(.streaming)", timeout=timeout)
    return page.locator(".msg.assistant").last


def test_chat_in_a_real_browser(page, live_server_url, celery_worker_process, make_user):
    from apps.conversations.models import Message

    make_user(email="browser@example.com")
    page.goto(f"{live_server_url}/accounts/login/")
    page.fill("input[name=email]", "browser@example.com")
    page.fill("input[name=password]", "correct horse battery")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server_url}/")

    # Start a chat: Enter sends, the answer streams in, the address follows the new conversation.
    page.fill("#composer-input", "What is the capital of France?")
    page.keyboard.press("Enter")
    page.wait_for_selector(".msg.user >> text=What is the capital of France?")
    page.wait_for_selector(".msg.assistant .stop-btn")
    answer = _final_answer(page)
    assert answer.get_attribute("data-status") == "complete"
    assert answer.locator(".answer").inner_text().strip()
    page.wait_for_url(f"{live_server_url}/c/*/")
    first_url = page.url
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "chat-answered.png"))

    # Regenerate: a sibling answer appears with 2/2 navigation.
    answer.locator("button.regenerate").click()
    page.wait_for_selector(".sibling-pos >> text=2/2")
    _final_answer(page)
    page.locator("button[aria-label='Previous version']").click()
    page.wait_for_selector(".sibling-pos >> text=1/2")

    # Stop: a long answer is stopped from the keyboard (Esc) while it streams.
    page.click("a.new-chat")
    page.wait_for_url(f"{live_server_url}/")
    page.fill("#composer-input", "Write a very long story about a dragon who learns to bake bread.")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => { const s = document.querySelector('.msg.assistant .body.streaming span');"
        " return s && s.textContent.length > 0; }",
        timeout=180_000,
    )
    page.keyboard.press("Escape")
    stopped = _final_answer(page)
    assert stopped.get_attribute("data-status") == "cancelled"
    assert "Stopped." in stopped.inner_text()
    page.screenshot(path=str(ARTIFACTS / "chat-stopped.png"))

    # Switch conversations from the sidebar.
    page.wait_for_selector("#conversation-list .conv-item >> nth=1")
    page.goto(first_url)
    page.wait_for_selector(".msg.user >> text=What is the capital of France?")
    assert Message.objects.filter(status="cancelled").count() == 1
    assert Message.objects.filter(role="assistant", status="complete").count() == 2
    page.screenshot(path=str(ARTIFACTS / "chat-switched.png"), full_page=True)
