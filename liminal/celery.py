"""Celery app: named queues, routes and late acks for long jobs."""

import logging
import os
import time

from celery import Celery
from celery.signals import celeryd_after_setup, task_postrun, task_prerun, task_received
from django.db import close_old_connections
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "liminal.settings")

logger = logging.getLogger(__name__)

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
        "apps.knowledge.tasks.reap_*": {"queue": "default"},
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
    # The visibility timeout comes from settings (CELERY_BROKER_TRANSPORT_OPTIONS): reading
    # settings here would load them on `import liminal`, and `python -m liminal.infra` (make
    # infra-status, infra-stop) must work without a SECRET_KEY and without starting servers.
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
        "reap-stalled-knowledge-files": {
            "task": "apps.knowledge.tasks.reap_stalled_files",
            "schedule": 60.0,
        },
        "reap-stalled-training-jobs": {
            "task": "apps.training.tasks.reap_stalled_training_jobs",
            "schedule": 60.0,
        },
        "maintain-clusters": {
            "task": "apps.training.tasks.cluster_maintain",
            "schedule": 300.0,
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


# ---------------------------------------------------------------- a killed worker's messages
#
# Redis has no per-consumer acknowledgement: a message a worker took sits in kombu's `unacked`
# hash until that worker acknowledges it, and is handed to another worker only once the
# visibility timeout has passed, which must outlast the longest job (hours). A worker killed
# outright (the OOM killer, kill -9) acknowledges nothing, and task_reject_on_worker_lost only
# covers a prefork child dying under a living parent, not a threads-pool worker. So each worker
# notes the delivery tags it holds under its node name, and a worker starting under that name
# again (make run's supervisor, a container's restart policy) first returns its predecessor's
# unacknowledged messages to their queues. Acknowledged ones are gone from `unacked` and stay
# gone. Two live workers must not share a node name (Celery warns when they do).


def _held_key(hostname: str) -> str:
    return f"liminal:worker-held:{hostname}"


def _broker_client(channel):
    """A client on the broker's Redis (kombu's Redis channel), or None for another broker."""
    if not hasattr(getattr(channel, "qos", None), "restore_by_tag"):
        return None
    return channel.Client(connection_pool=channel.pool)


_held_client = None  # this worker's client for the notes, from the channel its messages came on


@task_received.connect
def _note_held_message(request=None, **kwargs):
    global _held_client
    message = getattr(request, "message", None)
    if message is None:
        return
    _held_client = _held_client or _broker_client(message.channel)
    if _held_client is None:
        return
    key = _held_key(request.hostname)
    try:
        _held_client.pipeline().hset(key, message.delivery_tag, time.time()).expire(
            key, app.conf.broker_transport_options.get("visibility_timeout", 3600)
        ).execute()
    except Exception:  # the broker going away must not fail the task; its message is in `unacked`
        logger.warning("Could not note message %s as held by %s", message.delivery_tag, request.hostname)


@task_postrun.connect
def _forget_held_message(task=None, **kwargs):
    request = getattr(task, "request", None)
    tag = (getattr(request, "delivery_info", None) or {}).get("delivery_tag")
    if _held_client is None or not tag or getattr(request, "is_eager", False):
        return
    try:
        _held_client.hdel(_held_key(request.hostname), tag)
    except Exception:  # left in the notes: the next start finds it acknowledged and skips it
        logger.warning("Could not forget held message %s", tag)


@celeryd_after_setup.connect
def _return_messages_of_previous_run(sender=None, instance=None, **kwargs):
    """Before this worker consumes: requeue what a worker of the same name held when it died."""
    hostname = sender
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        client = _broker_client(channel)
        if client is None:
            return
        key = _held_key(hostname)
        unacked = [tag for tag in client.hkeys(key) if client.hexists(channel.unacked_key, tag)]
        for tag in unacked:
            channel.qos.restore_by_tag(tag.decode(), client=client)
        client.delete(key)
    if unacked:
        logger.warning("Returned %d message(s) left unacknowledged by a previous %s", len(unacked), hostname)
