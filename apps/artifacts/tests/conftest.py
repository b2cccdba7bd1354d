import copy
import shutil

import pytest
from django.conf import settings

assert str(settings.SHARED_FS_ROOT).endswith("test-shared"), "tests must not touch the real shared filesystem"

WORKFLOW = {
    "kind": "workflow.chat",
    "entrypoint": "answer",
    "nodes": [
        {
            "id": "answer",
            "type": "tool_call",
            "tool": "llm.generic_chat_v1",
            "inputs": {"message": "${input.message}"},
            "next": "end",
        },
        {"id": "end", "type": "end"},
    ],
}


@pytest.fixture
def workflow_body():
    return copy.deepcopy(WORKFLOW)


@pytest.fixture
def client_for():
    from rest_framework.test import APIClient

    def make(user):
        client = APIClient()
        client.force_authenticate(user)
        return client

    return make


@pytest.fixture
def user(make_user):
    return make_user()


@pytest.fixture
def other_user(make_user):
    return make_user()


@pytest.fixture
def admin_user(make_user):
    return make_user(role="admin")


@pytest.fixture
def mirror_dir():
    """The mirror directory of an artifact, removed after the test."""
    made = []

    def track(artifact_id):
        made.append(settings.SHARED_FS_ROOT / "artifacts" / str(artifact_id))
        return made[-1]

    yield track
    for directory in made:
        shutil.rmtree(directory, ignore_errors=True)
