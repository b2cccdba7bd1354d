"""Replaying routing decisions: what a policy body would decide for past messages, compared
with another body, by the router itself (routing_decide given the body), before anything is
saved. Used by the policy editor and by ConfigOps' dry runs."""

import functools
from collections.abc import Callable, Iterable

from apps.router.services import routing_decide

PREVIEW_CHARS = 120
MESSAGES = 50


def user_messages(*, actor, limit: int = MESSAGES):
    """The actor's latest messages, as the router saw them (whether documents were bound)."""
    return user_messages_with_context().filter(owner=actor).order_by("-created_at")[:limit]


def user_messages_with_context():
    """Users' messages, each with whether its conversation had documents bound."""
    from django.apps import apps
    from django.db.models import Exists, OuterRef

    # Read lazily: conversations sits above the router in the app order (DESIGN.md).
    Message = apps.get_model("conversations", "Message")
    contexts = Message._meta.get_field("conversation").related_model.contexts.through
    return (
        Message.objects.filter(role="user")
        .exclude(content="")
        .annotate(has_context=Exists(contexts.objects.filter(conversation_id=OuterRef("conversation_id"))))
        .select_related("owner")
    )


def policy_messages(policy, *, limit: int = MESSAGES):
    """The latest messages a routing policy decides: its owner's for a user's own "routing"
    policy; everyone's without one of their own for the global default; None for a policy the
    router never reads."""
    from apps.artifacts.models import Artifact
    from apps.router.selectors import GLOBAL_POLICY_NAME, USER_POLICY_NAME

    messages = user_messages_with_context()
    if policy.owner_id is None:
        if policy.name != GLOBAL_POLICY_NAME:
            return None
        own = Artifact.objects.filter(kind="policy.routing", name=USER_POLICY_NAME, owner__isnull=False)
        messages = messages.exclude(owner_id__in=own.values("owner_id"))
    elif policy.name == USER_POLICY_NAME:
        messages = messages.filter(owner_id=policy.owner_id)
    else:
        return None
    return messages.order_by("-created_at")[:limit]


def gates(decision: dict) -> list[dict]:
    return [{k: gate[k] for k in ("adapter_id", "name", "weight")} for gate in decision["adapter_gates"]]


def replay(messages: Iterable, old: dict, new: dict, *, embed: Callable[[str], list[float]]) -> dict:
    """{messages_considered, changes: [{message_id, owner_id, created_at, preview, before, after}]}:
    each message decided for its author with `old` and with `new` (embedded once)."""
    considered, changes = 0, []
    for message in messages:
        considered += 1
        embed_once = functools.cache(embed)

        def decided(body, message=message, embed_once=embed_once):
            return gates(
                routing_decide(
                    actor=message.owner,
                    message=message.content,
                    has_context=bool(getattr(message, "has_context", False)),
                    embed=embed_once,
                    policy_body=body,
                )
            )

        before, after = decided(old), decided(new)
        if before != after:
            changes.append(change(message, before, after))
    return {"messages_considered": considered, "changes": changes}


def change(message, before, after) -> dict:
    """One message decided differently: which, whose, a preview, and both decisions."""
    return {
        "message_id": str(message.pk),
        "owner_id": str(message.owner_id),
        "created_at": message.created_at.isoformat(),
        "preview": " ".join(message.content.split())[:PREVIEW_CHARS],
        "before": before,
        "after": after,
    }
