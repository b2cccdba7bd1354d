"""When a user's persona adapter trains by itself: the `triggers` of the `policy.training`
artifact, checked after each signal (the threshold) and by Celery beat (all of them).

- threshold: at least `new_signals` trainable signals (corrections, liked answers, picks) since
  the adapter's last job;
- schedule: the last job is older than `schedule_hours` and there is at least one new signal;
- satisfaction: among the user's latest `window` thumbs, the share of thumbs up fell by at least
  `drop` against the `window` before them, and there is something new to train on.

No automatic job starts while one is queued or running, or within `cooldown_minutes` of the last
one; "Train now" is the user's own call and ignores the cool-down.
"""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.utils import timezone

from apps.artifacts.selectors import global_artifact
from apps.training import adapters, selectors
from apps.training.models import PreferenceEvent, TrainingJob
from liminal.errors import Conflict

TRAINABLE = (PreferenceEvent.Kind.CORRECTION, PreferenceEvent.Kind.THUMBS_UP, PreferenceEvent.Kind.PICK)
THUMBS = (PreferenceEvent.Kind.THUMBS_UP, PreferenceEvent.Kind.THUMBS_DOWN)
# What the triggers are when the policy does not say; a policy says it per field.
DEFAULT_TRIGGERS = {
    "new_signals": 40,
    "schedule_hours": 24,
    "cooldown_minutes": 30,
    "satisfaction": {"window": 20, "drop": 0.25},
}


def trigger_settings() -> dict:
    artifact = global_artifact(kind="policy.training", name="training.default")
    configured = ((artifact.body or {}).get("triggers") or {}) if artifact is not None else {}
    merged = {**DEFAULT_TRIGGERS, **configured}
    merged["satisfaction"] = {**DEFAULT_TRIGGERS["satisfaction"], **(configured.get("satisfaction") or {})}
    return merged


def _live_signals(actor):
    return PreferenceEvent.objects.filter(owner=actor, excluded_at=None, is_evaluation=False)


def new_signals(*, actor, since) -> int:
    """Trainable signals the actor gave after `since` (all of them when None)."""
    events = _live_signals(actor).filter(kind__in=TRAINABLE, superseded_by=None)
    if since is not None:
        events = events.filter(created_at__gt=since)
    return events.count()


def satisfaction_drop(*, actor, window: int) -> float | None:
    """Share of thumbs up in the previous `window` thumbs minus that in the latest `window`;
    None until there are two full windows."""
    kinds = list(_live_signals(actor).filter(kind__in=THUMBS).order_by("-created_at").values_list("kind", flat=True))
    if len(kinds) < 2 * window:
        return None

    def liked(chunk):
        return sum(kind == PreferenceEvent.Kind.THUMBS_UP for kind in chunk) / window

    return liked(kinds[window : 2 * window]) - liked(kinds[:window])


def due_trigger(*, actor, now=None, include_schedule: bool = True) -> str | None:
    """The trigger that says the actor's adapter should train now, if any."""
    now = now or timezone.now()
    config = trigger_settings()
    adapter = selectors.persona_adapter(actor=actor)
    last = TrainingJob.objects.filter(adapter=adapter).order_by("-created_at").first() if adapter else None
    if last is not None:
        if last.status in TrainingJob.ACTIVE:
            return None
        if now - (last.finished_at or last.created_at) < timedelta(minutes=float(config["cooldown_minutes"])):
            return None
    since = last.created_at if last is not None else None
    fresh = new_signals(actor=actor, since=since)
    if fresh == 0:
        return None
    if fresh >= int(config["new_signals"]):
        return TrainingJob.Trigger.THRESHOLD
    satisfaction = config["satisfaction"]
    drop = satisfaction_drop(actor=actor, window=int(satisfaction["window"]))
    if drop is not None and drop >= float(satisfaction["drop"]):
        return TrainingJob.Trigger.SATISFACTION
    hours = config.get("schedule_hours")
    if include_schedule and hours and (since is None or now - since >= timedelta(hours=float(hours))):
        return TrainingJob.Trigger.SCHEDULE
    return None


def _start(actor, trigger: str) -> TrainingJob | None:
    try:
        return adapters.training_job_create(actor=actor, trigger=trigger)
    except Conflict:  # another check got there first
        return None


def after_signal(*, actor) -> TrainingJob | None:
    """Called once a signal is stored: start a job when the threshold or satisfaction says so
    (the schedule is beat's to check)."""
    trigger = due_trigger(actor=actor, include_schedule=False)
    return _start(actor, trigger) if trigger else None


def check_all(*, now=None) -> list[TrainingJob]:
    """Beat's round: every user with a live trainable signal, checked against every trigger."""
    users = (
        get_user_model()
        .objects.filter(preference_events__kind__in=TRAINABLE, preference_events__excluded_at=None, is_active=True)
        .distinct()
    )
    started = []
    for user in users:
        trigger = due_trigger(actor=user, now=now)
        job = _start(user, trigger) if trigger else None
        if job is not None:
            started.append(job)
    return started
