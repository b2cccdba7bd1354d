"""The admin for conversations, messages and API keys: changelists with search and filters, a
conversation's message tree (branches included) read-only, and API keys shown by prefix only."""

import re

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.accounts import services as account_services
from apps.accounts.models import ApiKey
from apps.accounts.tokens import secret_hash
from apps.conversations.models import Conversation, Message

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, make_user):
    client.force_login(make_user(email="root@example.com", role="admin"))
    return client


@pytest.fixture
def owner(make_user):
    return make_user(email="ada@example.com", handle="ada")


def _message(conversation, parent, role, content, **fields):
    return Message.objects.create(
        conversation=conversation, owner=conversation.owner, parent=parent, role=role, content=content, **fields
    )


@pytest.fixture
def branched(owner):
    """Two root branches (the first question, then an edit of it); the first answer regenerated."""
    conversation = Conversation.objects.create(owner=owner, title="Penguin facts")
    question = _message(conversation, None, "user", "Where do penguins live")
    answer = _message(conversation, question, "assistant", "Mostly in Antarctica", receipt={"model": "smollm2-135m"})
    _message(conversation, question, "assistant", "In the southern hemisphere", status="cancelled")
    edited = _message(conversation, None, "user", "Where do emperor penguins breed")
    leaf = _message(conversation, edited, "assistant", "On the sea ice around Antarctica")
    conversation.current_leaf = leaf
    conversation.save()
    Conversation.objects.create(owner=owner, title="Batch job", origin="completions")
    return {"conversation": conversation, "answer": answer, "edited": edited, "leaf": leaf}


def test_admin_pages_need_an_admin(client, owner, branched):
    client.force_login(owner)
    for name in ("conversations_conversation", "conversations_message", "accounts_apikey"):
        response = client.get(reverse(f"admin:{name}_changelist"))
        assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_conversation_changelist_searches_and_filters(admin_client, branched):
    url = reverse("admin:conversations_conversation_changelist")
    page = admin_client.get(url)
    assert page.status_code == 200
    text = page.content.decode()
    assert "Penguin facts" in text and "Batch job" in text and "ada@example.com" in text

    searched = admin_client.get(url, {"q": "penguin"}).content.decode()
    assert "Penguin facts" in searched and "Batch job" not in searched
    by_owner = admin_client.get(url, {"q": "ada@example"}).content.decode()
    assert "Penguin facts" in by_owner and "Batch job" in by_owner
    api_only = admin_client.get(url, {"origin__exact": "completions"}).content.decode()
    assert "Batch job" in api_only and "Penguin facts" not in api_only


def test_conversation_page_shows_the_whole_tree_read_only(admin_client, branched):
    conversation = branched["conversation"]
    page = admin_client.get(reverse("admin:conversations_conversation_change", args=[conversation.pk]))
    assert page.status_code == 200
    text = page.content.decode()
    for content in (
        "Where do penguins live",
        "Mostly in Antarctica",
        "In the southern hemisphere",
        "Where do emperor penguins breed",
        "On the sea ice around Antarctica",
    ):
        assert content in text
    # Two root branches, and two answers to the first question.
    assert text.count("Branch 1 of 2") == 2 and text.count("Branch 2 of 2") == 2
    # The branch the user is looking at is marked; the others are not.
    shown = re.findall(r'class="message on-current-branch" id="tree-([0-9a-f-]+)"', text)
    assert set(shown) == {str(branched["edited"].pk), str(branched["leaf"].pk)}
    # Each message links to its own read-only page.
    assert reverse("admin:conversations_message_change", args=[branched["answer"].pk]) in text
    # Read-only: no save buttons, no editable title.
    assert 'name="_save"' not in text and 'name="title"' not in text


def test_message_changelist_and_page(admin_client, branched):
    url = reverse("admin:conversations_message_changelist")
    page = admin_client.get(url)
    assert page.status_code == 200 and "Mostly in Antarctica" in page.content.decode()
    users_only = admin_client.get(url, {"role__exact": "user"}).content.decode()
    assert "Where do penguins live" in users_only and "Mostly in Antarctica" not in users_only
    cancelled = admin_client.get(url, {"status__exact": "cancelled"}).content.decode()
    assert "In the southern hemisphere" in cancelled and "Mostly in Antarctica" not in cancelled
    searched = admin_client.get(url, {"q": "emperor"}).content.decode()
    assert "Where do emperor penguins breed" in searched and "Where do penguins live" not in searched

    answer = admin_client.get(reverse("admin:conversations_message_change", args=[branched["answer"].pk]))
    assert answer.status_code == 200
    text = answer.content.decode()
    assert "smollm2-135m" in text and "Penguin facts" in text
    assert 'name="_save"' not in text and 'name="content"' not in text


def test_deleting_a_conversation_in_the_admin_removes_its_messages(admin_client, branched):
    conversation = branched["conversation"]
    url = reverse("admin:conversations_conversation_delete", args=[conversation.pk])
    assert admin_client.get(url).status_code == 200
    response = admin_client.post(url, {"post": "yes"})
    assert response.status_code == 302
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not Message.objects.filter(conversation_id=conversation.pk).exists()


def test_api_keys_show_prefix_owner_and_use_never_the_secret(admin_client, owner, make_user):
    api_key, secret = account_services.api_key_create(actor=owner, name="laptop client")
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=timezone.now())
    unused, _ = account_services.api_key_create(actor=make_user(email="bob@example.com"), name="spare key")
    hashed = secret_hash(secret)
    assert api_key.key_hash == hashed
    body = secret.removeprefix(f"lk_{api_key.prefix}_")  # the secret part (it may hold "_" itself)
    assert len(body) >= 40

    url = reverse("admin:accounts_apikey_changelist")
    listing = admin_client.get(url)
    assert listing.status_code == 200
    text = listing.content.decode()
    assert "laptop client" in text and api_key.prefix in text and "ada@example.com" in text
    assert secret not in text and body not in text and hashed not in text
    used = admin_client.get(url, {"used": "yes"}).content.decode()
    assert "laptop client" in used and "spare key" not in used
    searched = admin_client.get(url, {"q": "bob@"}).content.decode()
    assert "spare key" in searched and "laptop client" not in searched

    page = admin_client.get(reverse("admin:accounts_apikey_change", args=[api_key.pk]))
    assert page.status_code == 200
    text = page.content.decode()
    assert f"lk_{api_key.prefix}_…" in text and "ada@example.com" in text and "Last used" in text
    assert secret not in text and body not in text and hashed not in text
    assert "key_hash" not in text and "Key hash" not in text

    response = admin_client.post(url, {"action": "revoke", "_selected_action": [str(api_key.pk)]})
    assert response.status_code == 302
    api_key.refresh_from_db()
    unused.refresh_from_db()
    assert api_key.revoked_at is not None and unused.revoked_at is None
    revoked = admin_client.get(url, {"revoked": "yes"}).content.decode()
    assert "laptop client" in revoked and "spare key" not in revoked
