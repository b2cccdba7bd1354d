from apps.training.models import PreferenceEvent
from apps.training.services import THUMBS


def thumbs_for_messages(*, actor, message_ids) -> dict:
    """message id -> the actor's current thumb kind, for the given messages."""
    rows = PreferenceEvent.objects.filter(owner=actor, message_id__in=list(message_ids), kind__in=THUMBS)
    return {row.message_id: row.kind for row in rows}
