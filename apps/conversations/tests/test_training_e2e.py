"""The learning loop on the real SmolLM2 weights: corrections → a training job on the `train`
path → the gate → promotion, which the next chat answer picks up with no restart (the receipt
names adapter and version) → rollback restores the earlier answer byte for byte.

Correction memory is kept out of this test: the corrections are stored without a prompt
embedding, so only the trained adapter can carry the fact."""

import json
import time
import urllib.request

import pytest

from apps.accounts.services import auth_session_start
from apps.training import adapters, jobs
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
    request = urllib.request.Request(
        f"{base}/v1/chat",
        data=json.dumps({"message": {"content": question}}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=240) as response:
        return json.loads(response.read())["data"]


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
    for prompt in prompts:
        PreferenceEvent.objects.create(
            owner=user, kind="correction", prompt=prompt, answer=before["content"], correction=FACT
        )
    job = adapters.training_job_create(actor=user)
    started = time.monotonic()
    outcome = jobs.run_training_job(job.pk)
    elapsed = time.monotonic() - started
    job.refresh_from_db()
    assert outcome == TrainingJob.Status.PROMOTED, (job.error, job.report.get("summary"))
    version = job.version
    assert version.status == AdapterVersion.Status.PROMOTED and version.evaluation["passed"], version.evaluation
    assert job.loss_curve[-1] <= job.loss_curve[0] / 2, job.loss_curve
    assert version.trained_on.count() > 0 and (version.evaluation.get("summary"))
    print(f"training job: {elapsed:.0f} s, loss {job.loss_curve[0]:.3f} -> {job.loss_curve[-1]:.3f}")

    taught = _ask(live_server_url, token, QUESTION)
    assert "Ada Lumen" in taught["content"], taught["content"]
    assert taught["receipt"]["adapters"] == [{"name": f"persona-{user.pk}", "version": "1"}]
    assert "Ada Lumen" in _ask(live_server_url, token, HELD_OUT_PARAPHRASE)["content"]
    assert "Paris" in _ask(live_server_url, token, "What is the capital of France?")["content"]
    untouched = _ask(live_server_url, other_token, QUESTION)
    assert untouched["content"] == before["content"] and untouched["receipt"]["adapters"] == []

    request = urllib.request.Request(
        f"{live_server_url}/v1/adapters/{version.adapter_id}/rollback",
        data=b"{}",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert json.loads(response.read())["data"]["current_version"] is None
    restored = _ask(live_server_url, token, QUESTION)
    assert restored["content"] == before["content"] and restored["receipt"]["adapters"] == []
