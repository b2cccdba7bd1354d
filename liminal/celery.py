"""Celery app: named queues, routes and late acks for long jobs."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun
from django.conf import settings
from django.db import close_old_connections
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "liminal.settings")

app = Celery("liminal")
app.config_from_object("django.conf:settings", namespace="CELERY")

QUEUES = ("inference", "ingest", "cluster", "train", "default")

app.conf.update(
    task_queues=[Queue(name) for name in QUEUES],
    task_default_queue="default",
    task_routes={
        "apps.conversations.tasks.generate_*": {"queue": "inference"},
        "apps.conversations.tasks.title_*": {"queue": "inference"},
        "apps.conversations.tasks.reap_*": {"queue": "default"},
        "apps.knowledge.tasks.*": {"queue": "ingest"},
        "apps.training.tasks.cluster_*": {"queue": "cluster"},
        "apps.training.tasks.train_*": {"queue": "train"},
        "apps.training.tasks.check_*": {"queue": "default"},
        "apps.training.tasks.reap_*": {"queue": "default"},
    },
    # A job is acknowledged only when it finishes, so a worker that dies mid-run leaves it queued
    # for another worker; the visibility timeout must exceed the longest job.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_transport_options={"visibility_timeout": settings.CELERY_VISIBILITY_TIMEOUT},
    result_backend_transport_options={"visibility_timeout": settings.CELERY_VISIBILITY_TIMEOUT},
    result_expires=24 * 3600,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    # Celery's Django fixup closes every database connection before and after each task unless
    # this is set, so each answer opened a new PostgreSQL connection (a server process started
    # and authenticated) before its first query: 6 ms of its time to first token here, against
    # 3 ms with the thread's connection kept and health-checked (bench/README.md, 2026-12-04).
    # Connections are recycled as Django does around requests instead (below).
    CELERY_DB_REUSE_MAX=2**62,
    beat_schedule={
        "reap-stalled-generations": {
            "task": "apps.conversations.tasks.reap_stalled_generations",
            "schedule": 10.0,
        },
        "check-training-triggers": {
            "task": "apps.training.tasks.check_training_triggers",
            "schedule": 60.0,
        },
        "reap-stalled-training-jobs": {
            "task": "apps.training.tasks.reap_stalled_training_jobs",
            "schedule": 60.0,
        },
        "purge-expired-auth-sessions": {
            "task": "apps.accounts.tasks.purge_expired_auth_sessions",
            "schedule": 3600.0,
        },
    },
)
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def _recycle_database_connections(task=None, **kwargs):
    """What Django does around each request: drop this thread's connection once it is older than
    CONN_MAX_AGE or unusable, and health-check it before its next use (CONN_HEALTH_CHECKS).
    Not for eager tasks, which run inside the caller's transaction."""
    if not getattr(task.request, "is_eager", False):
        close_old_connections()
