"""The OpenAPI 3 schema of the /v1 API, served at /v1/schema to anyone (it holds no data).

drf-spectacular describes the DRF views; the three plain async views (`/v1/chat`,
`/v1/chat/completions`, `/v1/models`) are described here by hand."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.views import SpectacularAPIView
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer


class BearerScheme(OpenApiAuthenticationExtension):
    """Access tokens from /v1/auth/login and API keys both go in `Authorization: Bearer ...`."""

    target_class = "apps.accounts.authentication.BearerTokenAuthentication"
    name = "bearer"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "An access token or an API key."}


def only_the_api(endpoints):
    """Only /v1 routes: the pages and the admin are not part of the API."""
    return [endpoint for endpoint in endpoints if endpoint[0].startswith("/v1/")]


_MESSAGE = {
    "type": "object",
    "properties": {"content": {"type": "string", "minLength": 1}},
    "required": ["content"],
}
_UUID = {"type": "string", "format": "uuid"}
_ENVELOPE = {"description": "The envelope: {status, data} or {status, error: {code, message, details}}."}
_SECURED = [{"bearer": []}]

PLAIN_VIEWS = {
    "/v1/chat": {
        "post": {
            "operationId": "chat",
            "summary": "Send a message and get the answer (JSON), or its tokens as server-sent events (stream).",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "message": _MESSAGE,
                                "conversation_id": _UUID,
                                "parent_id": _UUID,
                                "context_id": _UUID,
                                "workflow_id": _UUID,
                                "request_id": {"type": "string", "maxLength": 100},
                                "stream": {"type": "boolean"},
                            },
                            "required": ["message"],
                        }
                    }
                },
            },
            "responses": {"200": _ENVELOPE, "400": _ENVELOPE, "404": _ENVELOPE, "409": _ENVELOPE, "429": _ENVELOPE},
            "security": _SECURED,
        }
    },
    "/v1/chat/completions": {
        "post": {
            "operationId": "chat_completions",
            "summary": "OpenAI-compatible chat completions (context_id and workflow_id as extras).",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "model": {"type": "string"},
                                "messages": {
                                    "type": "array",
                                    "minItems": 1,
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "role": {"type": "string", "enum": ["system", "user", "assistant"]},
                                            "content": {"type": "string"},
                                        },
                                        "required": ["role", "content"],
                                    },
                                },
                                "stream": {"type": "boolean"},
                                "max_tokens": {"type": "integer", "minimum": 1},
                                "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                                "top_p": {"type": "number", "minimum": 0, "maximum": 1},
                                "context_id": _UUID,
                                "workflow_id": _UUID,
                            },
                            "required": ["messages"],
                        }
                    }
                },
            },
            "responses": {"200": {"description": "An OpenAI chat.completion object (or SSE chunks)."}},
            "security": _SECURED,
        }
    },
    "/v1/models": {
        "get": {
            "operationId": "models",
            "summary": "The served model, as OpenAI's model list.",
            "responses": {"200": {"description": "An OpenAI model list."}},
            "security": _SECURED,
        }
    },
}


def add_plain_views(result, generator, request, public):
    result.setdefault("paths", {}).update(PLAIN_VIEWS)
    return result


class SchemaView(SpectacularAPIView):
    permission_classes = [AllowAny]
    authentication_classes = []
    # The schema itself, not wrapped in the envelope: OpenAPI tools read it as it is.
    renderer_classes = [JSONRenderer]
