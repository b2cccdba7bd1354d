"""The workflow runner with handlers that misbehave on purpose: retries with their delays,
timeouts, on_error branches, the circuit breaker, parallel branches, and a chat that still ends
with a clear error (and a done event) when its tool keeps failing."""

import threading
import time

import pytest

from apps.artifacts import registry
from apps.artifacts import services as artifact_services
from apps.conversations import generation, orchestrator, state, streaming, tools, workflow
from apps.conversations.models import Message
from apps.conversations.tools import RunContext
from apps.conversations.workflow import WorkflowFailed, WorkflowRunner, resolve_inputs

CALLS: dict[str, int] = {}


def _count(name):
    CALLS[name] = CALLS.get(name, 0) + 1
    return CALLS[name]


def _echo(call):
    _count("echo")
    return {"content": f"intent was {call.inputs.get('intent')}", "finish_reason": "stop"}


def _label(call):
    _count("label")
    return {"intent": "greeting" if "hello" in call.inputs["message"].lower() else "question"}


def _boom(call):
    _count("boom")
    raise RuntimeError("the disk is on fire")


def _flaky(call):
    if _count("flaky") < 3:
        raise ConnectionError("try again")
    return {"content": "third time lucky"}


def _slow(call):
    _count("slow")
    call.cancelled.wait(5)
    return {"content": "too late"}


def _trickles(call):
    """Streams for 0.6 s, a token every 0.05 s: longer than its timeout, never idle that long."""
    _count("trickles")
    for _ in range(12):
        call.cancelled.wait(0.05)  # not time.sleep: the tests' `delays` fixture stubs it out
        call.mark_progress()
    return {"content": "slow but steady"}


def _streams_then_fails(call):
    _count("streams")
    call.run.mark_streamed()
    raise RuntimeError("broke mid-answer")


def _nap(call):
    time.sleep(0.2)
    return {"who": call.inputs["who"], "thread": threading.get_ident()}


HANDLERS = {
    "test.echo": _echo,
    "test.label": _label,
    "test.boom": _boom,
    "test.flaky": _flaky,
    "test.slow": _slow,
    "test.streams": _streams_then_fails,
    "test.trickles": _trickles,
    "test.nap": _nap,
}


@pytest.fixture
def user(make_user):
    CALLS.clear()
    for name, handler in HANDLERS.items():
        registry.register_handler(name, handler)
    user = make_user()
    for name in HANDLERS:
        artifact_services.artifact_create(
            actor=user,
            name=f"{name}_v1",
            body={"kind": "tool.spec", "name": f"{name}_v1", "handler": name},
        )
    state.state_redis().delete(*[f"tool:circuit-open:{n}_v1" for n in HANDLERS])
    state.state_redis().delete(*[f"tool:failures:{n}_v1" for n in HANDLERS])
    return user


@pytest.fixture
def delays(monkeypatch):
    slept = []
    monkeypatch.setattr(workflow.time, "sleep", lambda seconds: slept.append(seconds))
    return slept


def run(user, nodes, **body):
    runner = WorkflowRunner({"kind": "workflow.chat", "nodes": nodes, **body}, RunContext(actor=user, defaults={}))
    return runner.execute({"message": "Hello there"})


def tool(node_id, name, **extra):
    return {"id": node_id, "type": "tool_call", "tool": f"{name}_v1", **extra}


def test_inputs_are_resolved_from_input_and_vars():
    scope = {"input": {"message": "hi", "ids": [1, 2]}, "vars": {"intent": "q"}}
    assert resolve_inputs({"m": "${input.message}", "ids": "${input.ids}", "t": "I said ${input.message}!"}, scope) == {
        "m": "hi",
        "ids": [1, 2],
        "t": "I said hi!",
    }
    assert resolve_inputs("${vars.missing}", scope) is None


@pytest.mark.django_db(transaction=True)
def test_a_switch_routes_on_a_tools_output(user):
    outcome = run(
        user,
        [
            tool("label", "test.label", inputs={"message": "${input.message}"}, outputs=["intent"], next="route"),
            {
                "id": "route",
                "type": "switch",
                "branches": [{"when": "vars.intent == 'greeting'", "next": "reply"}, {"when": "true", "next": "end"}],
            },
            tool("reply", "test.echo", inputs={"intent": "${vars.intent}"}, next="end"),
            {"id": "end", "type": "end"},
        ],
    )
    assert outcome.answer["content"] == "intent was greeting"
    assert [(e["node"], e["status"]) for e in outcome.trace] == [
        ("label", "ok"),
        ("route", "ok"),
        ("reply", "ok"),
        ("end", "ok"),
    ]
    assert outcome.trace[0]["outputs"] == {"intent": "greeting"} and outcome.trace[1]["taken"] == "reply"


@pytest.mark.django_db(transaction=True)
def test_a_failing_tool_is_retried_after_1_then_4_seconds_and_then_fails_the_run(user, delays):
    with pytest.raises(WorkflowFailed) as failure:
        run(user, [tool("step", "test.boom")])
    assert CALLS["boom"] == 3 and delays == [1.0, 4.0]
    [entry] = failure.value.trace
    assert entry["status"] == "failed" and entry["attempts"] == 3 and "the disk is on fire" in entry["error"]
    assert "'step'" in str(failure.value)


@pytest.mark.django_db(transaction=True)
def test_retries_are_as_configured_per_node(user, delays):
    outcome = run(user, [tool("step", "test.flaky", retries=3)])
    assert outcome.answer["content"] == "third time lucky" and outcome.trace[0]["attempts"] == 3
    assert delays == [1.0, 4.0]
    CALLS.clear()
    with pytest.raises(WorkflowFailed):
        run(user, [tool("step", "test.boom", retries=0)])
    assert CALLS["boom"] == 1


@pytest.mark.django_db(transaction=True)
def test_a_step_that_times_out_is_cancelled_retried_and_reported(user, delays):
    with pytest.raises(WorkflowFailed) as failure:
        run(user, [tool("step", "test.slow", timeout_ms=100, retries=1)])
    [entry] = failure.value.trace
    assert entry["attempts"] == 2 and "made no progress for 0.1 s" in entry["error"]


@pytest.mark.django_db(transaction=True)
def test_a_step_that_keeps_making_progress_outlives_its_timeout(user, delays):
    """Under load an answer streams slowly: the timeout counts idle time, not the answer's length."""
    outcome = run(user, [tool("step", "test.trickles", timeout_ms=200, retries=0)])
    assert outcome.answer["content"] == "slow but steady" and CALLS["trickles"] == 1
    assert outcome.trace[0]["duration_ms"] >= 500


@pytest.mark.django_db(transaction=True)
def test_the_workflows_deadline_still_caps_a_step_that_makes_progress(user, delays):
    with pytest.raises(WorkflowFailed) as failure:
        run(user, [tool("step", "test.trickles", timeout_ms=200, retries=2)], timeout_ms=300)
    [entry] = failure.value.trace
    assert entry["attempts"] == 1 and "time limit" in entry["error"]


@pytest.mark.django_db(transaction=True)
def test_on_error_takes_the_fallback_branch(user, delays):
    outcome = run(
        user,
        [
            tool("risky", "test.boom", retries=0, next="end", on_error="fallback"),
            tool("fallback", "test.echo", inputs={"intent": "fallback"}, next="end"),
            {"id": "end", "type": "end"},
        ],
    )
    assert outcome.answer["content"] == "intent was fallback"
    assert [(e["node"], e["status"]) for e in outcome.trace][:2] == [("risky", "failed"), ("fallback", "ok")]


@pytest.mark.django_db(transaction=True)
def test_five_failures_in_a_minute_open_the_tools_circuit(user, delays):
    for _ in range(5):
        with pytest.raises(WorkflowFailed):
            run(user, [tool("step", "test.boom", retries=0)])
    assert CALLS["boom"] == 5 and state.tool_circuit_open("test.boom_v1")
    with pytest.raises(WorkflowFailed) as failure:
        run(user, [tool("step", "test.boom", retries=2)])
    assert CALLS["boom"] == 5, "an open circuit fails at once, without calling or retrying"
    assert "paused" in failure.value.trace[0]["error"]


@pytest.mark.django_db(transaction=True)
def test_a_step_that_already_streamed_is_not_retried(user, delays):
    with pytest.raises(WorkflowFailed):
        run(user, [tool("step", "test.streams", retries=3)])
    assert CALLS["streams"] == 1 and delays == []


@pytest.mark.django_db(transaction=True)
def test_parallel_branches_run_at_once_and_join(user):
    outcome = run(
        user,
        [
            {"id": "fan", "type": "parallel", "branches": [{"next": "a"}, {"next": "b"}], "next": "answer"},
            tool("a", "test.nap", inputs={"who": "a"}, outputs=["who"], next="answer"),
            tool("b", "test.nap", inputs={"who": "b"}, next="answer"),
            tool("answer", "test.echo", inputs={"intent": "${vars.b.who}"}),
        ],
    )
    assert outcome.answer["content"] == "intent was b"
    assert outcome.vars["a"]["thread"] != outcome.vars["b"]["thread"]
    assert [e["node"] for e in outcome.trace][-2:] == ["fan", "answer"]


@pytest.mark.django_db(transaction=True)
def test_the_workflow_timeout_caps_the_run(user, delays):
    with pytest.raises(WorkflowFailed):
        run(user, [tool("step", "test.slow", timeout_ms=60000, retries=0)], timeout_ms=1000)
    assert CALLS["slow"] == 1


@pytest.mark.django_db(transaction=True)
def test_a_chat_whose_tool_keeps_failing_ends_failed_with_a_clear_error_and_a_done_event(user, delays, monkeypatch):
    from apps.conversations import tasks

    monkeypatch.setattr(tasks.generate_reply, "delay", lambda *args: None)
    published = []
    monkeypatch.setattr(streaming, "publish", lambda key, event, **_: published.append((key, event)))
    monkeypatch.setattr(tools, "publish", lambda key, event, **_: published.append((key, event)))
    from apps.conversations import services as conversation_services

    monkeypatch.setattr(conversation_services, "_announce_done", lambda *a: published.append(("done", a)))
    broken = artifact_services.artifact_create(
        actor=user,
        name="broken",
        body={"kind": "workflow.chat", "nodes": [tool("answer", "test.boom")]},
    )
    turn = orchestrator.start_chat(actor=user, content="hi", workflow_id=broken.pk, turn_id=orchestrator.new_turn_id())
    assert generation.run_reply(turn.message_id) == "error"
    answer = Message.objects.get(pk=turn.message_id)
    assert answer.status == Message.Status.FAILED
    assert "'answer'" in answer.error and "the disk is on fire" in answer.error
    assert answer.receipt["workflow"]["id"] == str(broken.pk)
    assert answer.receipt["workflow_trace"][0]["status"] == "failed"
    assert answer.receipt["workflow_trace"][0]["attempts"] == 3
    traces = [event for _, event in published if isinstance(event, dict) and event.get("type") == "gen.trace"]
    # The routing decision (made beside the steps) and the failed step.
    assert sorted(entry["node"] for trace in traces for entry in trace["entries"]) == ["answer", "routing"]
    assert ("done", (answer.pk, "failed", answer.error)) in published
