"""The learning loop's UI in headless Chromium against a live server and a real worker: feedback
with a better answer, the Feedback page, "Keep this one" after regenerating, and the Memory page.
Screenshots at desktop and phone sizes go to test-artifacts/."""

import pytest

from apps.conversations.tests.browser import ARTIFACTS, DESKTOP, PHONE, chromium_page, shoot

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def page(live_server_url, monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    # Deleting asks for a confirmation first; the test says yes.
    with chromium_page("feedback-last-state", accept_dialogs=True) as page:
        yield page


def _final_answer(page, timeout=180_000):
    page.wait_for_selector(".msg.assistant:not(.queued):not(.streaming)", timeout=timeout)
    return page.locator(".msg.assistant").last


def test_feedback_keep_and_memory_in_a_real_browser(page, live_server_url, celery_worker_process, make_user):
    from apps.conversations.models import Message
    from apps.training.models import MemoryItem, PreferenceEvent

    user = make_user(email="learner@example.com")
    page.goto(f"{live_server_url}/accounts/login/")
    page.fill("input[name=email]", "learner@example.com")
    page.fill("input[name=password]", "correct horse battery")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server_url}/")

    # A real answer.
    page.fill("#composer-input", "What is the capital of France?")
    page.keyboard.press("Enter")
    answer = _final_answer(page)
    assert answer.get_attribute("data-status") == "complete"
    page.wait_for_url(f"{live_server_url}/c/*/")
    conversation_url = page.url
    first = Message.objects.get(owner=user, role="assistant")

    # Thumbs down opens the form under the answer, without a page load.
    page.evaluate("window.notReloaded = true")
    answer.locator("button[aria-label='Bad answer']").click()
    form = page.locator(f"#feedback-{first.pk} .feedback-form")
    form.wait_for()
    assert not PreferenceEvent.objects.exists()
    form.locator("input[name=reasons][value=wrong]").check()
    form.locator("textarea[name=comment]").fill("It named the wrong city.")
    form.locator("textarea[name=correction]").fill("The capital of France is Paris.")
    form.scroll_into_view_if_needed()
    shoot(page, "feedback-form")
    form.locator("button[type=submit]").click()

    answer = page.locator(f"#msg-{first.pk}")
    answer.locator(".saved-note >> text=Correction saved").wait_for()
    assert answer.locator("button[aria-label='Bad answer']").get_attribute("aria-pressed") == "true"
    assert page.locator(".feedback-form").count() == 0
    assert page.evaluate("window.notReloaded") is True
    page.screenshot(path=str(ARTIFACTS / "answer-corrected-desktop.png"))
    correction = PreferenceEvent.objects.get(owner=user)
    assert correction.kind == "correction" and correction.correction == "The capital of France is Paris."
    assert correction.reasons == ["wrong"] and correction.notes == "It named the wrong city."

    # The Feedback page lists it; Delete removes it from the list and from training.
    page.click(".topnav >> text=Feedback")
    page.wait_for_url(f"{live_server_url}/feedback/")
    event = page.locator(f"#event-{correction.pk}")
    for text in ("Correction", "What is the capital of France?", "The capital of France is Paris.", "wrong"):
        assert text in event.inner_text()
    assert event.locator("a >> text=Open conversation").get_attribute("href") in conversation_url
    shoot(page, "feedback-page", full_page=True)
    # On a phone the links fold into a menu.
    page.set_viewport_size(PHONE)
    assert not page.locator(".topnav >> text=Memory").is_visible()
    page.click("button.nav-toggle")
    assert page.locator(".topnav >> text=Memory").is_visible()
    page.screenshot(path=str(ARTIFACTS / "nav-menu-phone.png"))
    page.click("button.nav-toggle")
    page.set_viewport_size(DESKTOP)
    event.locator("button >> text=Delete").click()
    event.wait_for(state="detached")
    correction.refresh_from_db()
    assert correction.excluded_at is not None

    # Regenerate, then keep the new answer over the first.
    page.goto(conversation_url)
    page.locator(f"#msg-{first.pk} button.regenerate").click()
    page.wait_for_selector(".sibling-pos >> text=2/2")
    _final_answer(page)
    second = Message.objects.filter(owner=user, role="assistant").exclude(pk=first.pk).get()
    kept = page.locator(f"#msg-{second.pk}")
    kept.locator("button >> text=Keep this one").click()
    kept.locator("text=Kept").wait_for()
    shoot(page, "answer-kept")
    pair = PreferenceEvent.objects.get(owner=user, kind="pick", excluded_at=None)
    assert pair.message_id == second.pk and pair.rejected_message_id == first.pk

    # The Memory page: add, pin, edit inline, delete.
    page.click(".topnav >> text=Memory")
    page.wait_for_url(f"{live_server_url}/memory/")
    assert "Liminal recalls these in later conversations" in page.inner_text("main")
    page.click("#memory-add button[type=submit]")  # nothing typed: a message, from a 422 swapped in
    page.locator("#memory-add .error >> text=Say what to remember.").wait_for()
    page.fill("#memory-add textarea[name=text]", "I prefer metric units.")
    page.click("#memory-add button[type=submit]")
    item = page.locator(".memory-item", has_text="I prefer metric units.")
    item.wait_for()
    assert page.input_value("#memory-add textarea[name=text]") == ""
    page.fill("#memory-add textarea[name=text]", "My cat is called Miso.")
    page.click("#memory-add button[type=submit]")
    page.locator(".memory-item", has_text="My cat is called Miso.").wait_for()
    item.locator("button >> text=Pin").click()
    page.locator(".memory-item.pinned", has_text="I prefer metric units.").wait_for()
    assert MemoryItem.objects.get(owner=user, text="I prefer metric units.").pinned
    assert page.locator(".memory-item").first.inner_text().startswith("I prefer metric units.")

    cat = page.locator(".memory-item", has_text="My cat is called Miso.")
    cat.locator("button >> text=Edit").click()
    editing = page.locator(".memory-item.editing")
    editing.locator("textarea").fill("My cat is called Miso; she is grey.")
    shoot(page, "memory-page", full_page=True)
    editing.locator("button >> text=Save").click()
    page.locator(".memory-item:not(.editing)", has_text="she is grey").wait_for()
    assert MemoryItem.objects.filter(owner=user, text="My cat is called Miso; she is grey.").exists()

    page.locator(".memory-item", has_text="I prefer metric units.").locator("button >> text=Delete").click()
    page.locator(".memory-item", has_text="I prefer metric units.").wait_for(state="detached")
    assert list(MemoryItem.objects.filter(owner=user).values_list("text", flat=True)) == [
        "My cat is called Miso; she is grey."
    ]
