"""An exception escaping a plain Django view under /v1/ goes through the one error mapping: an
outage is a 503 `unavailable` with Retry-After, anything else a 500, both in the envelope."""

import pytest
from django.db import OperationalError
from django.urls import path


def _database_down(request):
    raise OperationalError("could not connect to server")


def _bug(request):
    raise RuntimeError("a bug")


urlpatterns = [path("v1/down", _database_down), path("v1/bug", _bug)]


@pytest.mark.urls("liminal.tests.test_middleware_outage")
def test_an_outage_escaping_a_plain_view_is_a_503_in_the_envelope(client):
    client.raise_request_exception = False
    response = client.get("/v1/down")
    assert response.status_code == 503 and response.json()["error"]["code"] == "unavailable"
    assert response["Retry-After"]
    response = client.get("/v1/bug")
    assert response.status_code == 500 and response.json()["error"]["code"] == "server_error"
