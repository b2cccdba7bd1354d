"""Request bodies sent without a Content-Length (chunked transfer encoding).

Django's ASGI handler reads as many body bytes as CONTENT_LENGTH declares, so a chunked body
reached the views empty: a chunked 26 MiB upload was answered "No file was uploaded" (400)
instead of 413, and a chunked JSON body looked like no body at all. This wrapper reads such a
body up to the platform's largest accepted request (an upload plus its multipart framing),
answers 413 in the API's error envelope past it, and otherwise hands Django the body with the
length it turned out to have."""

import json

from django.conf import settings

# Room for the multipart framing and the small form fields next to an uploaded file.
MULTIPART_OVERHEAD_BYTES = 256 * 1024


def _limit() -> int:
    return settings.MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD_BYTES


def _declares_length(scope) -> bool:
    return any(name.lower() == b"content-length" for name, _ in scope.get("headers", []))


async def _too_large(send, received: int) -> None:
    limit_mb = settings.MAX_UPLOAD_BYTES // (1024 * 1024)
    body = json.dumps(
        {
            "status": "error",
            "error": {
                "code": "payload_too_large",
                "message": f"The request body is larger than the limit of {limit_mb} MB.",
                "details": {"max_upload_bytes": settings.MAX_UPLOAD_BYTES, "received_bytes_at_least": received},
            },
            "request_id": None,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class UndeclaredBodyLength:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or _declares_length(scope):
            return await self.app(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > _limit():
                return await _too_large(send, size)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        scope = {**scope, "headers": [*scope.get("headers", []), (b"content-length", str(len(body)).encode())]}
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        return await self.app(scope, replay, send)
