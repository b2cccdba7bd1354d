from django.db import transaction

from apps.training.models import PreferenceEvent

THUMBS = (PreferenceEvent.Kind.THUMBS_UP, PreferenceEvent.Kind.THUMBS_DOWN)


@transaction.atomic
def thumbs_set(*, actor, message, prompt: str, kind: str | None) -> PreferenceEvent | None:
    """Record the user's current thumb on an answer; one per answer, None clears it."""
    PreferenceEvent.objects.filter(owner=actor, message=message, kind__in=THUMBS).delete()
    if kind is None:
        return None
    if kind not in THUMBS:
        raise ValueError(f"unknown thumb {kind!r}")
    return PreferenceEvent.objects.create(
        owner=actor,
        message=message,
        conversation=message.conversation,
        kind=kind,
        prompt=prompt,
        answer=message.content,
        receipt=message.receipt,
    )
