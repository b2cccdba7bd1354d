import shutil

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from apps.artifacts import services as artifact_services
from apps.artifacts.selectors import global_artifact
from apps.conversations import services as conversation_services
from apps.router.state import centroid_add
from apps.training import adapters
from apps.training.models import AdapterVersion
from apps.training.services import embed

assert str(settings.SHARED_FS_ROOT).endswith("test-shared"), "tests must not touch the real shared filesystem"

BAKING = [
    "How long should sourdough dough proof?",
    "Why is my bread dense after baking?",
    "What flour is best for baking baguettes?",
    "How do I feed a sourdough starter?",
]
ENGINES = [
    "How often should I change my car's engine oil?",
    "Why does my car engine overheat?",
    "What does a spark plug do in an engine?",
    "How do I check my car's coolant level?",
]
# The seeded routing.default's skill rule and its measured threshold (apps/artifacts/seeds.py).
SKILL_RULE = "/rules/1"
STRICT = "adapter_similarity != null and adapter_similarity >= 0.99"


@pytest.fixture
def admin(make_user):
    return make_user(role="admin")


@pytest.fixture
def user(make_user):
    return make_user()


@pytest.fixture
def api():
    def make(user):
        client = APIClient()
        client.force_authenticate(user)
        return client

    return make


@pytest.fixture
def new_mirror_files():
    """Version files the test's writes mirror to the shared test filesystem, removed afterwards
    (only the ones that were not there before)."""
    root = settings.SHARED_FS_ROOT / "artifacts"
    before = set(root.rglob("*.json")) if root.exists() else set()
    yield
    for path in set(root.rglob("*.json")) - before if root.exists() else ():
        path.unlink(missing_ok=True)
        if path.parent.exists() and not any(path.parent.iterdir()):
            shutil.rmtree(path.parent, ignore_errors=True)


@pytest.fixture
def routing_default(new_mirror_files):
    policy = global_artifact(kind="policy.routing", name="routing.default")
    assert policy is not None and policy.body["rules"][1]["id"] == "nearest_skill"
    return policy


@pytest.fixture
def chat_default(new_mirror_files):
    workflow = global_artifact(kind="workflow.chat", name="chat.default")
    assert workflow is not None
    return workflow


def skill(name, questions):
    artifact = artifact_services.artifact_create(
        actor=None,
        name=name,
        visibility="global",
        body={"kind": "adapter.lora", "scope": "skill", "base_model": "smollm2", "rank": 8, "current_version": None},
    )
    version = AdapterVersion.objects.create(owner=None, adapter=artifact, version=1, fs_dir=f"/skills/{name}/v0001")
    adapters.version_promote(version=version)
    centroid_add(adapter=artifact, embeddings=[embed(q) for q in questions])
    return artifact


@pytest.fixture
def skills(new_mirror_files):
    return skill("baking", BAKING), skill("engines", ENGINES)


@pytest.fixture
def say():
    """A user message (and its queued answer, pinned to the workflow that answers it)."""

    def send(user, text, **kwargs):
        _, asked, _ = conversation_services.chat_turn_start(actor=user, content=text, **kwargs)
        return asked

    return send
