"""Cross-tenant matrix, built from the URL configuration: every route that names an object is
called by another user with every verb, over a bearer token, an API key (the /v1 API) and a UI
session (the pages), and must answer as if the object did not exist (404, or 405 for a verb the
route does not take). Nothing of the owner's may change.

A new route naming an object kind this file does not know fails the suite until it gets an
owner-side factory below: isolation is tested for every endpoint, not only the ones someone
remembered. WebSockets are covered in apps/conversations/tests/test_consumers.py."""

import re
import shutil

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from apps.accounts.services import api_key_create
from apps.artifacts import services as artifact_services
from apps.artifacts.models import Artifact
from apps.artifacts.seeds import TOOLS
from apps.configops import services as configops_services
from apps.configops.models import ConfigPatch
from apps.conversations import services as conversation_services
from apps.conversations.models import Conversation, Message
from apps.knowledge import services as knowledge_services
from apps.knowledge.models import Chunk, Context, KnowledgeFile, KnowledgeGap
from apps.knowledge.tests.conftest import HANDBOOK
from apps.training import adapters
from apps.training import services as training_services
from apps.training.models import AdapterVersion, MemoryItem, PreferenceEvent, SemanticCluster, SkillProposal

pytestmark = pytest.mark.django_db

VERBS = ("get", "post", "put", "patch", "delete")
# What another user may be told: the object does not exist, or the route takes no such verb.
HIDDEN = {404, 405}


def _routes():
    def walk(patterns, prefix=""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                yield prefix + str(pattern.pattern)

    return [route for route in walk(get_resolver().url_patterns) if "<" in route and not route.startswith("admin")]


PARAMETER = re.compile(r"<(?:\w+:)?(\w+)>")


@pytest.fixture
def owned(make_user):
    """One object of every kind a route can name, all Alice's."""
    alice = make_user(email="alice@example.com")
    conversation, asked, reply = conversation_services.chat_turn_start(actor=alice, content="Alice's secret question")
    conversation_services.generation_finish(
        message=reply, content="Alice's secret answer", status=Message.Status.COMPLETE, receipt={}
    )
    file = knowledge_services.file_upload(actor=alice, name="alice.md", content=HANDBOOK.encode())
    knowledge_services.file_ingest(file_id=file.pk)
    context = knowledge_services.context_create(actor=alice, name="Alice's context", file_ids=[file.pk])
    gap = KnowledgeGap.objects.create(owner=alice, query="What is Alice hiding?")
    tool = artifact_services.artifact_create(
        actor=alice, name="alice.private_tool_v1", body={**TOOLS[0], "name": "alice.private_tool_v1"}
    )
    patch = configops_services.patch_propose(
        actor=None,
        artifact=tool,
        ops=[{"op": "replace", "path": "/timeout_ms", "value": 5000}],
        justification="Faster.",
    )
    reply.refresh_from_db()
    event = training_services.feedback_record(actor=alice, message=reply, feedback="positive")
    event.refresh_from_db()
    cluster = SemanticCluster.objects.create(
        owner=alice, centroid=list(event.prompt_embedding), size=1, sample_event_ids=[str(event.pk)]
    )
    proposal = SkillProposal.objects.create(owner=alice, cluster=cluster, evidence={"size": 1})
    memory = training_services.memory_remember(actor=alice, text="Alice's locker code is 4921")
    adapter = adapters.persona_adapter_ensure(actor=alice)
    version = adapters.version_promote(
        version=AdapterVersion.objects.create(
            owner=alice, adapter=adapter, version=1, fs_dir="/a/v1", evaluation={"passed": True}
        )
    )
    key, _ = api_key_create(actor=alice, name="Alice's key")
    session = alice.auth_sessions.create(refresh_token_hash="a" * 64, expires_at="2099-01-01T00:00:00Z")
    ids = {
        "conversation_id": conversation.pk,
        "message_id": reply.pk,
        "file_id": file.pk,
        "chunk_id": Chunk.objects.filter(file=file).values_list("pk", flat=True).first(),
        "context_id": context.pk,
        "gap_id": gap.pk,
        "artifact_id": tool.pk,
        "tool_id": tool.pk,
        "event_id": event.pk,
        "item_id": memory.pk,
        "adapter_id": adapter.pk,
        "version_id": version.pk,
        "key_id": key.pk,
        "session_id": session.pk,
        "patch_id": patch.pk,
        "cluster_id": cluster.pk,
        "proposal_id": proposal.pk,
    }
    assert all(ids.values()), ids
    yield alice, ids
    shutil.rmtree(knowledge_services.user_files_dir(alice.pk), ignore_errors=True)


def _snapshot(alice) -> dict:
    """What Bob's requests must leave as it was."""
    adapter = adapters.persona_adapter_ensure(actor=alice)
    return {
        "conversations": list(Conversation.objects.filter(owner=alice).values_list("pk", "title", "updated_at")),
        "messages": list(Message.objects.filter(owner=alice).values_list("pk", "content", "status").order_by("pk")),
        "files": list(KnowledgeFile.objects.filter(owner=alice).values_list("pk", "status", "name", "folder")),
        "contexts": list(Context.objects.filter(owner=alice).values_list("pk", "name", "description")),
        "gaps": list(KnowledgeGap.objects.filter(owner=alice).values_list("pk", "resolved_at")),
        "artifacts": list(Artifact.objects.filter(owner=alice).values_list("pk", "current_version_id")),
        "events": list(PreferenceEvent.objects.filter(owner=alice).values_list("pk", "excluded_at")),
        "memory": list(MemoryItem.objects.filter(owner=alice).values_list("pk", "text", "pinned")),
        "serving": adapter.body.get("current_version"),
        "keys": list(alice.api_keys.values_list("pk", "revoked_at")),
        "sessions": list(alice.auth_sessions.values_list("pk", "revoked_at")),
        "proposals": list(alice.skill_proposals.values_list("pk", "status", "adapter_id")),
        "clusters": list(alice.clusters.values_list("pk", "status", "size")),
        "patches": list(ConfigPatch.objects.filter(artifact__owner=alice).values_list("pk", "status", "decided_at")),
    }


def test_every_route_that_names_an_object_hides_it_from_other_users(owned, make_user, api_client, client, login_tokens):
    alice, ids = owned
    routes = _routes()
    unknown = sorted({name for route in routes for name in PARAMETER.findall(route)} - set(ids))
    assert not unknown, f"routes name objects this matrix cannot make for another user: {unknown}"

    bob = make_user(email="bob@example.com")
    _, bob_key = api_key_create(actor=bob, name="Bob's key")
    credentials = {"bearer token": f"Bearer {login_tokens(bob)['access_token']}", "API key": f"Bearer {bob_key}"}
    client.force_login(bob)
    before = _snapshot(alice)

    leaks, calls = [], 0
    for route in routes:
        path = "/" + PARAMETER.sub(lambda m: str(ids[m.group(1)]), route)
        api = route.startswith("v1/")
        for verb in VERBS:
            if api:
                for how, header in credentials.items():
                    api_client.credentials(HTTP_AUTHORIZATION=header)
                    response = getattr(api_client, verb)(path, {}, format="json")
                    calls += 1
                    if response.status_code not in HIDDEN:
                        leaks.append((verb.upper(), path, how, response.status_code, response.content[:200]))
                    elif response.status_code == 404:
                        assert response.json()["error"]["code"] == "not_found", (path, response.content)
            else:
                response = getattr(client, verb)(path)
                calls += 1
                if response.status_code not in HIDDEN:
                    leaks.append((verb.upper(), path, "UI session", response.status_code, response.content[:200]))
    assert not leaks, "\n".join(map(str, leaks))
    assert calls > 200
    assert _snapshot(alice) == before
    # Nothing Bob did was stored as his either: no conversation, signal or job named Alice's objects.
    assert not PreferenceEvent.objects.filter(owner=bob).exists()
    assert not Conversation.objects.filter(owner=bob).exists()
