import pytest

from apps.conversations import services
from apps.conversations.models import Conversation, Message

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_chat(make_user):
    alice = make_user(handle="alice")
    conversation, question, answer = services.chat_turn_start(actor=alice, content="Alice asks **boldly**")
    services.generation_finish(
        message=answer,
        content="Answer with <script>alert(1)</script> and `code`",
        status=Message.Status.COMPLETE,
        receipt={"finish_reason": "stop", "completion_tokens": 5, "model": "m"},
    )
    return alice, conversation, question, answer


def test_chat_page_renders_the_selected_path_safely(client, alice_chat):
    alice, conversation, _, _ = alice_chat
    client.force_login(alice)
    page = client.get(f"/c/{conversation.pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Alice asks **boldly**" in html  # user text is shown as typed, not as Markdown
    assert "<script>alert(1)" not in html and "&lt;script&gt;" in html
    assert 'ws-connect="/ws/chat/?conversation=' in html


def test_other_users_cannot_see_or_change_a_conversation(client, alice_chat, make_user):
    _, conversation, question, answer = alice_chat
    client.force_login(make_user())
    assert client.get(f"/c/{conversation.pk}/").status_code == 404
    assert client.post(f"/c/{conversation.pk}/rename/", {"title": "x"}).status_code == 404
    assert client.post(f"/c/{conversation.pk}/delete/").status_code == 404
    assert client.post(f"/m/{answer.pk}/thumb/", {"kind": "thumbs_down"}).status_code == 404
    assert client.post(f"/m/{answer.pk}/select/").status_code == 404
    assert client.get(f"/m/{question.pk}/edit/").status_code == 404
    assert b"Alice asks" not in client.get("/c/search/?q=Alice").content
    assert Conversation.objects.filter(pk=conversation.pk, title="").exists()


def test_rename_delete_search_and_thumbs(client, alice_chat):
    alice, conversation, _, answer = alice_chat
    client.force_login(alice)
    renamed = client.post(f"/c/{conversation.pk}/rename/", {"title": "  Bold   questions "})
    assert renamed.status_code == 200 and b"Bold questions" in renamed.content
    assert b"Bold questions" in client.get("/c/search/?q=bold").content
    assert b"No conversations match" in client.get("/c/search/?q=volcano").content
    thumbed = client.post(f"/m/{answer.pk}/thumb/", {"kind": "thumbs_up"})
    assert thumbed.status_code == 200 and b'aria-pressed="true"' in thumbed.content
    assert client.post(f"/m/{answer.pk}/thumb/", {"kind": "love"}).status_code == 400
    deleted = client.post(f"/c/{conversation.pk}/delete/", {"current": "1"})
    assert deleted["HX-Redirect"] == "/"
    assert not Conversation.objects.exists()


def test_sibling_navigation_renders_the_chosen_branch(client, alice_chat):
    alice, conversation, _, answer = alice_chat
    second = services.chat_regenerate(actor=alice, message=answer)
    services.generation_finish(message=second, content="Second take", status=Message.Status.COMPLETE, receipt={})
    client.force_login(alice)
    page = client.get(f"/c/{conversation.pk}/").content.decode()
    assert "Second take" in page and "2/2" in page
    back = client.post(f"/m/{answer.pk}/select/").content.decode()
    assert "1/2" in back and "Second take" not in back
