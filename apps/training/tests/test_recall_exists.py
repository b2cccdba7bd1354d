"""The cheap checks that let an answer skip embedding its message when correction memory and
long-term memory have nothing to recall for this user (and only then)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.training import selectors
from apps.training.models import MemoryItem, PreferenceEvent

pytestmark = pytest.mark.django_db

VECTOR = [1.0] + [0.0] * 383


def test_corrections_exist_only_for_live_embedded_corrections_of_this_user(make_user):
    user, other = make_user(), make_user()
    assert not selectors.corrections_exist(actor=user)
    PreferenceEvent.objects.create(owner=other, kind="correction", prompt="q", correction="a", prompt_embedding=VECTOR)
    PreferenceEvent.objects.create(owner=user, kind="thumbs_up", prompt="q", answer="a", prompt_embedding=VECTOR)
    forgotten = PreferenceEvent.objects.create(
        owner=user, kind="correction", prompt="q", correction="a", prompt_embedding=VECTOR, excluded_at=timezone.now()
    )
    assert not selectors.corrections_exist(actor=user)
    forgotten.excluded_at = None
    forgotten.save()
    assert selectors.corrections_exist(actor=user)


def test_memory_exists_within_the_window_or_pinned(make_user):
    user, other = make_user(), make_user()
    now = timezone.now()
    MemoryItem.objects.create(owner=other, text="other's", embedding=VECTOR)
    old = MemoryItem.objects.create(owner=user, text="old", embedding=VECTOR, created_at=now - timedelta(days=20))
    assert not selectors.memory_exists(actor=user, window_days=14, now=now)
    assert selectors.memory_exists(actor=user, window_days=30, now=now)
    old.pinned = True
    old.save()
    assert selectors.memory_exists(actor=user, window_days=14, now=now)
    assert not selectors.memory_exists(actor=user, window_days=14, now=now - timedelta(days=21))  # not yet said
