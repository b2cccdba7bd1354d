import json

import pytest

from apps.accounts.services import api_key_create
from apps.conversations import services
from apps.conversations.models import Conversation, Message

pytestmark = pytest.mark.django_db


def as_user(api_client, tokens):
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access_token']}")
    return api_client


def error_of(response, status):
    body = response.json()
    assert response.status_code == status, body
    assert body["status"] == "error" and body["error"]["message"]
    return body["error"]


def test_conversation_crud(api_client, make_user, login_tokens):
    client = as_user(api_client, login_tokens(make_user()))
    created = client.post("/v1/conversations", {"title": "Plans"}, format="json")
    assert created.status_code == 201
    cid = created.json()["data"]["conversation_id"]
    assert [c["conversation_id"] for c in client.get("/v1/conversations").json()["data"]["items"]] == [cid]
    assert client.patch(f"/v1/conversations/{cid}", {"title": "Trip"}, format="json").json()["data"]["title"] == "Trip"
    assert client.get(f"/v1/conversations/{cid}/messages").json()["data"]["items"] == []
    assert client.delete(f"/v1/conversations/{cid}").status_code == 200
    error_of(client.get(f"/v1/conversations/{cid}"), 404)


def test_another_users_conversation_is_not_found_everywhere(api_client, make_user, login_tokens):
    alice = make_user()
    conversation, _, _ = services.chat_turn_start(actor=alice, content="Alice's secret plan")
    client = as_user(api_client, login_tokens(make_user()))
    url = f"/v1/conversations/{conversation.pk}"
    assert error_of(client.get(url), 404)["code"] == "not_found"
    error_of(client.get(url + "/messages"), 404)
    error_of(client.patch(url, {"title": "pwned"}, format="json"), 404)
    error_of(client.delete(url), 404)
    error_of(
        client.post("/v1/chat", {"conversation_id": str(conversation.pk), "message": {"content": "hi"}}, format="json"),
        404,
    )
    assert client.get("/v1/conversations").json()["data"]["items"] == []
    conversation.refresh_from_db()
    assert conversation.title == "" and conversation.messages.count() == 2


@pytest.mark.parametrize(
    "payload, status, code",
    [
        ({"message": {"content": ""}}, 400, "validation_error"),
        ({"message": {"content": "   "}}, 400, "validation_error"),
        ({"message": {}}, 400, "validation_error"),
        ({}, 400, "validation_error"),
        ({"message": {"content": "hi", "mode": "voice"}}, 400, "validation_error"),
        ({"conversation_id": "not-a-uuid", "message": {"content": "hi"}}, 400, "validation_error"),
        ({"conversation_id": "00000000-0000-0000-0000-000000000000", "message": {"content": "hi"}}, 404, "not_found"),
        ({"message": {"content": "x" * 40000}}, 400, "validation_error"),
    ],
)
def test_chat_bad_input_is_an_envelope_error_and_changes_nothing(
    api_client, make_user, login_tokens, payload, status, code
):
    client = as_user(api_client, login_tokens(make_user()))
    assert error_of(client.post("/v1/chat", payload, format="json"), status)["code"] == code
    assert not Conversation.objects.exists() and not Message.objects.exists()


def test_chat_rejects_non_json_and_anonymous(api_client, make_user, login_tokens):
    error_of(api_client.post("/v1/chat", {"message": {"content": "hi"}}, format="json"), 401)
    client = as_user(api_client, login_tokens(make_user()))
    response = client.generic("POST", "/v1/chat", "{oops", content_type="application/json")
    assert error_of(response, 400)["code"] == "validation_error"


def test_busy_user_gets_409(api_client, make_user, login_tokens, settings):
    settings.CHAT_MAX_CONCURRENT_PER_USER = 1
    user = make_user()
    services.chat_turn_start(actor=user, content="first")
    client = as_user(api_client, login_tokens(user))
    assert (
        error_of(client.post("/v1/chat", {"message": {"content": "second"}}, format="json"), 409)["code"] == "conflict"
    )


def test_requests_per_minute_limit_is_429(api_client, make_user, login_tokens, settings):
    # An hour-long window, so a minute boundary between the calls cannot reset the count.
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "chat_user": (2, 3600)}
    settings.CHAT_MAX_CONCURRENT_PER_USER = 10
    user = make_user()
    services.chat_turn_start(actor=user, content="one")
    services.chat_turn_start(actor=user, content="two")
    client = as_user(api_client, login_tokens(user))
    response = client.post("/v1/chat", {"message": {"content": "three"}}, format="json")
    assert error_of(response, 429)["code"] == "rate_limited" and response["Retry-After"]


def test_cancel_only_own_requests(api_client, make_user, login_tokens):
    alice = make_user()
    _, _, answer = services.chat_turn_start(actor=alice, content="hi")
    bob_client = as_user(api_client, login_tokens(make_user()))
    error_of(bob_client.post("/v1/chat/cancel", {"request_id": answer.request_id}, format="json"), 404)
    answer.refresh_from_db()
    assert answer.status == Message.Status.QUEUED
    alice_client = as_user(api_client, login_tokens(alice))
    ok = alice_client.post("/v1/chat/cancel", {"request_id": answer.request_id}, format="json")
    assert ok.json()["data"]["cancelled"] is True
    answer.refresh_from_db()
    assert answer.status == Message.Status.CANCELLED


def test_models_and_completion_validation_with_api_keys(api_client, make_user, settings):
    user = make_user()
    api_key, key = api_key_create(actor=user, name="laptop")
    error_of(api_client.get("/v1/models"), 401)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    models = api_client.get("/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == settings.SERVED_MODEL_ID

    def complete(body):
        return api_client.generic("POST", "/v1/chat/completions", json.dumps(body), content_type="application/json")

    assert (
        error_of(complete({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}), 400)["code"]
        == "validation_error"
    )
    error_of(complete({"model": settings.SERVED_MODEL_ID, "messages": []}), 400)
    error_of(complete({"model": settings.SERVED_MODEL_ID, "messages": [{"role": "robot", "content": "hi"}]}), 400)
    error_of(
        complete(
            {"model": settings.SERVED_MODEL_ID, "messages": [{"role": "user", "content": "hi"}], "temperature": 7}
        ),
        400,
    )
    error_of(
        complete(
            {"model": settings.SERVED_MODEL_ID, "messages": [{"role": "user", "content": "hi"}], "stop": ["a"] * 5}
        ),
        400,
    )

    api_client.credentials(HTTP_AUTHORIZATION="Bearer lk_deadbeef_wrong")
    error_of(api_client.get("/v1/models"), 401)


def test_revoked_api_key_stops_working(api_client, make_user, login_tokens):
    user = make_user()
    client = as_user(api_client, login_tokens(user))
    created = client.post("/v1/api-keys", {"name": "ci"}, format="json").json()["data"]
    key_id, key = created["key_id"], created["key"]
    assert client.get("/v1/api-keys").json()["data"]["items"][0]["key_id"] == key_id
    assert "key" not in client.get("/v1/api-keys").json()["data"]["items"][0]
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert api_client.get("/v1/me").status_code == 200
    client = as_user(api_client, login_tokens(user))
    client.delete(f"/v1/api-keys/{key_id}")
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    error_of(api_client.get("/v1/me"), 401)


def test_api_keys_are_private(api_client, make_user, login_tokens):
    alice, bob = make_user(), make_user()
    key, _ = api_key_create(actor=alice, name="alice")
    client = as_user(api_client, login_tokens(bob))
    assert client.get("/v1/api-keys").json()["data"]["items"] == []
    error_of(client.delete(f"/v1/api-keys/{key.pk}"), 404)


@pytest.mark.parametrize("path", ["/v1/conversations", "/v1/artifacts", "/v1/chat", "/v1/chat/completions"])
def test_json_nested_thousands_of_levels_deep_is_a_400_not_a_500(api_client, make_user, login_tokens, path):
    client = as_user(api_client, login_tokens(make_user()))
    body = '{"a": ' * 5000 + "1" + "}" * 5000
    response = client.post(path, body, content_type="application/json")
    assert error_of(response, 400)["code"] == "validation_error"


@pytest.mark.parametrize(
    "url", ["/v1/conversations?q=%00", "/v1/files?folder=%00", "/v1/artifacts?q=a%00b", "/v1/preferences?kind=%00"]
)
def test_a_nul_byte_in_the_query_is_a_400_naming_the_field(api_client, make_user, login_tokens, url):
    client = as_user(api_client, login_tokens(make_user()))
    fault = error_of(client.get(url), 400)
    assert fault["code"] == "validation_error" and url.split("?")[1].split("=")[0] in fault["details"]


def test_a_nul_byte_in_the_ui_search_is_a_400(client, make_user):
    client.force_login(make_user())
    assert client.get("/c/search/?q=%00").status_code == 400


def test_a_nul_byte_in_the_authorization_header_is_a_400_in_the_envelope(api_client):
    response = api_client.get("/v1/me", HTTP_AUTHORIZATION="Bearer a\x00b")
    assert error_of(response, 400)["code"] == "validation_error"
