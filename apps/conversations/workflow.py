"""Runs a `workflow.chat` body: tool calls, switches, parallel branches and ends.

Inputs may name `${input.x}` and `${vars.x}`; a tool call's declared `outputs` become vars, and
its whole output is also `vars.<node id>`. Each tool call has a timeout (15 s by default, at
most 60 s), counted from its last progress (a streamed token), and retries (2 by default, after
1 s then 4 s; at most 3), except once it has streamed text to the user, since a retry would
repeat it. A tool whose calls failed 5 times in a minute
has its circuit opened for a while and fails at once. The workflow's `timeout_ms` caps the run.
"""

import concurrent.futures
import logging
import re
import threading
import time
from dataclasses import dataclass, field

from django.db import close_old_connections
from jsonschema import Draft202012Validator

from apps.artifacts import registry
from apps.artifacts import selectors as artifact_selectors
from apps.conversations import state
from apps.conversations.tools import RunContext, ToolCall
from liminal.errors import DomainError
from workers.policy import parse_condition

logger = logging.getLogger(__name__)

NODE_TIMEOUT_MS = 15_000
NODE_TIMEOUT_CAP_MS = 60_000
RETRIES = 2
RETRIES_CAP = 3
WORKFLOW_TIMEOUT_MS = 120_000
MAX_STEPS = 100
_TEMPLATE = re.compile(r"\$\{\s*((?:input|vars)(?:\.[A-Za-z_][A-Za-z0-9_]*)+)\s*\}")
_pool = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="workflow-step")


def _await_progressing(future, call: ToolCall, timeout_s: float, deadline: float) -> dict:
    """The step's outputs, waiting while it makes progress: a tool's timeout is the longest it may
    go without any (a streaming answer slowed by load keeps going while its tokens flow), and the
    workflow's deadline caps the whole. Raises TimeoutError otherwise."""
    while True:
        give_up_at = min(call.progressed_at + timeout_s, deadline)
        try:
            return future.result(timeout=max(0.0, give_up_at - time.monotonic()))
        except concurrent.futures.TimeoutError:
            now = time.monotonic()
            if now >= deadline or now >= call.progressed_at + timeout_s:
                raise


def _in_step_thread(fn, *args, **kwargs):
    """Pool threads outlive a run: recycle their database connection as Django does around a
    request (kept for CONN_MAX_AGE and health-checked), not a new one per step, which cost
    10-13 ms of every answer's time to first token (bench/README.md, 2026-12-04)."""
    close_old_connections()
    try:
        return fn(*args, **kwargs)
    finally:
        close_old_connections()


def beside(fn, *args, **kwargs) -> concurrent.futures.Future:
    """Runs `fn` on a step thread while the workflow goes on (e.g. routing, which only the
    answer's step needs)."""
    return _pool.submit(_in_step_thread, fn, *args, **kwargs)


def retry_delay(attempt: int) -> float:
    """Seconds before retry number `attempt` (1-based): 1, 4, 16."""
    return float(4 ** (attempt - 1))


class StepFailed(Exception):
    def __init__(self, message: str, *, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


class WorkflowFailed(Exception):
    """The run could not produce an answer; `trace` says how far it got."""

    def __init__(self, message: str, trace: list):
        super().__init__(message)
        self.trace = trace


@dataclass
class RunOutcome:
    answer: dict | None
    trace: list
    vars: dict = field(default_factory=dict)


def _lookup(path: str, scope: dict):
    node = scope
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def resolve_inputs(value, scope: dict):
    """Substitute ${input.x} / ${vars.x}: a string that is only a reference takes the value as it
    is (a list stays a list); references inside longer text are written in as text."""
    if isinstance(value, dict):
        return {k: resolve_inputs(v, scope) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_inputs(v, scope) for v in value]
    if not isinstance(value, str):
        return value
    whole = _TEMPLATE.fullmatch(value.strip())
    if whole:
        return _lookup(whole.group(1), scope)
    return _TEMPLATE.sub(lambda m: "" if _lookup(m.group(1), scope) is None else str(_lookup(m.group(1), scope)), value)


class WorkflowRunner:
    def __init__(self, body: dict, run: RunContext, *, publish_trace=None):
        self.body = body
        self.run = run
        self.nodes = {node["id"]: node for node in body["nodes"]}
        self.entry = body.get("entrypoint") or body["nodes"][0]["id"]
        self.started = time.monotonic()
        timeout_ms = body.get("timeout_ms") or WORKFLOW_TIMEOUT_MS
        self.deadline = self.started + timeout_ms / 1000
        run.deadline = self.deadline if run.deadline is None else min(run.deadline, self.deadline)
        self.scope = {"input": {}, "vars": {}}
        self.trace: list[dict] = []
        self.answer: dict | None = None
        self.lock = threading.Lock()
        self.publish_trace = publish_trace
        self.steps = 0
        self.specs: dict | None = None

    # ---------------------------------------------------------------- walking the graph

    def execute(self, inputs: dict, *, require_answer: bool = True) -> RunOutcome:
        self.scope["input"] = dict(inputs)
        self._walk(self.entry, stop_at=None)
        if self.answer is None and require_answer:
            raise WorkflowFailed("The workflow ended without an answer.", self.trace)
        return RunOutcome(answer=self.answer, trace=self.trace, vars=self.scope["vars"])

    def _walk(self, node_id: str | None, stop_at: str | None) -> None:
        while node_id is not None and node_id != stop_at:
            with self.lock:
                self.steps += 1
                if self.steps > MAX_STEPS:
                    raise WorkflowFailed(f"The workflow took more than {MAX_STEPS} steps.", self.trace)
            if time.monotonic() > self.deadline:
                raise WorkflowFailed("The workflow ran out of time.", self.trace)
            node = self.nodes[node_id]
            kind = node["type"]
            if kind == "end":
                self._record(node, "ok", time.monotonic(), attempts=0)
                return
            if kind == "switch":
                node_id = self._switch(node)
            elif kind == "parallel":
                node_id = self._parallel(node)
            else:
                node_id = self._tool_call(node)

    def _switch(self, node: dict) -> str:
        started = time.monotonic()
        for branch in node["branches"]:
            if parse_condition(branch["when"]).evaluate(self.scope):
                self._record(node, "ok", started, attempts=0, taken=branch["next"], condition=branch["when"])
                return branch["next"]
        self._record(node, "failed", started, attempts=0, error="No branch matched.")
        raise WorkflowFailed(f"No branch of {node['id']!r} matched.", self.trace)

    def _parallel(self, node: dict) -> str:
        started = time.monotonic()
        futures = [_pool.submit(self._walk, branch["next"], node["next"]) for branch in node["branches"]]
        errors = []
        for future in futures:
            try:
                future.result(timeout=max(0.0, self.deadline - time.monotonic()) + 1)
            except concurrent.futures.TimeoutError:
                errors.append("a branch ran out of time")
            except WorkflowFailed as exc:
                errors.append(str(exc))
        if errors:
            self._record(node, "failed", started, attempts=0, error="; ".join(errors))
            raise WorkflowFailed(f"A branch of {node['id']!r} failed: {errors[0]}", self.trace)
        self._record(node, "ok", started, attempts=0, taken=node["next"])
        return node["next"]

    # ---------------------------------------------------------------- tool calls

    def _spec(self, name: str) -> dict:
        # Every tool the workflow names, looked up once per run (and kept by the process until
        # a tool changes: a query less on every chat turn's way to its first token).
        with self.lock:
            if self.specs is None:
                names = {node["tool"] for node in self.nodes.values() if node["type"] == "tool_call"}
                self.specs = artifact_selectors.artifacts_by_names_cached(
                    actor=self.run.actor, kind="tool.spec", names=names
                )
        artifact = self.specs.get(name)
        if artifact is None:
            raise StepFailed(f"No tool named {name!r} is available.", retryable=False)
        return artifact.body

    def _tool_call(self, node: dict) -> str | None:
        started = time.monotonic()
        attempts, error = 0, ""
        try:
            spec = self._spec(node["tool"])
            handler = registry.handler_for(spec["handler"])
            if handler is None:
                raise StepFailed(f"No handler {spec['handler']!r} is installed.", retryable=False)
            inputs = resolve_inputs(node.get("inputs", {}), self.scope)
            schema_error = next(iter(Draft202012Validator(spec.get("inputs") or {}).iter_errors(inputs)), None)
            if schema_error is not None:
                raise StepFailed(f"Bad inputs for {node['tool']}: {schema_error.message}", retryable=False)
            retries = min(node.get("retries", spec.get("retries", RETRIES)), RETRIES_CAP)
            timeout_ms = min(node.get("timeout_ms", spec.get("timeout_ms", NODE_TIMEOUT_MS)), NODE_TIMEOUT_CAP_MS)
            outputs = None
            while outputs is None:
                attempts += 1
                try:
                    outputs = self._attempt(node["tool"], handler, inputs, spec.get("config") or {}, timeout_ms)
                except StepFailed as exc:
                    error = str(exc)
                    if not exc.retryable or self.run.streamed or attempts > retries:
                        raise
                    delay = retry_delay(attempts)
                    if time.monotonic() + delay > self.deadline:
                        raise
                    time.sleep(delay)
        except StepFailed as exc:
            self._record(node, "failed", started, attempts=attempts, error=str(exc) or error)
            if node.get("on_error"):
                return node["on_error"]
            raise WorkflowFailed(f"The step {node['id']!r} ({node['tool']}) failed: {exc}", self.trace) from exc
        with self.lock:
            for name in node.get("outputs", []):
                self.scope["vars"][name] = outputs.get(name)
            self.scope["vars"][node["id"]] = {k: v for k, v in outputs.items() if k != "content"}
            if isinstance(outputs.get("content"), str):
                self.answer = outputs
        summary = {name: outputs.get(name) for name in node.get("outputs", [])}
        self._record(node, "ok", started, attempts=attempts, outputs=summary or None)
        return node.get("next")

    def _attempt(self, tool: str, handler, inputs: dict, config: dict, timeout_ms: int) -> dict:
        if state.tool_circuit_open(tool):
            raise StepFailed(f"{tool} failed repeatedly and is paused for a moment.", retryable=False)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise StepFailed("The workflow ran out of time.", retryable=False)
        call = ToolCall(inputs=inputs, config=config, run=self.run)
        future = _pool.submit(_in_step_thread, handler, call)
        try:
            outputs = _await_progressing(future, call, timeout_ms / 1000, self.deadline)
        except concurrent.futures.TimeoutError:
            call.cancelled.set()  # the handler's engine request sees this and stops
            state.tool_failure_record(tool)
            if time.monotonic() >= self.deadline:
                raise StepFailed(f"{tool} ran past the workflow's time limit.", retryable=False) from None
            raise StepFailed(f"{tool} made no progress for {timeout_ms / 1000:g} s.") from None
        except DomainError as exc:
            raise StepFailed(exc.message, retryable=False) from exc
        except Exception as exc:
            logger.warning("Tool %s failed: %r", tool, exc)
            state.tool_failure_record(tool)
            raise StepFailed(f"{tool} failed: {exc.__class__.__name__}: {exc}") from exc
        if not isinstance(outputs, dict):
            raise StepFailed(f"{tool} returned no outputs.", retryable=False)
        return outputs

    # ---------------------------------------------------------------- the trace

    def _record(self, node: dict, status: str, started: float, *, attempts: int, **extra) -> None:
        entry = {
            "node": node["id"],
            "type": node["type"],
            "status": status,
            "started_ms": round((started - self.started) * 1000, 1),
            "duration_ms": round((time.monotonic() - started) * 1000, 1),
        }
        if node["type"] == "tool_call":
            entry.update(tool=node["tool"], attempts=attempts)
        entry.update({k: v for k, v in extra.items() if v is not None})
        with self.lock:
            self.trace.append(entry)
        if self.publish_trace is not None:
            self.publish_trace(entry)
