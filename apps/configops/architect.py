"""The architect: the model reads an artifact, its JSON Schema and recent metrics, and writes a
patch for it, which is recorded as a proposal (pending an admin's decision; never applied here).

The engine has no constrained decoding, so the output is generated greedily, then the first
JSON value in it is parsed and validated against the proposal's JSON Schema
(`patches.PROPOSAL_SCHEMA`). An output that does not parse or validate is kept as a failed
ConfigPatch with the reason and the output itself."""

import json
import logging
from collections.abc import Callable
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone
from jsonschema.exceptions import best_match

from apps.artifacts import seeds
from apps.artifacts.models import Artifact
from apps.artifacts.prompts import fill_prompt
from apps.artifacts.selectors import global_artifact
from apps.artifacts.validation import kind_schema
from apps.configops import services
from apps.configops.models import ConfigPatch
from apps.configops.patches import pointer_of, proposal_validator
from liminal.errors import DomainError

logger = logging.getLogger(__name__)

_compact = {"separators": (",", ":"), "sort_keys": False}


# The kinds the architect proposes patches for (policy.architect's schema lists the same).
ARCHITECT_KINDS = (Artifact.Kind.POLICY_ROUTING, Artifact.Kind.WORKFLOW_CHAT)


def architect_policy() -> dict:
    """The global `architect.default` policy's body, over the seeded one (which stands in for
    missing fields, or the whole policy before the migrations ran)."""
    artifact = global_artifact(kind=Artifact.Kind.POLICY_ARCHITECT, name=seeds.DEFAULT_ARCHITECT_POLICY)
    return {**seeds.ARCHITECT_POLICY, **(artifact.body if artifact is not None else {})}


def recent_metrics(*, days: int | None = None) -> dict:
    """Platform-wide aggregates only (no user's text): satisfaction from thumbs, routing feedback,
    knowledge gaps."""
    from apps.knowledge.models import KnowledgeGap
    from apps.training.models import PreferenceEvent

    days = days or architect_policy()["metrics_days"]
    since = timezone.now() - timedelta(days=days)
    events = PreferenceEvent.objects.filter(created_at__gte=since, excluded_at__isnull=True)
    Kind, Feedback = PreferenceEvent.Kind, PreferenceEvent.Feedback
    judged = events.exclude(kind=Kind.ROUTING)
    up = judged.filter(Q(kind=Kind.THUMBS_UP) | Q(feedback__in=[Feedback.POSITIVE, Feedback.LIKE])).count()
    down = judged.filter(Q(kind=Kind.THUMBS_DOWN) | Q(feedback__in=[Feedback.NEGATIVE, Feedback.DISLIKE])).count()
    routing = events.filter(kind=Kind.ROUTING)
    gaps = KnowledgeGap.objects.all()
    return {
        "days": days,
        "thumbs_up": up,
        "thumbs_down": down,
        "satisfaction": round(up / (up + down), 3) if up + down else None,
        "routing_feedback": {
            "total": routing.count(),
            "positive": routing.filter(feedback__in=[Feedback.POSITIVE, Feedback.LIKE]).count(),
            "negative": routing.filter(feedback__in=[Feedback.NEGATIVE, Feedback.DISLIKE]).count(),
        },
        "knowledge_gaps": {
            "new": gaps.filter(created_at__gte=since).count(),
            "open": gaps.filter(resolved_at__isnull=True).count(),
        },
    }


def build_prompt(*, artifact: Artifact, metrics: dict, goal: str = "", policy: dict | None = None) -> str:
    policy = policy or architect_policy()
    return fill_prompt(
        policy["prompt"],
        {
            "kind": artifact.kind,
            "name": artifact.name,
            "schema": json.dumps(kind_schema(artifact.kind), **_compact),
            "body": json.dumps(artifact.body, **_compact),
            "metrics": json.dumps(metrics, **_compact),
            "goal": goal.strip() or policy["default_goal"],
        },
    )


def parse_proposal(text: str) -> tuple[dict | None, str]:
    """({ops, justification}, "") from the model's output, or (None, why not). The first JSON
    value in the text counts; a bare list of operations is accepted with a stock justification."""
    decoder = json.JSONDecoder()
    value, found = None, False
    for start, char in enumerate(text):
        if char in "{[":
            try:
                value, _ = decoder.raw_decode(text, start)
            except ValueError:
                continue
            found = True
            break
    if not found:
        return None, "The model's output holds no JSON object or list."
    if isinstance(value, list):
        value = {"ops": value, "justification": "Proposed by the architect without a justification."}
    error = best_match(proposal_validator.iter_errors(value))
    if error is not None:
        where = pointer_of(error.absolute_path) or "/"
        return None, f"The model's output is not a valid proposal: {error.message} (JSON pointer {where})"
    return value, ""


def propose(*, artifact: Artifact, generate: Callable[[str], str], goal: str = "") -> ConfigPatch:
    """One proposal for the artifact, pending an admin; or a failed ConfigPatch saying why not."""
    artifact = Artifact.objects.select_related("current_version").get(pk=artifact.pk)
    policy = architect_policy()
    metrics = recent_metrics(days=policy["metrics_days"])
    prompt = build_prompt(artifact=artifact, metrics=metrics, goal=goal, policy=policy)
    try:
        output = generate(prompt)
    except Exception as exc:
        logger.exception("The architect could not generate for %s", artifact)
        return services.patch_record_failure(
            artifact=artifact, reason=f"The model could not be asked: {exc.__class__.__name__}: {exc}"
        )
    proposal, problem = parse_proposal(output)
    if proposal is None:
        return services.patch_record_failure(artifact=artifact, reason=problem, model_output=output)
    try:
        return services.patch_propose(
            actor=None,
            artifact=artifact,
            ops=proposal["ops"],
            justification=proposal["justification"],
            proposer=ConfigPatch.Proposer.SYSTEM_LLM,
            model_output=output,
        )
    except DomainError as exc:
        return services.patch_record_failure(
            artifact=artifact,
            reason=services.failure_reason(exc),
            model_output=output,
            justification=proposal["justification"],
        )


def engine_generate(prompt: str) -> str:
    """Greedy text from this worker's one engine (loaded on first use), as the title job asks it."""
    from apps.conversations.engine_runtime import get_engine  # lazily: conversations sits above configops
    from workers.llm import SamplingParams

    engine = get_engine()
    rendered = engine.render_chat([{"role": "user", "content": prompt}])
    params = SamplingParams(greedy=True, max_tokens=architect_policy()["max_tokens"])
    return engine.generate(rendered, params, truncate=True).text


def targets() -> list[Artifact]:
    """The global artifacts the nightly run proposes patches for (the policy names them)."""
    found = []
    for target in architect_policy()["targets"]:
        artifact = global_artifact(kind=target["kind"], name=target["name"])
        if artifact is not None:
            found.append(artifact)
    return found
