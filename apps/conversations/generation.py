"""Runs one answer on this worker: the answer's pinned workflow (its tool calls stream tokens to
the answer's channel group), then the one receipt every entry point stores."""

import logging
import threading
import time

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from apps.artifacts.prompts import fill_prompt
from apps.artifacts.seeds import WORKFLOW as SEEDED_WORKFLOW
from apps.conversations import services, state
from apps.conversations.engine_runtime import get_engine
from apps.conversations.models import Message
from apps.conversations.streaming import HeldTraces
from apps.conversations.tools import RunContext
from apps.conversations.workflow import WorkflowFailed, WorkflowRunner, beside
from apps.router.services import routing_decide
from apps.router.state import usage_record

logger = logging.getLogger(__name__)

STATUS_BY_FINISH = {
    "stop": Message.Status.COMPLETE,
    "length": Message.Status.COMPLETE,
    "no_knowledge": Message.Status.COMPLETE,
    "cancelled": Message.Status.CANCELLED,
    "error": Message.Status.FAILED,
}
ENGINE_FIELDS = (
    "model",
    "adapters",
    "prompt_tokens",
    "completion_tokens",
    "time_to_first_token_ms",
    "total_time_ms",
    "mean_logprob",
    "summarised_through",
    "prompt_build_ms",
)


class _Heartbeat(threading.Thread):
    """Proves this worker is alive while the answer waits for a slot, prefills or decodes.

    A Redis outage does not end it: it logs once, retries with a growing delay, and beats on
    when Redis is back. The delay stays short (at most a second, or one beat): a restarted
    Redis may have lost the key, and the reaper must find it written again."""

    FIRST_RETRY_S = 0.25
    LAST_RETRY_S = 1.0

    def __init__(self, message_id):
        super().__init__(daemon=True)
        self.message_id = message_id
        self.stopped = threading.Event()
        self.interval = settings.GENERATION_HEARTBEAT_SECONDS / 3

    def retry_delay(self, failures: int) -> float:
        """The wait after `failures` failed beats in a row: doubling, up to a second or one beat."""
        return min(self.FIRST_RETRY_S * 2 ** min(failures - 1, 16), self.LAST_RETRY_S, self.interval)

    def run(self):
        failures = 0
        while not self.stopped.wait(self.retry_delay(failures) if failures else self.interval):
            try:
                state.heartbeat(self.message_id)
            except Exception as exc:
                if not failures:
                    logger.warning(
                        "Heartbeat of answer %s failed (%s: %s); retrying until Redis answers",
                        self.message_id,
                        exc.__class__.__name__,
                        exc,
                    )
                failures += 1
                continue
            if failures:
                logger.info("Heartbeat of answer %s resumed after %d failed tries", self.message_id, failures)
            failures = 0


def build_receipt(
    message: Message,
    *,
    answer: dict | None,
    trace: list,
    finish_reason: str,
    picked_up,
    run_s,
    run_vars=None,
    routing: dict | None = None,
) -> dict:
    """The one receipt shape, whichever entry point started the answer and however it ended."""
    answer, run_vars, routing = answer or {}, run_vars or {}, routing or {}
    version = message.workflow_version
    receipt = {field: answer.get(field) for field in ENGINE_FIELDS}
    receipt.update(
        adapters=answer.get("adapters") or [],
        prompt_tokens=answer.get("prompt_tokens") or 0,
        completion_tokens=answer.get("completion_tokens") or 0,
        finish_reason=finish_reason,
        workflow={"id": str(version.artifact_id), "version": version.version, "name": version.artifact.name}
        if version is not None
        else None,
        workflow_trace=trace,
        workflow_ms=round(run_s * 1000, 1),
        routing_trace=routing.get("trace") or [],
        adapter_gates=routing.get("adapter_gates") or [],
        routing_policy=routing.get("policy"),
        correction_ids=run_vars.get("correction_ids") or [],
        memory_ids=run_vars.get("memory_ids") or [],
        sampling=message.generation_params or None,
        queue_wait_ms=round((picked_up - message.created_at).total_seconds() * 1000, 1),
    )
    if answer.get("retrieval"):
        receipt["retrieval"] = answer["retrieval"]
    return receipt


def _workflow_body(message: Message) -> dict:
    if message.workflow_version is not None:
        return message.workflow_version.body
    workflow = services.workflow_for(actor=message.owner, conversation=message.conversation)
    message.workflow_version = workflow.current_version
    return workflow.current_version.body


def _route(message: Message, run: RunContext, *, has_context: bool) -> dict:
    routing = routing_decide(
        actor=message.owner, message=message.parent.content, has_context=has_context, embed=run.embedding
    )
    run.traces.add({"node": "routing", "routing_trace": routing["trace"], "adapter_gates": routing["adapter_gates"]})
    return routing


def _count_uses(routing: dict | None) -> None:
    """Each adapter the router gated into an answer counts a use (the Routing page shows them);
    after the answer is stored, so it never delays a token."""
    adapter_ids = [gate["adapter_id"] for gate in (routing or {}).get("adapter_gates") or []]
    if not adapter_ids:
        return
    try:
        usage_record(adapter_ids=adapter_ids)
    except DatabaseError:
        logger.exception("Counting adapter uses failed")


def _routing_outcome(pending) -> dict | None:
    """The router's decision for the receipt (None when it failed: the answer's step said why)."""
    try:
        return pending.result()
    except Exception:
        logger.exception("Routing failed")
        return None


def run_reply(message_id) -> str:
    # Before the first token: `get` (no ORDER BY to compile) and no join for the workflow's
    # artifact, which only the receipt names, after the answer (1 ms of 2.5 on a 2-core VM).
    try:
        message = Message.objects.select_related("conversation", "owner", "parent", "workflow_version").get(
            pk=message_id
        )
    except Message.DoesNotExist:
        message = None
    if message is None or message.status != Message.Status.QUEUED:
        return "skipped"
    if state.cancel_requested(message.stream_key):
        services.generation_finish(
            message=message, content="", status=Message.Status.CANCELLED, receipt={"finish_reason": "cancelled"}
        )
        return "cancelled"
    if not services.generation_started(message=message):
        return "skipped"

    picked_up = timezone.now()
    heartbeat = _Heartbeat(message.pk)
    heartbeat.start()
    started = time.monotonic()
    answer, trace, error, routing = None, [], "", None
    traces = HeldTraces(message.stream_key)
    try:
        body = _workflow_body(message)
        conversation = message.conversation
        run = RunContext(
            actor=message.owner,
            defaults=body.get("defaults") or {},
            conversation=conversation,
            message=message,
            overrides=message.generation_params or {},
            stream_key=message.stream_key,
            on_progress=lambda text: services.generation_progress(message=message, content=text),
            traces=traces,
        )
        runner = WorkflowRunner(body, run, publish_trace=traces.add)
        context_ids = [str(pk) for pk in conversation.contexts.values_list("pk", flat=True)]
        # Only the answer's step needs the router's choice: it is made beside the steps before it.
        run.routing = beside(_route, message, run, has_context=bool(context_ids))
        try:
            outcome = runner.execute(
                {
                    "message": message.parent.content,
                    "conversation_id": str(conversation.pk),
                    "context_ids": context_ids,
                    "has_contexts": bool(context_ids),
                }
            )
            answer, trace = outcome.answer, outcome.trace
            finish_reason = answer.get("finish_reason") or "stop"
            error = answer.get("error") or ""
        except WorkflowFailed as exc:
            trace = exc.trace
            cancelled = state.cancel_requested(message.stream_key)
            finish_reason = "cancelled" if cancelled else "error"
            error = "" if cancelled else f"{exc} Please retry."
        routing = _routing_outcome(run.routing)
        traces.release()  # before the answer's end is announced
        content = answer["content"] if answer else services.generation_stored_content(message=message)
        receipt = build_receipt(
            message,
            answer=answer,
            trace=trace,
            finish_reason=finish_reason,
            picked_up=picked_up,
            run_s=time.monotonic() - started,
            run_vars=runner.scope["vars"],
            routing=routing,
        )
        services.generation_finish(
            message=message,
            content=content,
            status=STATUS_BY_FINISH.get(finish_reason, Message.Status.COMPLETE),
            receipt=receipt,
            error=error,
        )
        _count_uses(routing if answer else None)
        return finish_reason
    except Exception as exc:
        logger.exception("Generation of %s failed", message.pk)
        traces.release()
        try:
            receipt = build_receipt(
                message,
                answer=answer,
                trace=trace,
                finish_reason="error",
                picked_up=picked_up,
                run_s=time.monotonic() - started,
                routing=routing,
            )
        except DatabaseError:  # the database is what failed: end the answer with what is known
            receipt = {"finish_reason": "error"}
        services.generation_finish(
            message=message,
            content=services.generation_stored_content(message=message),
            status=Message.Status.FAILED,
            receipt=receipt,
            error=f"The model could not answer: {exc.__class__.__name__}. Please retry.",
        )
        return "error"
    finally:
        heartbeat.stopped.set()


def run_tool(*, user_id, tool_id, inputs: dict, conversation_id=None, context_id=None) -> dict:
    """One tool call outside a chat, with the same timeouts, retries and circuit as in a workflow."""
    from apps.accounts.models import User
    from apps.artifacts import selectors as artifact_selectors
    from apps.conversations import selectors

    actor = User.objects.get(pk=user_id)
    tool = artifact_selectors.artifact_get(actor=actor, artifact_id=tool_id, kind="tool.spec")
    conversation = selectors.conversation_get(actor=actor, conversation_id=conversation_id) if conversation_id else None
    defaults = services.workflow_for(actor=actor, conversation=conversation).body.get("defaults") or {}
    body = {"kind": "workflow.chat", "nodes": [{"id": "invoke", "type": "tool_call", "tool": tool.body["name"]}]}
    run = RunContext(
        actor=actor, defaults=defaults, conversation=conversation, context_ids=[context_id] if context_id else []
    )
    runner = WorkflowRunner(body, run)
    runner.nodes["invoke"]["inputs"] = inputs
    try:
        outcome = runner.execute(inputs, require_answer=False)
    except WorkflowFailed as exc:
        return {"status": "error", "error": str(exc), "outputs": {}, "workflow_trace": exc.trace}
    outputs = outcome.vars.get("invoke") or {}
    content = outcome.answer.get("content") if outcome.answer else None
    usage = {k: outputs[k] for k in ("prompt_tokens", "completion_tokens") if k in outputs}
    return {"status": "ok", "outputs": outputs, "content": content, "usage": usage, "workflow_trace": outcome.trace}


TITLE_MAX_WORDS = 8


def clean_title(text: str) -> str:
    """A sidebar title from the model's reply: first line, no quotes or label, at most 8 words."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    line = line.strip().strip("\"'*#`").strip()
    if line.lower().startswith("title:"):
        line = line[6:].strip().strip("\"'")
    words = line.split()
    title = " ".join(words[:TITLE_MAX_WORDS])
    return title.rstrip(".,;:!") if len(words) > TITLE_MAX_WORDS or title.endswith((".", ",", ";", ":")) else title


def title_prompt(conversation) -> str:
    """The title prompt of the workflow answering this conversation (its owner's view), or the
    seeded one where that workflow has none (an edited workflow from before titles were data)."""
    workflow = services.workflow_for(actor=conversation.owner, conversation=conversation)
    return (workflow.body.get("defaults") or {}).get("title_prompt") or SEEDED_WORKFLOW["defaults"]["title_prompt"]


def run_title(conversation) -> str | None:
    from workers.llm import SamplingParams

    path = [m for m in conversation.messages.order_by("created_at")[:2] if m.content.strip()]
    if len(path) < 2:
        return None
    template = title_prompt(conversation)
    engine = get_engine()

    def one_line(text: str) -> str:
        return " ".join(text.split())[:600]

    prompt = fill_prompt(template, {"question": one_line(path[0].content), "answer": one_line(path[1].content)})
    result = engine.generate(prompt, SamplingParams(greedy=True, max_tokens=16, stop=["\n"]), truncate=True)
    return clean_title(result.text) or None
