"""POST /v1/tools/{id}/invoke keeps the user's text out of the task's arguments (visible in
Flower and the broker): only a key travels, and the worker takes the inputs once."""

import pytest

from apps.artifacts import selectors as artifact_selectors
from apps.conversations import orchestrator, state, tasks

pytestmark = pytest.mark.django_db

SECRET = "my bank PIN is 4921"


class Pending:
    def __init__(self, args):
        self.args = args

    def get(self, timeout):
        # What the worker does with the arguments it was sent.
        inputs = state.tool_inputs_take(self.args[2])
        assert inputs == {"message": SECRET}
        assert state.tool_inputs_take(self.args[2]) is None  # taken once
        return {"status": "ok", "outputs": {"intent": "other"}, "workflow_trace": []}


def test_tool_inputs_travel_by_key(make_user, monkeypatch):
    sent = []
    monkeypatch.setattr(tasks.generate_tool_invocation, "delay", lambda *args: sent.append(args) or Pending(args))
    classifier = artifact_selectors.global_artifact(kind="tool.spec", name="llm.intent_classifier_v1")
    result = orchestrator.invoke_tool(actor=make_user(), tool_id=classifier.pk, inputs={"message": SECRET})
    assert result["outputs"] == {"intent": "other"}
    (args,) = sent
    assert SECRET not in repr(args) and args[2].startswith("tool:inputs:")


def test_expired_inputs_are_an_error_not_a_crash():
    outcome = tasks.generate_tool_invocation.run("u", "t", "tool:inputs:gone", None, None)
    assert outcome["status"] == "error" and "expired" in outcome["error"]
    assert state.tool_inputs_take("gen:cancel:x") is None  # only tool input keys are ever read
