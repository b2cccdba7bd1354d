"""Datasets hold one user's live signals only, and forgetting reaches versions trained on them."""

import json

import pytest
from django.utils import timezone

from apps.artifacts import services as artifact_services
from apps.training import datasets, services
from apps.training.models import AdapterVersion, PreferenceEvent

pytestmark = pytest.mark.django_db


def event(owner, kind, prompt, minutes_ago=0, **fields):
    return PreferenceEvent.objects.create(
        owner=owner,
        kind=kind,
        prompt=prompt,
        answer=fields.pop("answer", "an answer"),
        created_at=timezone.now() - timezone.timedelta(minutes=minutes_ago),
        **fields,
    )


def test_examples_are_the_users_own_live_signals(make_user):
    alice, bob = make_user(), make_user()
    event(alice, "correction", "Who maintains Frobnicator?", 9, correction="Ada Lumen")
    event(alice, "thumbs_up", "Capital of France?", 8, answer="Paris.")
    event(alice, "pick", "A poem?", 7, answer="Roses.", rejected_answer="Violets.")
    event(alice, "thumbs_down", "Bad?", 6)  # nothing to imitate
    event(alice, "correction", "Forgotten?", 5, correction="x", excluded_at=timezone.now())
    event(alice, "correction", "Evaluation?", 4, correction="y", is_evaluation=True)
    event(alice, "correction", "Who maintains Frobnicator?", 3, correction="Ada Lumen")  # a duplicate, newer
    event(bob, "correction", "Bob's secret?", 2, correction="z")
    examples = datasets.training_examples(actor=alice)
    assert [(e["prompt"], e["target"], e.get("rejected")) for e in examples] == [
        ("Capital of France?", "Paris.", None),
        ("A poem?", "Roses.", "Violets."),
        ("Who maintains Frobnicator?", "Ada Lumen", None),
    ]
    short = datasets.training_examples(actor=alice, count_tokens=lambda e: len(e["target"]), max_tokens=6)
    assert [e["target"] for e in short] == ["Paris.", "Roses."]


def test_the_most_recent_tenth_is_held_out():
    examples = [{"prompt": f"q{i}", "target": "a"} for i in range(25)]
    train, held = datasets.split_held_out(examples)
    assert [e["prompt"] for e in held] == ["q23", "q24"] and len(train) == 23
    assert datasets.split_held_out(examples[:9]) == (examples[:9], [])
    train, held = datasets.split_held_out(examples[:20], minimum=8)
    assert len(held) == 8 and len(train) == 12


def test_the_dataset_file_and_its_hash(make_user, settings, tmp_path):
    settings.SHARED_FS_ROOT = tmp_path
    user = make_user()
    examples = [{"prompt": "q", "target": "a", "weight": 1.0}]
    path, digest = datasets.dataset_write(user_id=user.pk, adapter_id="a1", job_id="j1", examples=examples)
    assert path == tmp_path / "users" / str(user.pk) / "adapters" / "a1" / "jobs" / "j1" / "dataset.jsonl"
    assert [json.loads(line) for line in path.read_text().splitlines()] == examples
    again = datasets.dataset_write(user_id=user.pk, adapter_id="a1", job_id="j2", examples=examples)[1]
    assert again == digest and len(digest) == 64


def test_forgetting_an_event_flags_the_versions_trained_on_it(make_user):
    user = make_user()
    adapter = artifact_services.artifact_create(
        actor=user,
        name="persona",
        body={"kind": "adapter.lora", "scope": "user", "base_model": "smollm2-135m-instruct", "rank": 8},
    )
    taught = event(user, "correction", "Who maintains Frobnicator?", correction="Ada Lumen")
    other = event(user, "thumbs_up", "Capital of France?", answer="Paris.")
    version = AdapterVersion.objects.create(owner=user, adapter=adapter, version=1, fs_dir="/tmp/v0001")
    version.trained_on.set([taught, other])
    clean = AdapterVersion.objects.create(owner=user, adapter=adapter, version=2, fs_dir="/tmp/v0002")
    clean.trained_on.set([other])

    services.event_forget(actor=user, event=taught)
    version.refresh_from_db()
    clean.refresh_from_db()
    assert version.tainted_at is not None and clean.tainted_at is None
    assert [e["prompt"] for e in datasets.training_examples(actor=user)] == ["Capital of France?"]
