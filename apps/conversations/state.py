"""Cross-process generation state in Redis: cancel flags, heartbeats, per-user limits.

Web processes and inference workers never share memory; these keys are how a Stop pressed in
the browser reaches the engine, and how a dead worker is told apart from a slow one.
"""

import time

from django.conf import settings

from apps.accounts.ratelimit import rate_limit_hit, state_redis
from liminal.api import ApiError

CANCEL_TTL = 3600


def cancel_key(request_id: str) -> str:
    return f"gen:cancel:{request_id}"


def heartbeat_key(message_id) -> str:
    return f"gen:heartbeat:{message_id}"


def cancel_request(request_id: str) -> None:
    state_redis().set(cancel_key(request_id), "1", ex=CANCEL_TTL)


def cancel_requested(request_id: str) -> bool:
    return bool(state_redis().exists(cancel_key(request_id)))


def heartbeat(message_id) -> None:
    state_redis().set(heartbeat_key(message_id), str(time.time()), ex=settings.GENERATION_HEARTBEAT_SECONDS)


def heartbeat_alive(message_id) -> bool:
    return bool(state_redis().exists(heartbeat_key(message_id)))


class Busy(ApiError):
    def __init__(self, limit: int):
        super().__init__(
            409, "conflict", f"You already have {limit} answers being generated; wait or stop one.", {"limit": limit}
        )


def _active_key(user_id) -> str:
    return f"gen:active:{user_id}"


def generation_slot_acquire(*, user_id, request_id: str) -> None:
    """Reserve one of the user's concurrent-generation slots (409 when all are taken)."""
    rate_limit_hit(scope="chat_user", key=str(user_id))
    limit = settings.CHAT_MAX_CONCURRENT_PER_USER
    key = _active_key(user_id)
    now = time.time()
    redis = state_redis()
    # Entries expire by score, so a slot leaked by a crashed process frees itself.
    redis.zremrangebyscore(key, 0, now - settings.GENERATION_SLOT_TTL)
    added = redis.zadd(key, {request_id: now}, nx=True)
    if added and redis.zcard(key) > limit:
        redis.zrem(key, request_id)
        raise Busy(limit)
    redis.expire(key, settings.GENERATION_SLOT_TTL)


def generation_slot_release(*, user_id, request_id: str) -> None:
    state_redis().zrem(_active_key(user_id), request_id)
