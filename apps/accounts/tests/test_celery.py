from datetime import timedelta

import pytest
from django.utils import timezone

from apps.accounts.models import AuthSession
from apps.accounts.tasks import purge_expired_auth_sessions
from liminal.celery import app


@pytest.mark.slow
def test_a_real_worker_runs_a_task_from_the_real_broker(celery_worker_process, make_user):
    user = make_user()
    live = AuthSession.objects.create(
        user=user, refresh_token_hash="a" * 64, expires_at=timezone.now() + timedelta(days=1)
    )
    AuthSession.objects.create(user=user, refresh_token_hash="b" * 64, expires_at=timezone.now() - timedelta(days=1))

    result = purge_expired_auth_sessions.delay()

    assert result.get(timeout=60) == 1
    assert list(AuthSession.objects.values_list("pk", flat=True)) == [live.pk]


def test_routes_send_long_jobs_to_their_queues():
    router = app.amqp.router
    assert router.route({}, "apps.conversations.tasks.generate_reply")["queue"].name == "inference"
    assert router.route({}, "apps.knowledge.tasks.ingest_file")["queue"].name == "ingest"
    assert router.route({}, "apps.training.tasks.train_adapter")["queue"].name == "train"
    assert router.route({}, "apps.training.tasks.cluster_feedback")["queue"].name == "cluster"
    assert router.route({}, "apps.accounts.tasks.purge_expired_auth_sessions")["queue"].name == "default"
    assert app.conf.task_acks_late is True
    assert app.conf.broker_transport_options["visibility_timeout"] >= 3600
