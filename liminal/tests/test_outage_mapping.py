"""The one error mapping reads a dependency outage (PostgreSQL, Redis, the Celery broker) as 503
`unavailable` with a Retry-After, for DRF views, async views, consumers and tasks alike; a bug
stays a 500."""

import json

import kombu.exceptions
import pytest
import redis
from django.db import InterfaceError, OperationalError
from django.test import RequestFactory

from liminal.api import envelope_exception_handler, error_parts, exception_response

OUTAGES = [
    OperationalError("server closed the connection unexpectedly"),
    InterfaceError("connection already closed"),
    redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6399. Connection refused."),
    redis.exceptions.TimeoutError("Timeout reading from socket"),
    redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
    kombu.exceptions.OperationalError("[Errno 111] Connection refused"),
]


@pytest.mark.parametrize("exc", OUTAGES, ids=lambda exc: exc.__class__.__name__)
def test_an_outage_is_503_unavailable_everywhere(exc):
    status, code, message, _ = error_parts(exc)
    assert (status, code) == (503, "unavailable") and message
    assert "6399" not in message and "closed" not in message  # no infrastructure details leak

    request = RequestFactory().post("/v1/chat")
    response = exception_response(exc, request)
    assert response.status_code == 503 and int(response["Retry-After"]) >= 1
    assert json.loads(response.content)["error"]["code"] == "unavailable"

    drf = envelope_exception_handler(exc, {"request": request})
    assert drf.status_code == 503 and int(drf["Retry-After"]) >= 1
    assert drf.data["status"] == "error" and drf.data["error"]["code"] == "unavailable"


def test_a_bug_is_still_a_500():
    assert error_parts(RuntimeError("boom"))[:2] == (500, "server_error")
