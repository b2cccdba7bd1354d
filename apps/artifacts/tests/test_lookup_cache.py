"""The per-process cache of tool lookups: a write through the services is seen by the next
lookup, in this process and (through the shared generation token) in every other."""

import pytest

from apps.artifacts import selectors, services
from apps.artifacts.seeds import TOOLS

pytestmark = pytest.mark.django_db


def tool(actor, timeout_ms):
    return services.artifact_create(
        actor=actor, name="my.tool_v1", body={**TOOLS[0], "name": "my.tool_v1", "timeout_ms": timeout_ms}
    )


def lookup(actor):
    return selectors.artifacts_by_names_cached(actor=actor, kind="tool.spec", names={"my.tool_v1"})


def test_a_write_is_seen_by_the_next_lookup_and_other_users_never_share_one(make_user):
    alice, bob = make_user(), make_user()
    artifact = tool(alice, 5000)
    assert lookup(alice)["my.tool_v1"].body["timeout_ms"] == 5000
    assert lookup(bob) == {}, "another user's private tool is not theirs to see, cached or not"
    services.artifact_update(actor=alice, artifact=artifact, body={**artifact.body, "timeout_ms": 7000})
    assert lookup(alice)["my.tool_v1"].body["timeout_ms"] == 7000
    services.artifact_delete(actor=alice, artifact=artifact)
    assert lookup(alice) == {}


def test_a_lookup_is_reused_until_another_process_bumps_the_generation(make_user, django_assert_num_queries):
    alice = make_user()
    tool(alice, 5000)
    lookup(alice)
    with django_assert_num_queries(0):
        assert lookup(alice)["my.tool_v1"].body["timeout_ms"] == 5000
    selectors.generation_bump("tool.spec")  # what a write in another process does
    with django_assert_num_queries(1):
        lookup(alice)


def test_without_the_cache_the_lookup_goes_to_the_database(make_user, monkeypatch):
    alice = make_user()
    tool(alice, 5000)

    def broken(*args, **kwargs):
        raise ConnectionError("cache down")

    monkeypatch.setattr(selectors.cache, "get", broken)
    assert lookup(alice)["my.tool_v1"].body["timeout_ms"] == 5000
