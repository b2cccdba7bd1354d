"""The admins' ConfigOps pages: pending patches, a patch's diff and dry run, approve, apply and
roll back from the page, an artifact's audit history and restore; everyone else is refused."""

import pytest

from apps.configops import services
from apps.configops.models import ArchitectRequest, ConfigPatch
from apps.configops.tests.conftest import SKILL_RULE, STRICT

pytestmark = pytest.mark.django_db

BREAD = "How long should I knead bread dough?"


@pytest.fixture
def proposed(admin, user, routing_default, skills, say):
    asked = say(user, BREAD)
    patch = services.patch_propose(
        actor=admin,
        artifact=routing_default,
        ops=[{"op": "replace", "path": f"{SKILL_RULE}/when", "value": STRICT}],
        justification="Only near-identical questions should use a skill.",
    )
    return patch, asked


def page(client, url, status=200):
    response = client.get(url)
    assert response.status_code == status, response.content[:500]
    return response.content.decode()


def test_an_admin_approves_applies_and_rolls_back_a_patch_from_the_pages(client, admin, routing_default, proposed):
    patch, asked = proposed
    base = routing_default.version_number
    client.force_login(admin)
    listing = page(client, "/config/")
    assert f'data-patch-id="{patch.pk}"' in listing and "Only near-identical questions" in listing

    detail = page(client, f"/config/patches/{patch.pk}/")
    assert 'class="added"' in detail and "&gt;= 0.99" in detail and "&gt;= 0.35" in detail
    assert f'data-message-id="{asked.pk}"' in detail
    assert "Approve" in detail and "Reject" in detail and "Apply</button>" not in detail

    response = client.post(f"/config/patches/{patch.pk}/decide", {"decision": "approve", "reason": "fine"})
    assert response.status_code == 302
    detail = page(client, f"/config/patches/{patch.pk}/")
    assert "Apply</button>" in detail and "Now, before applying" in detail
    assert detail.count(f'data-message-id="{asked.pk}"') == 2  # at proposal and now

    client.post(f"/config/patches/{patch.pk}/apply")
    routing_default.refresh_from_db()
    assert routing_default.version_number == base + 1 and routing_default.body["rules"][1]["when"] == STRICT
    detail = page(client, f"/config/patches/{patch.pk}/")
    assert "Roll back</button>" in detail and "When applied" in detail

    client.post(f"/config/patches/{patch.pk}/rollback", {"version": base})
    routing_default.refresh_from_db()
    assert routing_default.version_number == base + 2
    assert routing_default.body == routing_default.versions.get(version=base).body
    assert ConfigPatch.objects.get(pk=patch.pk).rolled_back_at is not None


def test_the_artifact_history_lists_versions_and_patches_and_restores_a_version(
    client, admin, routing_default, proposed
):
    patch, _ = proposed
    services.patch_decide(actor=admin, patch=patch, decision="approve")
    services.patch_apply(actor=admin, patch=patch)
    routing_default.refresh_from_db()
    newest = routing_default.version_number
    client.force_login(admin)
    history = page(client, f"/config/artifacts/{routing_default.pk}/")
    assert f'data-version="{newest}"' in history and f'data-version="{newest - 1}"' in history
    assert f'data-patch-id="{patch.pk}"' in history and "Applied" in history
    assert "Only near-identical questions" in history

    response = client.post(f"/config/artifacts/{routing_default.pk}/restore", {"version": newest - 1})
    assert response.status_code == 302
    routing_default.refresh_from_db()
    assert routing_default.version_number == newest + 1
    assert routing_default.body["rules"][1]["when"] != STRICT


def test_a_failed_patch_shows_its_reason_and_no_buttons(client, admin, routing_default):
    patch = services.patch_propose(
        actor=admin,
        artifact=routing_default,
        ops=[{"op": "replace", "path": "/max_active_adapters", "value": 9}],
        justification="More adapters.",
    )
    client.force_login(admin)
    detail = page(client, f"/config/patches/{patch.pk}/")
    assert "JSON pointer /max_active_adapters" in detail
    assert "Approve" not in detail and "Apply</button>" not in detail


def test_pages_refuse_anyone_who_is_not_an_admin(client, user, routing_default, proposed):
    patch, _ = proposed
    client.force_login(user)
    page(client, "/config/", status=403)
    detail = page(client, f"/config/patches/{patch.pk}/", status=403)
    assert "0.99" not in detail
    page(client, f"/config/artifacts/{routing_default.pk}/", status=403)
    assert client.post(f"/config/patches/{patch.pk}/decide", {"decision": "approve"}).status_code == 403
    assert ConfigPatch.objects.get(pk=patch.pk).status == "pending"


def test_the_django_admin_lists_and_shows_patches(client, admin, proposed):
    patch, _ = proposed
    client.force_login(admin)
    assert str(patch.pk) in page(client, "/admin/configops/configpatch/")
    assert "Only near-identical questions" in page(client, f"/admin/configops/configpatch/{patch.pk}/change/")


def test_a_model_output_that_was_not_a_patch_is_shown_with_its_reason(client, admin, routing_default):
    patch = services.patch_record_failure(
        artifact=routing_default, reason="The model's output holds no JSON object or list.", model_output="Lower it."
    )
    client.force_login(admin)
    detail = page(client, f"/config/patches/{patch.pk}/")
    assert "holds no JSON object" in detail and "Lower it." in detail and "No dry run" in detail
    assert "holds no JSON object" in page(client, "/config/?status=failed")


def test_the_architects_policy_is_listed_with_its_history_but_not_offered_to_the_architect(client, admin):
    from apps.artifacts import seeds
    from apps.artifacts.selectors import global_artifact

    policy = global_artifact(kind="policy.architect", name=seeds.DEFAULT_ARCHITECT_POLICY)
    client.force_login(admin)
    assert f"/config/artifacts/{policy.pk}/" in page(client, "/config/")
    history = page(client, f"/config/artifacts/{policy.pk}/")
    assert 'data-version="1"' in history and "Ask the architect" not in history
    assert f"/admin/artifacts/artifact/{policy.pk}/change/" in history and "How the architect asks" in history
    assert "{schema}" in page(client, f"/admin/artifacts/artifact/{policy.pk}/change/")
    response = client.post(f"/config/artifacts/{policy.pk}/architect", {"goal": "Rewrite yourself."}, follow=True)
    assert "does not propose changes to its own policy" in response.content.decode()
    assert not ArchitectRequest.objects.filter(artifact=policy).exists()
