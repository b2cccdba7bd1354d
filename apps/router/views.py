"""The routing policy editor: a user edits their own policy (admins also the global default),
sees each rule's fault next to it, and dry-runs an edit over the latest 50 messages the policy
decides before saving it. Beside it: the routing feedback the user gave and how each adapter
they can be routed to has fared."""

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render

from apps.artifacts import services as artifact_services
from apps.artifacts.models import Artifact
from apps.artifacts.selectors import global_artifact
from apps.artifacts.validation import validate_body
from apps.router import replay, selectors
from apps.router.models import AdapterRouterState
from apps.training.models import PreferenceEvent
from apps.training.services import embed
from liminal.errors import DomainError, Invalid

RULE_POINTER_PREFIX = "/rules/"


def _own_policy(actor):
    return (
        Artifact.objects.filter(owner=actor, kind="policy.routing", name=selectors.USER_POLICY_NAME)
        .select_related("current_version")
        .first()
    )


def _editing(request):
    """(the artifact edited or None for a user's first own policy, whether it is the global one)."""
    if request.GET.get("policy") == "global" and request.user.is_admin:
        return global_artifact(kind="policy.routing", name=selectors.GLOBAL_POLICY_NAME), True
    return _own_policy(request.user), False


def _fault(exc: DomainError) -> dict:
    """Where an edit went wrong: the rule index (from the JSON pointer) and the message."""
    pointer = (exc.details or {}).get("body_pointer") or ""
    rule = None
    if pointer.startswith(RULE_POINTER_PREFIX):
        head = pointer[len(RULE_POINTER_PREFIX) :].split("/", 1)[0]
        rule = int(head) if head.isdigit() else None
    return {"message": exc.message, "pointer": pointer, "rule": rule}


def _parse(text: str) -> dict:
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Invalid(f"Not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.", field="body") from exc
    if not isinstance(body, dict):
        raise Invalid("The policy is a JSON object.", field="body")
    return body


def _feedback(actor) -> dict:
    events = PreferenceEvent.objects.filter(owner=actor, kind=PreferenceEvent.Kind.ROUTING, excluded_at=None)
    return {
        "total": events.count(),
        "negative": events.filter(score__lt=0).count(),
        "positive": events.filter(score__gt=0).count(),
        "recent": list(events.order_by("-created_at")[:10]),
    }


def _adapter_scores(actor) -> list[dict]:
    candidates = selectors.routing_candidates(actor=actor)
    states = {
        str(s.adapter_id): s
        for s in AdapterRouterState.objects.filter(adapter_id__in=[c["adapter_id"] for c in candidates])
    }
    return [{"candidate": c, "state": states.get(c["adapter_id"])} for c in candidates]


@login_required
def policy_editor(request):
    artifact, is_global = _editing(request)
    effective = artifact or selectors.routing_policy(actor=request.user)
    current = effective.current_version.body if effective is not None and effective.current_version else {}
    text = request.POST.get("body") if request.method == "POST" else json.dumps(current, indent=2)
    fault, report, body = None, None, None
    if request.method == "POST":
        action = request.POST.get("action")
        try:
            body = _parse(text)
            validate_body(body, owner=None if is_global else request.user, kind="policy.routing")
            if action == "save":
                if artifact is None:
                    artifact_services.artifact_create(
                        actor=request.user,
                        name=selectors.USER_POLICY_NAME,
                        body=body,
                        change_note="Edited in the policy editor.",
                    )
                else:
                    artifact_services.artifact_update(
                        actor=request.user, artifact=artifact, body=body, change_note="Edited in the policy editor."
                    )
                messages.success(request, "Saved: the next message is routed by this policy.")
                return redirect(request.get_full_path())
            if action == "reset" and artifact is not None and not is_global:
                artifact_services.artifact_delete(actor=request.user, artifact=artifact)
                messages.success(request, "Your own policy is gone: the global default routes your messages again.")
                return redirect("routing-policy")
            source = replay.policy_messages(artifact) if is_global else replay.user_messages(actor=request.user)
            report = replay.replay(source or [], current, body, embed=embed)
        except DomainError as exc:
            fault = _fault(exc)
    try:
        rules = (body or _parse(text)).get("rules") or []
    except DomainError:
        rules = []
    context = {
        "text": text,
        "rules": [{"index": i, "rule": r} for i, r in enumerate(rules) if isinstance(r, dict)],
        "fault": fault,
        "report": report,
        "is_global": is_global,
        "own": artifact if not is_global else None,
        "version": effective.current_version.version if effective is not None and effective.current_version else None,
        "feedback": _feedback(request.user),
        "adapters": _adapter_scores(request.user),
    }
    return render(request, "routing/editor.html", context, status=400 if fault else 200)
