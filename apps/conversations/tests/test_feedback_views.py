"""The learning-loop pages: the feedback form under an answer, "Keep this one" after regenerating,
the Feedback page and the Memory page. Another user's ids are 404s; bad input keeps what was typed."""

import re

import pytest
from django.utils import timezone

from apps.conversations import services
from apps.conversations.models import Message
from apps.training import services as training_services
from apps.training.models import MemoryItem, PreferenceEvent

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def answer(user, question="What is the capital of Zubrowka?", text="Zubrowka City, probably."):
    conversation, asked, reply = services.chat_turn_start(actor=user, content=question)
    services.generation_finish(message=reply, content=text, status=Message.Status.COMPLETE, receipt={"model": "m"})
    reply.refresh_from_db()
    return conversation, asked, reply


def regenerate(user, reply, text):
    sibling = services.chat_regenerate(actor=user, message=reply)
    services.generation_finish(message=sibling, content=text, status=Message.Status.COMPLETE, receipt={})
    sibling.refresh_from_db()
    return sibling


def live_events(user, **filters):
    return PreferenceEvent.objects.filter(owner=user, excluded_at=None, **filters)


def keep_button_target(html: str, message) -> str | None:
    """The sibling the answer's "Keep this one" button would be kept over."""
    match = re.search(rf'hx-post="/m/{message.pk}/keep/" hx-vals=\'{{"rejected": "([0-9a-f-]+)"}}\'', html)
    return match.group(1) if match else None


@pytest.fixture
def alice(make_user):
    return make_user(email="alice@example.com")


@pytest.fixture
def mallory(make_user):
    return make_user(email="mallory@example.com")


# ---------------------------------------------------------------- the feedback form


def test_thumbs_down_opens_the_feedback_form(client, alice):
    conversation, _, reply = answer(alice)
    client.force_login(alice)
    page = client.get(f"/c/{conversation.pk}/").content.decode()
    # The thumbs down asks for the form (a GET into the answer's slot); it records nothing yet.
    assert f'hx-get="/m/{reply.pk}/feedback/" hx-target="#feedback-{reply.pk}"' in page
    assert f'id="feedback-{reply.pk}"' in page

    form = client.get(f"/m/{reply.pk}/feedback/", **HTMX)
    assert form.status_code == 200
    html = form.content.decode()
    for reason in ("wrong", "unhelpful", "unsafe", "other"):
        assert f'name="reasons" value="{reason}"' in html
    assert 'name="comment"' in html and 'name="correction"' in html and "Write the better answer" in html
    assert not live_events(alice).exists()


def test_reasons_and_a_comment_record_a_thumbs_down(client, alice):
    _, _, reply = answer(alice)
    client.force_login(alice)
    client.post(f"/m/{reply.pk}/thumb/", {"kind": "thumbs_up"})
    response = client.post(
        f"/m/{reply.pk}/feedback/", {"reasons": ["wrong", "unsafe"], "comment": "  Made that up.  "}, **HTMX
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert html.startswith(f'<article id="msg-{reply.pk}"')
    assert 'aria-label="Bad answer" aria-pressed="true"' in html and "Correction saved" not in html
    event = live_events(alice).get()  # the thumbs up it replaces is gone
    assert event.kind == "thumbs_down" and event.feedback == "negative" and event.explicit_signal == "thumbs_down"
    assert event.reasons == ["wrong", "unsafe"] and event.notes == "Made that up."
    assert event.prompt == "What is the capital of Zubrowka?" and event.receipt == {"model": "m"}


def test_a_better_answer_records_a_correction_and_replaces_the_thumb(client, alice):
    conversation, _, reply = answer(alice)
    client.force_login(alice)
    client.post(f"/m/{reply.pk}/thumb/", {"kind": "thumbs_up"})
    response = client.post(
        f"/m/{reply.pk}/feedback/",
        {"reasons": ["wrong"], "comment": "It is Lutz.", "correction": "The capital of Zubrowka is Lutz."},
        **HTMX,
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "Correction saved" in html and 'aria-label="Bad answer" aria-pressed="true"' in html
    event = live_events(alice).get()
    assert event.kind == "correction" and event.explicit_signal == "correction" and event.feedback == "negative"
    assert event.correction == "The capital of Zubrowka is Lutz." and event.reasons == ["wrong"]
    assert event.notes == "It is Lutz." and len(event.prompt_embedding) == 384
    # The state survives a reload.
    assert "Correction saved" in client.get(f"/c/{conversation.pk}/").content.decode()


def test_clicking_the_active_thumb_clears_it_and_a_correction_with_it(client, alice):
    _, _, reply = answer(alice)
    client.force_login(alice)
    client.post(f"/m/{reply.pk}/feedback/", {"correction": "Lutz."}, **HTMX)
    html = client.get(f"/m/{reply.pk}/").content.decode()
    # The active thumb clears (after a confirmation, since a written answer goes with it).
    assert '"forget_correction": "1"' in html and "hx-confirm" in html
    cleared = client.post(f"/m/{reply.pk}/thumb/", {"kind": "", "forget_correction": "1"}).content.decode()
    assert 'aria-label="Bad answer" aria-pressed="false"' in cleared and "Correction saved" not in cleared
    assert not live_events(alice).exists()
    assert PreferenceEvent.objects.get(owner=alice).correction == ""  # the tombstone keeps no words


def test_thumbs_up_stays_a_one_click_toggle(client, alice):
    _, _, reply = answer(alice)
    client.force_login(alice)
    on = client.post(f"/m/{reply.pk}/thumb/", {"kind": "thumbs_up"}).content.decode()
    assert 'aria-label="Good answer" aria-pressed="true"' in on
    assert live_events(alice, kind="thumbs_up").count() == 1
    off = client.post(f"/m/{reply.pk}/thumb/", {"kind": ""}).content.decode()
    assert 'aria-label="Good answer" aria-pressed="false"' in off
    assert not live_events(alice).exists()


def test_a_thumbs_down_without_a_correction_clears_in_one_click(client, alice):
    _, _, reply = answer(alice)
    client.force_login(alice)
    client.post(f"/m/{reply.pk}/feedback/", {"reasons": ["unhelpful"]}, **HTMX)
    html = client.get(f"/m/{reply.pk}/").content.decode()
    assert "forget_correction" not in html and "hx-confirm" not in html
    client.post(f"/m/{reply.pk}/thumb/", {"kind": ""})
    assert not live_events(alice).exists()


def test_bad_feedback_comes_back_with_a_message_and_nothing_lost(client, alice):
    _, _, reply = answer(alice)
    client.force_login(alice)
    response = client.post(
        f"/m/{reply.pk}/feedback/",
        {"reasons": ["wrong", "boring"], "comment": "Keep me", "correction": "My better answer"},
        **HTMX,
    )
    assert response.status_code == 422  # HTMX swaps 422s in (base.html's htmx-config)
    html = response.content.decode()
    assert "Reasons: Choose reasons from the list (boring is not one of them)." in html
    assert "Keep me</textarea>" in html and "My better answer</textarea>" in html
    assert 'value="wrong" checked' in html
    too_long = client.post(f"/m/{reply.pk}/feedback/", {"correction": "x" * 32001}, **HTMX)
    assert too_long.status_code == 422
    assert "Better answer: Ensure this value has at most 32000 characters" in too_long.content.decode()
    assert "x" * 32001 in too_long.content.decode()
    assert not PreferenceEvent.objects.exists()


def test_only_finished_answers_take_feedback(client, alice):
    _, asked, reply = answer(alice)
    pending = services.chat_regenerate(actor=alice, message=reply)
    client.force_login(alice)
    for message in (asked, pending):
        assert client.get(f"/m/{message.pk}/feedback/").status_code == 400
        assert client.post(f"/m/{message.pk}/feedback/", {"reasons": ["wrong"]}).status_code == 400
    assert not PreferenceEvent.objects.exists()


# ---------------------------------------------------------------- keep this one


def test_keep_this_one_records_a_pair_against_the_other_answer(client, alice):
    conversation, _, first = answer(alice, text="First take.")
    second = regenerate(alice, first, "Second take.")
    client.force_login(alice)
    page = client.get(f"/c/{conversation.pk}/").content.decode()
    assert "Keep this one" in page and keep_button_target(page, second) == str(first.pk)

    kept = client.post(f"/m/{second.pk}/keep/", {"rejected": str(first.pk)}, **HTMX)
    assert kept.status_code == 200
    assert "✓ Kept" in kept.content.decode() and "Keep this one" not in kept.content.decode()
    pair = live_events(alice, kind="pick").get()
    assert pair.message == second and pair.rejected_message == first
    assert pair.answer == "Second take." and pair.rejected_answer == "First take."
    listed = client.get("/feedback/", {"kind": "pick"}).content.decode()
    assert '<span class="badge">Kept answer</span>' in listed
    assert re.search(r"<dt>Kept</dt><dd[^>]*>Second take.</dd>\s*<dt>Over</dt><dd[^>]*>First take.</dd>", listed)

    # Changing one's mind replaces the pair.
    back = client.post(f"/m/{first.pk}/select/", {"shown": str(second.pk)}).content.decode()
    assert keep_button_target(back, first) == str(second.pk)
    client.post(f"/m/{first.pk}/keep/", {"rejected": str(second.pk)})
    pair = live_events(alice, kind="pick").get()
    assert pair.message == first and pair.rejected_message == second


def test_with_three_answers_the_pair_is_against_the_one_shown_before(client, alice):
    conversation, _, first = answer(alice, text="One.")
    second = regenerate(alice, first, "Two.")
    third = regenerate(alice, second, "Three.")
    client.force_login(alice)
    # A fresh page shows the newest answer, kept over the one made just before it.
    assert keep_button_target(client.get(f"/c/{conversation.pk}/").content.decode(), third) == str(second.pk)
    # Stepping back from 3/3 to 2/3: 2/3 would be kept over 3/3, the one just seen.
    stepped = client.post(f"/m/{second.pk}/select/", {"shown": str(third.pk)}).content.decode()
    assert keep_button_target(stepped, second) == str(third.pk)
    # Stepping forward from 1/3 to 2/3: over 1/3.
    stepped = client.post(f"/m/{second.pk}/select/", {"shown": str(first.pk)}).content.decode()
    assert keep_button_target(stepped, second) == str(first.pk)
    # A "shown" that is not a neighbour is ignored.
    odd = client.post(f"/m/{first.pk}/select/", {"shown": str(third.pk)}).content.decode()
    assert keep_button_target(odd, first) == str(second.pk)


def test_keep_rejects_what_is_not_a_sibling(client, alice):
    _, asked, first = answer(alice)
    second = regenerate(alice, first, "Another.")
    _, _, elsewhere = answer(alice, question="Unrelated?")
    client.force_login(alice)
    assert client.post(f"/m/{second.pk}/keep/").status_code == 400
    assert client.post(f"/m/{second.pk}/keep/", {"rejected": "not-an-id"}).status_code == 400
    for rejected in (second, elsewhere, asked):
        assert client.post(f"/m/{second.pk}/keep/", {"rejected": str(rejected.pk)}).status_code == 400
    assert client.post(f"/m/{asked.pk}/keep/", {"rejected": str(first.pk)}).status_code == 400
    assert not PreferenceEvent.objects.exists()


def test_an_answer_without_siblings_has_no_keep_button(client, alice):
    conversation, _, _ = answer(alice)
    client.force_login(alice)
    assert "Keep this one" not in client.get(f"/c/{conversation.pk}/").content.decode()


# ---------------------------------------------------------------- the Feedback page


def test_the_feedback_page_lists_the_users_signals(client, alice, mallory):
    conversation, _, reply = answer(alice)
    _, _, liked = answer(alice, question="Name a river.", text="The Danube.")
    training_services.feedback_record(
        actor=alice,
        message=reply,
        feedback="negative",
        explicit_signal="correction",
        corrected_text="Lutz is the capital.",
        reasons=["wrong", "unhelpful"],
        notes="Invented a city.",
    )
    training_services.thumbs_set(actor=alice, message=liked, kind="thumbs_up")
    _, _, theirs = answer(mallory, question="Mallory's secret question?")
    training_services.thumbs_set(actor=mallory, message=theirs, kind="thumbs_down")

    client.force_login(alice)
    page = client.get("/feedback/")
    assert page.status_code == 200
    html = page.content.decode()
    assert '<span class="badge">Correction</span>' in html and '<span class="badge">Thumbs up</span>' in html
    assert "What is the capital of Zubrowka?" in html and "Zubrowka City, probably." in html
    assert "Lutz is the capital." in html and "Invented a city." in html
    assert '<span class="chip">wrong</span><span class="chip">unhelpful</span>' in html
    assert f'href="/c/{conversation.pk}/"' in html and "Name a river." in html
    assert "Mallory" not in html

    only_corrections = client.get("/feedback/", {"kind": "correction"}).content.decode()
    assert "Lutz is the capital." in only_corrections and "Name a river." not in only_corrections
    assert "Name a river." in client.get("/feedback/", {"kind": "nonsense"}).content.decode()  # shows all


def test_deleting_feedback_removes_it_from_the_list(client, alice):
    _, _, reply = answer(alice)
    event = training_services.feedback_record(
        actor=alice, message=reply, feedback="negative", explicit_signal="correction", corrected_text="Lutz."
    )
    client.force_login(alice)
    page = client.get("/feedback/").content.decode()
    assert f'hx-post="/feedback/{event.pk}/delete/" hx-target="#event-{event.pk}" hx-swap="outerHTML"' in page
    deleted = client.post(f"/feedback/{event.pk}/delete/", **HTMX)
    assert deleted.status_code == 200 and deleted.content == b""
    event.refresh_from_db()
    assert event.excluded_at is not None and event.correction == ""
    assert "Lutz." not in client.get("/feedback/").content.decode()
    # Deleting it again: it is gone already.
    assert client.post(f"/feedback/{event.pk}/delete/", **HTMX).status_code == 404


def test_deleting_feedback_without_htmx_redirects_back(client, alice):
    _, _, reply = answer(alice)
    event = training_services.thumbs_set(actor=alice, message=reply, kind="thumbs_down")
    client.force_login(alice)
    response = client.post(f"/feedback/{event.pk}/delete/")
    assert response.status_code == 302 and response["Location"] == "/feedback/"
    assert not live_events(alice).exists()


# ---------------------------------------------------------------- the Memory page


def test_the_memory_page_explains_itself_and_lists_only_ones_own_items(client, alice, mallory):
    conversation, asked, _ = answer(alice, question="Remember that I use Fedora.")
    training_services.memory_remember(actor=alice, text="I use Fedora.", source_message=asked)
    training_services.memory_remember(actor=alice, text="My cat is called Miso.", pinned=True)
    training_services.memory_remember(actor=mallory, text="Mallory's private fact.")
    client.force_login(alice)
    page = client.get("/memory/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Say “remember that …” in a chat, or add it here." in html
    assert "the last 14 days’ nearest items and anything pinned" in html
    assert html.index("My cat is called Miso.") < html.index("I use Fedora.")  # pinned first
    assert f'<a href="/c/{conversation.pk}/">from a chat</a>' in html
    assert "Mallory" not in html
    assert 'href="/feedback/"' in html and 'href="/memory/" aria-current="page"' in html


def test_adding_a_memory_item(client, alice):
    client.force_login(alice)
    response = client.post("/memory/add/", {"text": "  I prefer   metric units. ", "pinned": "1"}, **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    # A fresh form, and the list swapped in out of band.
    assert '<ul class="memory-list" id="memory-list" hx-swap-oob="true">' in html
    assert "I prefer metric units." in html and "Pinned" in html
    item = MemoryItem.objects.get(owner=alice)
    assert item.text == "I prefer metric units." and item.pinned and len(item.embedding) == 384

    plain = client.post("/memory/add/", {"text": "I live in Lisbon."})
    assert plain.status_code == 302 and plain["Location"] == "/memory/"
    assert MemoryItem.objects.filter(owner=alice, text="I live in Lisbon.", pinned=False).exists()


def test_bad_memory_text_comes_back_with_a_message(client, alice):
    client.force_login(alice)
    blank = client.post("/memory/add/", {"text": "   "}, **HTMX)
    assert blank.status_code == 422 and "Say what to remember." in blank.content.decode()
    long_text = "word " * 500
    too_long = client.post("/memory/add/", {"text": long_text, "pinned": "1"}, **HTMX)
    assert too_long.status_code == 422
    html = too_long.content.decode()
    assert "At most 2000 characters." in html and long_text in html and 'value="1" checked' in html
    full_page = client.post("/memory/add/", {"text": long_text})
    assert full_page.status_code == 422 and "At most 2000 characters." in full_page.content.decode()
    assert "<h1>Memory</h1>" in full_page.content.decode()
    assert not MemoryItem.objects.exists()


def test_pin_edit_and_delete_a_memory_item(client, alice):
    older = training_services.memory_remember(actor=alice, text="Older fact.")
    older.created_at = timezone.now() - timezone.timedelta(days=2)
    older.save()
    item = training_services.memory_remember(actor=alice, text="I use Fedora.")
    client.force_login(alice)

    pinned = client.post(f"/memory/{older.pk}/pin/", {"pinned": "1"}, **HTMX).content.decode()
    assert pinned.index("Older fact.") < pinned.index("I use Fedora.") and "Unpin" in pinned
    older.refresh_from_db()
    assert older.pinned
    client.post(f"/memory/{older.pk}/pin/", {"pinned": "0"}, **HTMX)
    older.refresh_from_db()
    assert not older.pinned

    form = client.get(f"/memory/{item.pk}/edit/", **HTMX).content.decode()
    assert 'name="text"' in form and "I use Fedora.</textarea>" in form
    old_embedding = list(item.embedding)
    saved = client.post(f"/memory/{item.pk}/edit/", {"text": "I use Debian now."}, **HTMX)
    assert saved.status_code == 200 and "I use Debian now." in saved.content.decode()
    item.refresh_from_db()
    assert item.text == "I use Debian now." and list(item.embedding) != old_embedding

    blank = client.post(f"/memory/{item.pk}/edit/", {"text": " "}, **HTMX)
    assert blank.status_code == 422 and "Say what to remember." in blank.content.decode()
    item.refresh_from_db()
    assert item.text == "I use Debian now."
    assert "I use Debian now." in client.get(f"/memory/{item.pk}/", **HTMX).content.decode()  # Cancel

    remaining = client.post(f"/memory/{item.pk}/delete/", **HTMX).content.decode()
    assert "I use Debian now." not in remaining and "Older fact." in remaining
    assert list(MemoryItem.objects.filter(owner=alice)) == [older]
    client.post(f"/memory/{older.pk}/delete/", **HTMX)
    assert "Nothing remembered yet." in client.get("/memory/").content.decode()


# ---------------------------------------------------------------- isolation


def test_another_users_ids_are_404_everywhere(client, alice, mallory):
    _, _, first = answer(alice)
    second = regenerate(alice, first, "Alice's second take.")
    event = training_services.feedback_record(
        actor=alice, message=first, feedback="negative", explicit_signal="correction", corrected_text="Alice's fix."
    )
    item = training_services.memory_remember(actor=alice, text="Alice's memory.")
    _, _, own = answer(mallory)

    client.force_login(mallory)
    assert client.get(f"/m/{first.pk}/feedback/").status_code == 404
    assert client.post(f"/m/{first.pk}/feedback/", {"correction": "hijack"}).status_code == 404
    assert client.post(f"/m/{second.pk}/keep/", {"rejected": str(first.pk)}).status_code == 404
    assert client.post(f"/m/{own.pk}/keep/", {"rejected": str(first.pk)}).status_code == 404
    assert client.post(f"/feedback/{event.pk}/delete/").status_code == 404
    assert client.get(f"/memory/{item.pk}/").status_code == 404
    assert client.get(f"/memory/{item.pk}/edit/").status_code == 404
    assert client.post(f"/memory/{item.pk}/edit/", {"text": "hijack"}).status_code == 404
    assert client.post(f"/memory/{item.pk}/pin/", {"pinned": "1"}).status_code == 404
    assert client.post(f"/memory/{item.pk}/delete/").status_code == 404
    assert "Alice" not in client.get("/feedback/").content.decode()
    assert "Alice" not in client.get("/memory/").content.decode()

    event.refresh_from_db()
    item.refresh_from_db()
    assert event.excluded_at is None and event.correction == "Alice's fix."
    assert item.text == "Alice's memory." and not item.pinned
    assert PreferenceEvent.objects.filter(owner=mallory).count() == 0


def test_the_pages_need_a_login(client):
    for url in ("/feedback/", "/memory/"):
        response = client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]
