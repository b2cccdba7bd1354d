"""An answer that cannot be saved because PostgreSQL is unreachable still ends for its listeners
(an error event through Redis, the user's slot freed), and is stored as failed, with the text
saved so far, once the database is back (the stalled-answer reaper)."""

import pytest
from django.db import OperationalError
from django.db.models.query import QuerySet

from apps.conversations import services, state, streaming
from apps.conversations.models import Message

pytestmark = pytest.mark.django_db


def test_an_answer_ending_during_a_database_outage_is_announced_and_stored_later(make_user, monkeypatch):
    user = make_user()
    _, _, reply = services.chat_turn_start(actor=user, content="Hello?")
    assert services.generation_started(message=reply)
    services.generation_progress(message=reply, content="Partial ans")
    events = []
    monkeypatch.setattr(streaming, "publish", lambda key, event, **_: events.append((key, event)))

    real_update = QuerySet.update

    def unreachable(queryset, **fields):
        if queryset.model is Message:
            raise OperationalError("server closed the connection unexpectedly")
        return real_update(queryset, **fields)

    monkeypatch.setattr(QuerySet, "update", unreachable)
    services.generation_finish(message=reply, content="Partial answer", status="complete", receipt={})
    assert events == [
        (
            str(reply.pk),
            {"type": "gen.done", "message_id": str(reply.pk), "status": "failed", "error": services.UNSAVED_ERROR},
        )
    ]
    assert str(reply.pk) not in {m.decode() for m in state.state_redis().zrange(state._active_key(user.pk), 0, -1)}
    assert services.generation_stored_content(message=reply) == "Partial ans"

    # The database is back; the worker's heartbeat has lapsed: the reaper stores the outcome.
    monkeypatch.setattr(QuerySet, "update", real_update)
    reply.refresh_from_db()
    assert reply.status == Message.Status.STREAMING
    state.state_redis().delete(state.heartbeat_key(reply.pk))
    assert services.generations_reap_stalled() == 1
    reply.refresh_from_db()
    assert reply.status == Message.Status.FAILED and reply.content == "Partial ans" and reply.error
