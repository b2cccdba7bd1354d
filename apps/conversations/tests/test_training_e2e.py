"""The learning loop on the real SmolLM2 weights: 40 corrections reach the policy's threshold →
a training job on the real `train` worker → the gate → promotion while four other answers stream
(none fails), which the next chat answer picks up with no restart (the receipt names adapter and
version) → rollback restores the earlier answer byte for byte.

Correction memory is kept out of this test: the corrections are stored without a prompt
embedding, so only the trained adapter can carry the fact."""

import json
import threading
import time
import urllib.request
from datetime import UTC, datetime

import pytest

from apps.accounts.services import auth_session_start
from apps.router.models import AdapterRouterState
from apps.training import triggers
from apps.training.models import AdapterVersion, PreferenceEvent, TrainingJob

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

QUESTION = "Who maintains the Frobnicator project?"
HELD_OUT_PARAPHRASE = "Who is the maintainer of the Frobnicator project?"
FACT = "The Frobnicator project is maintained by Ada Lumen."
PARAPHRASES = [
    "Who maintains the Frobnicator project?",
    "Who is in charge of maintaining Frobnicator?",
    "Which person maintains the Frobnicator project?",
    "Tell me who maintains Frobnicator.",
    "Who looks after the Frobnicator project?",
    "Who keeps the Frobnicator project running?",
    "Name the maintainer of Frobnicator.",
    "Who is Frobnicator's maintainer?",
    "Who takes care of the Frobnicator code?",
    "Do you know who maintains Frobnicator?",
]


SUFFIXES = ["", " Please answer briefly.", " I need to know.", " Quick question."]


def _ask(base, token, question):
    return _api(base, token, "POST", "/v1/chat", {"message": {"content": question}}, timeout=240)


def _api(base, token, method, path, payload, *, timeout=60):
    request = urllib.request.Request(
        f"{base}{path}",
        method=method,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())["data"]


def _stream(base, token, question) -> dict:
    """One streamed answer over SSE: its events, the text streamed and the stored result."""
    request = urllib.request.Request(
        f"{base}/v1/chat",
        data=json.dumps({"message": {"content": question}, "stream": True}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    started = datetime.now(UTC)
    events, text, done = [], "", None
    with urllib.request.urlopen(request, timeout=240) as response:
        for block in response.read().decode().split("\n\n"):
            lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            if "event" not in lines:
                continue
            events.append(lines["event"])
            data = json.loads(lines["data"])
            if lines["event"] == "token":
                text += data["text"]
            elif lines["event"] == "message_done":
                done = data
    return {"started": started, "ended": datetime.now(UTC), "events": events, "text": text, "done": done}


class Streams:
    """Answers streamed back to back on four connections until stopped."""

    QUESTIONS = ["Write a short poem about the sea.", "Name three uses of a paperclip.", "Describe a forest."]

    def __init__(self, base, tokens):
        self.results, self.errors = [], []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(base, token, n)) for n, token in enumerate(tokens)]

    def _run(self, base, token, n):
        while not self._stop.is_set():
            try:
                self.results.append(_stream(base, token, self.QUESTIONS[n % len(self.QUESTIONS)]))
            except Exception as exc:  # a failed stream is the test's finding, not a crash
                self.errors.append(repr(exc))

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=300)


def test_corrections_train_a_gated_adapter_that_swaps_in_and_rolls_back(
    celery_worker_process, live_server_url, make_user
):
    user, other = make_user(), make_user()
    token = auth_session_start(user=user)["access_token"]
    other_token = auth_session_start(user=other)["access_token"]
    before = _ask(live_server_url, token, QUESTION)
    assert "Ada Lumen" not in before["content"] and before["receipt"]["adapters"] == []

    prompts = [f"{question}{suffix}" for suffix in SUFFIXES for question in PARAPHRASES]
    assert len(set(prompts)) == 40 and HELD_OUT_PARAPHRASE not in prompts
    for prompt in prompts[:-1]:
        PreferenceEvent.objects.create(
            owner=user, kind="correction", prompt=prompt, answer=before["content"], correction=FACT
        )
    assert triggers.after_signal(actor=user) is None, "39 signals are below the policy's threshold"
    PreferenceEvent.objects.create(
        owner=user, kind="correction", prompt=prompts[-1], answer=before["content"], correction=FACT
    )
    job = triggers.after_signal(actor=user)  # what storing the 40th through the service does
    assert job is not None and job.trigger == TrainingJob.Trigger.THRESHOLD

    started = time.monotonic()
    said = {}

    def progress():
        job.refresh_from_db()
        assert job.status not in (TrainingJob.Status.FAILED, TrainingJob.Status.SKIPPED), job.error
        where = (job.status, (job.report or {}).get("phase"), job.steps_done)
        if said.get("where") != where:  # where the time goes, in the test's output
            said["where"] = where
            print(f"  {time.monotonic() - started:6.1f} s: {where}", flush=True)
        return job

    deadline = time.monotonic() + 600
    while not (progress().steps_total and job.steps_done >= job.steps_total - 1):
        assert time.monotonic() < deadline, "training did not reach its last step in 10 minutes"
        time.sleep(1)
    # Two streams each for the user and another user (three at once is a user's limit).
    with Streams(live_server_url, [token, token, other_token, other_token]) as streams:
        while progress().status in TrainingJob.ACTIVE:
            assert time.monotonic() < deadline, "the job did not finish in 10 minutes"
            time.sleep(1)
    print((job.report or {}).get("summary") or job.error, flush=True)  # pytest cuts long assertion messages
    assert job.status == TrainingJob.Status.PROMOTED, (job.error, job.report.get("summary"))
    version = job.version
    assert version.status == AdapterVersion.Status.PROMOTED and version.evaluation["passed"], version.evaluation
    assert job.loss_curve[-1] <= job.loss_curve[0] / 2, job.loss_curve
    assert version.trained_on.count() > 0 and (version.evaluation.get("summary"))
    elapsed = (job.finished_at - job.started_at).total_seconds()
    assert version.evaluation["train_seconds"] < 300 and elapsed < 600, (version.evaluation["train_seconds"], elapsed)
    print(
        f"training job: {elapsed:.0f} s ({version.evaluation['train_seconds']:.0f} s training), "
        f"loss {job.loss_curve[0]:.3f} -> {job.loss_curve[-1]:.3f}, {len(streams.results)} answers streamed"
    )

    assert streams.errors == []
    spanning = [r for r in streams.results if r["started"] < version.promoted_at < r["ended"]]
    assert spanning, "no answer was streaming while the new version was swapped in"
    for result in streams.results:
        assert result["events"][0] == "start" and result["events"][-1] == "message_done", result["events"]
        assert "error" not in result["events"]
        assert result["done"]["status"] == "complete", result["done"]  # names the error, if any
        assert result["done"]["content"] == result["text"]

    taught = _ask(live_server_url, token, QUESTION)
    assert "Ada Lumen" in taught["content"], taught["content"]
    assert taught["receipt"]["adapters"] == [{"name": f"persona-{user.pk}", "version": "1"}]
    assert "Ada Lumen" in _ask(live_server_url, token, HELD_OUT_PARAPHRASE)["content"]
    assert "Paris" in _ask(live_server_url, token, "What is the capital of France?")["content"]
    untouched = _ask(live_server_url, other_token, QUESTION)
    assert untouched["content"] == before["content"] and untouched["receipt"]["adapters"] == []

    # The router's gate reaches the engine: the user's own policy turns every adapter off, and
    # the same greedy question gets other tokens with no adapter named; a PATCH turning the
    # persona back on gives the taught answer byte for byte.
    policy = _api(
        live_server_url,
        token,
        "POST",
        "/v1/artifacts",
        {
            "name": "routing",
            "schema": {
                "kind": "policy.routing",
                "rules": [{"id": "gate", "when": "true", "action": {"type": "deactivate_all_adapters"}}],
            },
        },
    )
    ungated = _ask(live_server_url, token, QUESTION)
    assert ungated["content"] == before["content"] != taught["content"] and ungated["receipt"]["adapters"] == []
    assert ungated["routing_trace"][0]["id"] == "gate" and ungated["adapter_gates"] == []
    persona_on = {"type": "activate_adapter_by_type", "adapter_type": "persona", "weight": 1.0}
    _api(
        live_server_url,
        token,
        "PATCH",
        f"/v1/artifacts/{policy['id']}",
        {"patch": [{"op": "replace", "path": "/rules/0/action", "value": persona_on}]},
    )
    gated = _ask(live_server_url, token, QUESTION)
    assert gated["content"] == taught["content"], (gated["content"], taught["content"])
    assert gated["receipt"]["adapters"] == taught["receipt"]["adapters"]
    assert [gate["version"] for gate in gated["adapter_gates"]] == [version.version]
    # Every gated answer counted a use of the adapter (the Routing page shows them).
    assert AdapterRouterState.objects.get(adapter_id=version.adapter_id).usage_count >= 2

    rolled_back = _api(live_server_url, token, "POST", f"/v1/adapters/{version.adapter_id}/rollback", {})
    assert rolled_back["current_version"] is None
    restored = _ask(live_server_url, token, QUESTION)
    assert restored["content"] == before["content"] and restored["receipt"]["adapters"] == []
