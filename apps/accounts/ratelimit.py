"""Fixed-window request counters in Redis, shared by every web process."""

import time

import redis
from django.conf import settings

from liminal.api import RateLimited

_client = None


def state_redis() -> redis.Redis:
    """The Redis database for cross-process scratch state (limits, cancel flags)."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(settings.STATE_REDIS_URL)
    return _client


def rate_limit_hit(*, scope: str, key: str, limit: int | None = None, window: int | None = None) -> None:
    """Count one request for (scope, key); raise RateLimited when the window's budget is spent."""
    default_limit, default_window = settings.RATE_LIMITS.get(scope, (limit, window))
    limit = limit or default_limit
    window = window or default_window
    bucket = int(time.time() // window)
    redis_key = f"ratelimit:{scope}:{key}:{bucket}"
    pipe = state_redis().pipeline()
    pipe.incr(redis_key)
    pipe.expire(redis_key, window + 1)
    count, _ = pipe.execute()
    if count > limit:
        retry_after = max(1, int((bucket + 1) * window - time.time()) + 1)
        raise RateLimited(retry_after)


def client_ip(request) -> str:
    # REMOTE_ADDR only: X-Forwarded-For is client-controlled unless a trusted proxy rewrites it.
    return request.META.get("REMOTE_ADDR") or "unknown"
