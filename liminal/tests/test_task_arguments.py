"""What users write never travels as a Celery task argument where an id will do: task messages
are visible in Flower and in the broker, and outlive the request. (Tool inputs, which must
travel, go by a Redis key: apps/conversations/tests/test_tool_invoke.py.)"""

import json

import pytest

from apps.artifacts.selectors import global_artifact
from apps.conversations import orchestrator
from apps.knowledge import services as knowledge_services
from liminal.celery import app

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "my locker code is 4471-zebra"


def test_chat_and_upload_tasks_carry_ids_not_the_users_text(make_user, monkeypatch, settings, tmp_path):
    settings.SHARED_FS_ROOT = tmp_path
    sent = []
    # Every task message the app would publish, as it would reach the broker (not published).
    monkeypatch.setattr(
        app.amqp, "send_task_message", lambda producer, name, message, **kwargs: sent.append((name, message))
    )
    user = make_user()
    orchestrator.start_chat(actor=user, content=f"Please remember: {SECRET}.", turn_id=orchestrator.new_turn_id())
    knowledge_services.file_upload(actor=user, name="notes.txt", content=f"Notes. {SECRET}.".encode())

    assert {name for name, _ in sent} >= {"apps.conversations.tasks.generate_reply", "apps.knowledge.tasks.ingest_file"}
    for name, message in sent:
        assert SECRET not in json.dumps([message.headers, message.properties, message.body], default=str), name


def test_the_architects_task_carries_an_id_not_the_admins_goal(make_user, monkeypatch, api_client):
    """POST /v1/config/auto_patch: the goal an admin writes stays in the database."""
    sent = []
    monkeypatch.setattr(
        app.amqp, "send_task_message", lambda producer, name, message, **kwargs: sent.append((name, message))
    )
    policy = global_artifact(kind="policy.routing", name="routing.default")
    api_client.force_authenticate(make_user(role="admin"))
    response = api_client.post(
        "/v1/config/auto_patch", {"artifact_id": str(policy.pk), "goal": f"Route to {SECRET}."}, format="json"
    )

    assert response.status_code == 202, response.content
    assert [name for name, _ in sent] == ["apps.configops.tasks.architect_propose"]
    for name, message in sent:
        assert SECRET not in json.dumps([message.headers, message.properties, message.body], default=str), name
