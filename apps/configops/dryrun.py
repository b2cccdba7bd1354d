"""Dry runs: what a patch would change in the decisions the platform makes, replayed over the
latest user messages the artifact applies to, before anything is written.

- `policy.routing`: the router's decision (routing_decide itself, given the policy body) with the
  old and the new body, for the users the policy applies to (its owner for a user's own
  "routing" policy; everyone without one for the global "routing.default").
- `workflow.chat`: which branch each switch takes, with the old and the new body, for the
  messages the workflow answered. Conditions that read a tool's output (`vars.*`) cannot be
  evaluated without running the tools; their switch is reported as "unknown".
Other kinds make no decisions to replay: the report says only whether the result is valid.

The report lists the affected messages by id; only admins ever see it (the API and the pages
refuse everyone else before a report is shown)."""

from collections.abc import Callable

from django.utils import timezone

from apps.artifacts.models import Artifact
from apps.router.replay import change, policy_messages, replay, user_messages_with_context
from workers.policy import ConditionError, parse_condition

MESSAGES = 50
MAX_WALK_STEPS = 200
UNKNOWN = "unknown"


# ---------------------------------------------------------------- routing


def routing_messages(artifact: Artifact):
    """The latest user messages the routing policy applies to (None: the router never reads it)."""
    return policy_messages(artifact, limit=MESSAGES)


def replay_routing(artifact: Artifact, old: dict, new: dict, *, embed: Callable[[str], list[float]]) -> dict:
    """The router's own decision (routing_decide, the body given) for each message's author."""
    messages = routing_messages(artifact)
    if messages is None:
        return {"replay": None, "note": "The router does not read this policy, so no decision changes."}
    return {"replay": "routing", **replay(messages, old, new, embed=embed)}


# ---------------------------------------------------------------- workflows


def switch_decisions(body: dict, inputs: dict) -> dict[str, str]:
    """switch node id -> the node its taken branch leads to, for the switches a run with these
    inputs reaches, assuming every tool call succeeds. A switch whose conditions read a tool's
    output is UNKNOWN (and what lies after it is not walked); one where no branch holds is ""."""
    nodes = {node["id"]: node for node in body.get("nodes", [])}
    if not nodes:
        return {}
    scope = {"input": dict(inputs), "vars": {}}
    decisions: dict[str, str] = {}
    pending = [body.get("entrypoint") or body["nodes"][0]["id"]]
    seen: set[str] = set()
    while pending and len(seen) < MAX_WALK_STEPS:
        node_id = pending.pop()
        if node_id is None or node_id in seen or node_id not in nodes:
            continue
        seen.add(node_id)
        node = nodes[node_id]
        if node["type"] == "switch":
            decisions[node_id] = taken = _taken(node, scope)
            if taken and taken != UNKNOWN:
                pending.append(taken)
        elif node["type"] == "parallel":
            pending.append(node.get("next"))
            pending.extend(branch.get("next") for branch in node.get("branches", []))
        elif node["type"] != "end":
            pending.append(node.get("next"))
    return decisions


def _taken(node: dict, scope: dict) -> str:
    for branch in node.get("branches", []):
        try:
            condition = parse_condition(branch["when"])
        except ConditionError:
            return UNKNOWN
        if any(name == "vars" or name.startswith("vars.") for name in condition.names()):
            return UNKNOWN
        if condition.evaluate(scope):
            return branch["next"]
    return ""


def workflow_messages(artifact: Artifact):
    """The latest user messages answered by a version of this workflow."""
    return (
        user_messages_with_context()
        .filter(children__role="assistant", children__workflow_version__artifact=artifact)
        .distinct()
        .order_by("-created_at")[:MESSAGES]
    )


def replay_workflow(artifact: Artifact, old: dict, new: dict) -> dict:
    considered, changes = 0, []
    messages = list(workflow_messages(artifact))
    from django.apps import apps

    # Read lazily: conversations sits above configops in the app order (see DESIGN.md).
    Message = apps.get_model("conversations", "Message")
    contexts = Message._meta.get_field("conversation").related_model.contexts.through
    context_ids: dict = {}
    for row in contexts.objects.filter(conversation_id__in={m.conversation_id for m in messages}):
        context_ids.setdefault(row.conversation_id, []).append(str(row.context_id))
    for message in messages:
        considered += 1
        inputs = {
            "message": message.content,
            "conversation_id": str(message.conversation_id),
            "context_ids": context_ids.get(message.conversation_id, []),
            "has_contexts": message.has_context,
        }
        before, after = switch_decisions(old, inputs), switch_decisions(new, inputs)
        if before != after:
            changes.append(change(message, before, after))
    return {"replay": "workflow", "messages_considered": considered, "changes": changes}


# ---------------------------------------------------------------- the report


def report(*, artifact: Artifact, base_version: int, old: dict, new: dict | None, error=None, embed=None) -> dict:
    """The dry-run report of a patch: `new` None with `error` (a DomainError) when the patch does
    not apply or its result is invalid."""
    result = {
        "computed_at": timezone.now().isoformat(),
        "kind": artifact.kind,
        "base_version": base_version,
        "valid": error is None,
        "error": None,
        "replay": None,
        "messages_considered": 0,
        "messages_changed": 0,
        "affected_message_ids": [],
        "changes": [],
        "note": "",
    }
    if error is not None:
        result["error"] = {"code": error.error_code, "message": error.message, "details": error.details}
        result["note"] = "The patch would not be applied: nothing would change."
        return result
    if new == old:
        result["note"] = "The patch changes nothing in the body."
    elif artifact.kind == Artifact.Kind.POLICY_ROUTING:
        if embed is None:
            from apps.training.services import embed
        result.update(replay_routing(artifact, old, new, embed=embed))
    elif artifact.kind == Artifact.Kind.WORKFLOW_CHAT:
        result.update(replay_workflow(artifact, old, new))
    else:
        result["note"] = f"A {artifact.kind} makes no routing decisions to replay."
    result["messages_changed"] = len(result["changes"])
    result["affected_message_ids"] = [change["message_id"] for change in result["changes"]]
    return result
