"""The process-wide sentence encoder used for chunks and queries."""

from django.conf import settings

from workers.embed import TextEncoder, get_encoder


def current_encoder() -> TextEncoder:
    """Loaded once per process (web, worker, test run) and shared."""
    return get_encoder(settings.KNOWLEDGE_ENCODER_PATH or None)


def embed_query(text: str) -> list[float]:
    return current_encoder().encode([text], batch_size=1)[0].tolist()
