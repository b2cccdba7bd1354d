"""A form post's service call: its refusal is shown on the page the user is on, never a crash."""

import pytest
from django.contrib.messages import get_messages
from django.contrib.messages.storage.fallback import FallbackStorage
from django.test import RequestFactory

from liminal.errors import Conflict, Unavailable
from liminal.pages import attempt


@pytest.fixture
def request_():
    request = RequestFactory().post("/somewhere")
    request.session = {}
    request._messages = FallbackStorage(request)
    return request


def _said(request):
    return [(m.level_tag, m.message) for m in get_messages(request)]


def test_a_done_call_returns_its_result_and_says_so(request_):
    assert attempt(request_, lambda: 42, success="Done.") == (True, 42)
    assert _said(request_) == [("success", "Done.")]


@pytest.mark.parametrize("error", [Conflict("Already approved."), Unavailable("The model is loading.")])
def test_a_refusal_becomes_the_pages_error_message(request_, error):
    def refuse():
        raise error

    assert attempt(request_, refuse, success="Done.") == (False, None)
    assert _said(request_) == [("error", error.message)]


def test_a_bug_is_not_swallowed(request_):
    with pytest.raises(ZeroDivisionError):
        attempt(request_, lambda: 1 / 0)
    assert _said(request_) == []
