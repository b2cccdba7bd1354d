"""The chat page's behaviour in headless Chromium against a live server (issue 22, item 2):
scrolling and following a long stream, Send while an answer is being written, notices, a
dropped connection, Markdown while streaming, the model's readiness, the receipt and the title.

No model runs here: the test plays the inference worker, storing what a worker stores and
publishing the events a worker publishes on the channel layer, so every state is reached on
purpose. Screenshots at desktop and phone sizes go to test-artifacts/."""

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from apps.conversations.tests.browser import chromium_page, log_in, shoot

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

EMAIL = "ui@example.com"
LONG_ANSWER = "\n\n".join(f"Paragraph {n}: " + "a sentence that takes room on the screen. " * 6 for n in range(5))


@pytest.fixture
def page(live_server_url, monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with chromium_page("chat-ui-last-state") as page:
        yield page


@pytest.fixture
def user(make_user):
    return make_user(email=EMAIL)


def _conversation(user, *, title="Trip planning", turns=0, pending=None):
    """A conversation with `turns` finished exchanges, then, with `pending` ("queued" or
    "streaming"), a question whose answer is still being written. Returns (conversation, answer)."""
    from apps.conversations.models import Conversation, Message

    conversation = Conversation.objects.create(owner=user, title=title)
    parent = None
    for n in range(turns):
        question = Message.objects.create(
            conversation=conversation, owner=user, role="user", content=f"Question {n}", parent=parent
        )
        parent = Message.objects.create(
            conversation=conversation, owner=user, role="assistant", content=LONG_ANSWER, parent=question
        )
    answer = None
    if pending:
        question = Message.objects.create(
            conversation=conversation, owner=user, role="user", content="Tell me more.", parent=parent
        )
        answer = Message.objects.create(
            conversation=conversation, owner=user, role="assistant", content="", parent=question, status=pending
        )
    return conversation, answer


def _subscribers(message) -> int:
    """How many sockets follow this answer's stream (the channel layer's group, in Redis)."""
    from liminal.settings import redis_db_url

    return redis.Redis.from_url(redis_db_url(settings.REDIS_DB_CHANNELS)).zcard(f"asgi:group:gen.{message.pk}")


def _wait_for_subscribers(message, count, timeout=15.0):
    deadline = time.monotonic() + timeout
    while _subscribers(message) != count:
        assert time.monotonic() < deadline, f"the stream has {_subscribers(message)} subscribers, not {count}"
        time.sleep(0.05)


def _open_chat(page, base, conversation, answer=None):
    page.goto(f"{base}/c/{conversation.pk}/")
    page.wait_for_selector("#chat[data-connection=open]")
    if answer is not None:
        _wait_for_subscribers(answer, 1)


def _off_the_loop(function, **kwargs):
    """Playwright's sync API keeps an event loop running in the test's thread; publishing to
    the channel layer is sync code that must run outside it, as it does in a worker."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(function, **kwargs).result()


def _publish(answer, event):
    from apps.conversations.streaming import publish

    _off_the_loop(publish, stream_key=answer.stream_key, event=event)


def _token(answer, text):
    _publish(answer, {"type": "gen.token", "text": text})


def _finish(answer, content):
    """What a worker does at the end: store the answer, then say so on its stream."""
    from apps.conversations.models import Message

    Message.objects.filter(pk=answer.pk).update(content=content, status="complete", finished_at=timezone.now())
    _publish(answer, {"type": "gen.done", "message_id": str(answer.pk), "status": "complete", "error": ""})


def _distance_from_bottom(page) -> float:
    return page.evaluate(
        "() => { const s = document.getElementById('scroller'); return s.scrollHeight - s.scrollTop - s.clientHeight; }"
    )


def test_a_long_conversation_scrolls_inside_the_page_and_follows_the_stream(page, live_server_url, user):
    conversation, answer = _conversation(user, turns=8, pending="streaming")
    log_in(page, live_server_url, EMAIL)
    _open_chat(page, live_server_url, conversation, answer)

    # The list scrolls, the page does not: the composer is on screen at the bottom.
    assert page.evaluate("document.scrollingElement.scrollHeight <= window.innerHeight")
    assert page.evaluate(
        "() => { const s = document.getElementById('scroller'); return s.scrollHeight > 2 * s.clientHeight; }"
    )
    composer = page.locator("#composer").bounding_box()
    assert composer["y"] + composer["height"] <= 800 and composer["y"] > 600
    assert _distance_from_bottom(page) < 2

    # The stream is followed while the user stays at the bottom.
    _token(answer, LONG_ANSWER)
    page.wait_for_selector("#scroller .stream-view >> text=Paragraph 4")
    page.wait_for_function(
        "() => { const s = document.getElementById('scroller');"
        " return s.scrollHeight - s.scrollTop - s.clientHeight < 2; }"
    )
    assert page.locator("#jump-latest").is_hidden()

    # Scrolled up, it stays where the user put it, and offers a way back.
    page.mouse.move(640, 400)
    page.mouse.wheel(0, -1500)
    page.wait_for_selector("#jump-latest:visible")
    page.wait_for_timeout(300)  # a wheel scroll may be animated
    top = page.evaluate("document.getElementById('scroller').scrollTop")
    _token(answer, "\n\nMore text arrives below. " * 20)
    page.wait_for_selector("#scroller .stream-view >> text=More text arrives below.")
    page.wait_for_timeout(200)
    assert page.evaluate("document.getElementById('scroller').scrollTop") == top
    assert _distance_from_bottom(page) > 500
    shoot(page, "chat-ui-scrolled-up")

    page.click("#jump-latest")
    assert _distance_from_bottom(page) < 2
    assert page.locator("#jump-latest").is_hidden()
    # ...and from the bottom it follows again.
    _token(answer, "\n\nThe very last line.")
    page.wait_for_selector("#scroller .stream-view >> text=The very last line.")
    page.wait_for_function(
        "() => { const s = document.getElementById('scroller');"
        " return s.scrollHeight - s.scrollTop - s.clientHeight < 2; }"
    )
    page.set_viewport_size({"width": 390, "height": 844})
    composer = page.locator("#composer").bounding_box()
    assert composer["y"] + composer["height"] <= 844
    assert page.evaluate("document.scrollingElement.scrollHeight <= window.innerHeight")
    shoot(page, "chat-ui-long-stream")


def test_send_waits_for_the_answer_keeps_the_text_and_notices_clear_on_success(page, live_server_url, user):
    from apps.conversations.models import Message

    conversation, answer = _conversation(user, turns=1, pending="queued")
    log_in(page, live_server_url, EMAIL)
    _open_chat(page, live_server_url, conversation, answer)

    # While the answer is being written, Send is off and says why.
    send = page.locator("#composer-send")
    assert send.is_disabled()
    note = page.locator("#composer-status")
    assert note.is_visible() and "Send is off until the answer is written" in note.inner_text()

    # Enter does not send, and what was typed stays in the box.
    page.fill("#composer-input", "And what about trains?")
    page.keyboard.press("Enter")
    page.wait_for_timeout(500)
    assert page.input_value("#composer-input") == "And what about trains?"
    assert page.locator(".msg.user").count() == 2
    assert Message.objects.filter(conversation=conversation, role="user").count() == 2
    shoot(page, "chat-ui-send-waits")

    # Once the answer is done, Send is back and the text is still there.
    _finish(answer, "Buses run every hour.")
    page.wait_for_selector(f"#msg-{answer.pk}[data-status=complete]")
    page.wait_for_selector("#composer-send:enabled")
    assert note.is_hidden()
    assert page.input_value("#composer-input") == "And what about trains?"

    # A refused request leaves a notice; the next successful action clears it.
    page.evaluate("window.liminalChat.socket.send('not a frame')")
    page.wait_for_selector("#notices .notice >> text=That request was not understood.")
    page.keyboard.press("Enter")
    page.wait_for_selector(".msg.user >> text=And what about trains?")
    page.wait_for_function("document.getElementById('composer-input').value === ''")
    assert page.locator("#notices .notice").count() == 0
    assert Message.objects.filter(conversation=conversation, role="user", content="And what about trains?").exists()


def test_a_dropped_connection_reconnects_with_backoff_and_loses_nothing(page, live_server_url, user):
    from apps.conversations.models import Message

    conversation, answer = _conversation(user, turns=1, pending="streaming")
    log_in(page, live_server_url, EMAIL)
    _open_chat(page, live_server_url, conversation, answer)
    _token(answer, "First part.")
    page.wait_for_selector(".stream-view >> text=First part.")
    page.fill("#composer-input", "A draft I am still writing")

    # The backoff grows (each delay is jittered under a doubling ceiling).
    assert page.evaluate("window.liminalChat.reconnectDelay(0)") <= 1000
    assert page.evaluate("window.liminalChat.reconnectDelay(4)") >= 8000

    # The next two connection attempts fail (nothing listens on port 9), the third is real.
    page.evaluate(
        """() => {
          const real = htmx.createWebSocket;
          window.attempts = 0;
          htmx.createWebSocket = (url) => {
            window.attempts += 1;
            return window.attempts <= 2 ? new WebSocket('ws://127.0.0.1:9/') : real(url);
          };
          window.liminalChat.socket.close();
        }"""
    )
    status = page.locator("#connection-status")
    status.wait_for(state="visible")
    assert "Reconnecting…" in status.inner_text()
    assert page.locator("#composer-send").is_disabled()
    shoot(page, "chat-ui-reconnecting")
    _wait_for_subscribers(answer, 0)

    # While the page was away the answer went on; the worker saved its text so far.
    Message.objects.filter(pk=answer.pk).update(content="First part. Second part.")
    page.wait_for_selector("#chat[data-connection=open]", timeout=30_000)
    assert page.evaluate("window.attempts") == 3
    assert status.is_hidden()
    page.wait_for_selector(".stream-view >> text=Second part.")
    _wait_for_subscribers(answer, 1)
    _token(answer, " Third part.")
    page.wait_for_selector(".stream-view >> text=First part. Second part. Third part.")
    assert page.input_value("#composer-input") == "A draft I am still writing"

    _finish(answer, "First part. Second part. Third part.")
    page.wait_for_selector("#composer-send:enabled")
    assert page.input_value("#composer-input") == "A draft I am still writing"


def test_markdown_renders_while_streaming_and_markup_stays_text(page, live_server_url, user):
    conversation, answer = _conversation(user, pending="streaming")
    log_in(page, live_server_url, EMAIL)
    _open_chat(page, live_server_url, conversation, answer)
    article = page.locator(f"#msg-{answer.pk}")

    _token(answer, "Here is **bold** text and `inline code`.\n\n```python\nprint('hi')\n")
    article.locator(".stream-view strong >> text=bold").wait_for()
    article.locator(".stream-view pre code >> text=print('hi')").wait_for()
    article.locator(".stream-view code >> text=inline code").wait_for()
    assert article.get_attribute("data-status") == "streaming"

    _token(answer, '```\n\nNow <img src=x onerror="window.pwned=1"> and <script>window.pwned=2</script> **done**')
    article.locator(".stream-view strong >> text=done").wait_for()
    view_text = article.locator(".stream-view").inner_text()
    assert '<img src=x onerror="window.pwned=1">' in view_text and "<script>window.pwned=2</script>" in view_text
    assert article.locator("img, script").count() == 0
    assert page.evaluate("window.pwned") is None

    # Tables and nested lists take shape while they stream, as the server renders them at the
    # end; a link to anything but http(s)/mailto keeps its text and loses its address.
    _token(answer, "\n\n| city | river |\n|---|---|\n| Paris | Seine |\n\n- outer\n  - inner\n\n")
    _token(answer, "[click](javascript:window.pwned=3) and [docs](https://example.org/a)")
    article.locator(".stream-view table td >> text=Seine").wait_for()
    article.locator(".stream-view ul ul li >> text=inner").wait_for()
    article.locator(".stream-view a[href='https://example.org/a'] >> text=docs").wait_for()
    assert article.locator(".stream-view a[href^='javascript']").count() == 0
    assert article.locator(".stream-view a[href='https://example.org/a']").get_attribute("rel") == (
        "noopener noreferrer nofollow"
    )
    shoot(page, "chat-ui-markdown-streaming")

    # The finished answer (rendered by the server) keeps the same shape.
    _finish(
        answer, "Here is **bold** text.\n\n```python\nprint('hi')\n```\n\nNow <img src=x onerror=\"window.pwned=1\">"
    )
    page.wait_for_selector(f"#msg-{answer.pk}[data-status=complete] .answer strong >> text=bold")
    assert page.locator(f"#msg-{answer.pk} .answer pre").count() == 1
    assert page.locator(f"#msg-{answer.pk} img").count() == 0
    assert page.evaluate("window.pwned") is None


def test_the_model_loading_state_follows_readyz(page, live_server_url, user):
    conversation, answer = _conversation(user, pending="queued")
    answers = []

    def readyz(route):
        answers.append(time.monotonic())
        if len(answers) <= 2:
            body = {
                "status": "error",
                "error": {
                    "code": "not_ready",
                    "message": "Not ready: no inference worker has its engine loaded and warm yet.",
                    "details": {"checks": {"database": "ok", "redis": "ok"}, "inference_workers": []},
                },
            }
            route.fulfill(status=503, content_type="application/json", body=json.dumps(body))
        else:
            body = {"status": "ok", "data": {"ready": True, "inference_workers": [{"worker": "w1"}]}}
            route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    page.route("**/readyz", readyz)
    log_in(page, live_server_url, EMAIL)
    _open_chat(page, live_server_url, conversation)
    status = page.locator("#model-status")
    status.wait_for(state="visible")
    assert status.inner_text() == "The model is loading…"
    shoot(page, "chat-ui-model-loading")

    # Ready at the third answer: the notice goes and the polling stops.
    status.wait_for(state="hidden", timeout=20_000)
    assert len(answers) == 3
    page.wait_for_timeout(4000)
    assert len(answers) == 3


def test_the_receipt_says_what_its_times_measure(page, live_server_url, user):
    from apps.conversations.models import Message

    conversation, _ = _conversation(user, turns=1)
    answer = Message.objects.get(conversation=conversation, role="assistant")
    Message.objects.filter(pk=answer.pk).update(
        finished_at=F("created_at") + timedelta(milliseconds=2500),
        receipt={
            "model": "smollm2-135m",
            "prompt_tokens": 30,
            "completion_tokens": 12,
            "queue_wait_ms": 1200.0,
            "time_to_first_token_ms": 80.5,
            "total_time_ms": 400.0,
            "mean_logprob": -0.5,
            "finish_reason": "stop",
        },
    )
    log_in(page, live_server_url, EMAIL)
    _open_chat(page, live_server_url, conversation)
    page.click(f"#msg-{answer.pk} .receipt summary")
    receipt = page.locator(f"#msg-{answer.pk} .receipt dl").inner_text()
    assert "2500 ms from send" in receipt
    assert "1200.0 ms before a worker took it" in receipt
    assert "80.5 ms after the request reached the model" in receipt
    shoot(page, "chat-ui-receipt")


def test_the_page_title_is_the_conversations_title(page, live_server_url, user):
    from apps.accounts.consumers import user_event_send
    from apps.conversations import services
    from apps.conversations.models import Conversation

    conversation, _ = _conversation(user, title="Trip planning", turns=1)
    log_in(page, live_server_url, EMAIL)
    assert page.title() == "Liminal"
    _open_chat(page, live_server_url, conversation)
    assert page.title() == "Trip planning · Liminal"

    # A chat started on the page is titled as soon as it exists, then by its generated title.
    page.click("a.new-chat")
    page.wait_for_selector("#chat[data-connection=open]")
    page.fill("#composer-input", "Where should I go in May?")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server_url}/c/*/")
    page.wait_for_function("document.title === 'New conversation · Liminal'")
    started = Conversation.objects.exclude(pk=conversation.pk).get(owner=user)
    services.conversation_title_set(conversation=started, title="May travel ideas")
    _off_the_loop(
        user_event_send,
        user_id=user.pk,
        event="conversation.title",
        data={"conversation_id": str(started.pk), "title": "May travel ideas"},
    )
    page.wait_for_function("document.title === 'May travel ideas · Liminal'")

    # Renaming it in the sidebar renames the page too.
    item = page.locator(f"#conv-{started.pk}")
    item.locator("summary").click()
    item.locator("input[name=title]").fill("Spring trip")
    item.locator("button >> text=Rename").click()
    page.wait_for_function("document.title === 'Spring trip · Liminal'")


def test_attaching_a_file_puts_it_in_a_context_bound_to_the_chat(page, live_server_url, user):
    from apps.conversations.models import Conversation

    log_in(page, live_server_url, EMAIL)
    page.wait_for_selector("#chat[data-connection=open]")
    page.fill("#composer-input", "Summarise my notes")
    file_input = page.locator("#attach-form input[type=file]")

    # On a new chat: the chat is created for the file, without leaving the page.
    file_input.set_input_files(files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"Lisbon in May."}])
    page.locator("#attach-status >> text=Attached “notes.txt” to this chat.").wait_for()
    page.wait_for_url(f"{live_server_url}/c/*/")
    conversation = Conversation.objects.get(owner=user)
    context = conversation.contexts.get()
    assert [f.name for f in context.files.all()] == ["notes.txt"]
    assert page.locator("#context-picker summary strong").inner_text() == context.name
    assert page.input_value("#composer-input") == "Summarise my notes"
    assert page.title() == "New conversation · Liminal"
    shoot(page, "chat-ui-attached")

    # A second file joins the same context; a refused one says why and changes nothing.
    file_input.set_input_files(files=[{"name": "more.md", "mimeType": "text/markdown", "buffer": b"# Porto\nIn June."}])
    page.locator("#attach-status >> text=Attached “more.md” to this chat.").wait_for()
    assert sorted(f.name for f in conversation.contexts.get().files.all()) == ["more.md", "notes.txt"]
    file_input.set_input_files(files=[{"name": "empty.txt", "mimeType": "text/plain", "buffer": b""}])
    page.locator("#notices .notice >> text=“empty.txt” is empty.").wait_for()
    assert conversation.contexts.get().files.count() == 2

    # The message goes to the same chat, and the notice clears.
    page.keyboard.press("Enter")
    page.wait_for_selector(".msg.user >> text=Summarise my notes")
    assert page.locator("#notices .notice").count() == 0
    assert conversation.messages.filter(role="user", content="Summarise my notes").exists()
