"""Cross-process generation state in Redis: cancel flags, heartbeats, per-user limits, and
the circuit breakers of workflow tools.

Web processes and inference workers never share memory; these keys are how a Stop pressed in
the browser reaches the engine, and how a dead worker is told apart from a slow one.

Every key about one answer is keyed by its stream key, the answer message's id, which the
server issues: a client-chosen request id is only a label the client looks its answer up by,
so one user can never name (read, stop or double-count) another's generation.
"""

import json
import time
import uuid

from django.conf import settings

from apps.accounts.ratelimit import rate_limit_hit, state_redis
from liminal.errors import Conflict

CANCEL_TTL = 3600


def cancel_key(stream_key: str) -> str:
    return f"gen:cancel:{stream_key}"


def heartbeat_key(message_id) -> str:
    return f"gen:heartbeat:{message_id}"


def cancel_request(stream_key: str) -> None:
    state_redis().set(cancel_key(stream_key), "1", ex=CANCEL_TTL)


def cancel_requested(stream_key: str) -> bool:
    return bool(state_redis().exists(cancel_key(stream_key)))


def heartbeat(message_id) -> None:
    state_redis().set(heartbeat_key(message_id), str(time.time()), ex=settings.GENERATION_HEARTBEAT_SECONDS)


def heartbeat_alive(message_id) -> bool:
    return bool(state_redis().exists(heartbeat_key(message_id)))


class Busy(Conflict):
    def __init__(self, limit: int):
        super().__init__(f"You already have {limit} answers being generated; wait or stop one.", {"limit": limit})


def _active_key(user_id) -> str:
    return f"gen:active:{user_id}"


def generation_slot_acquire(*, user_id, stream_key: str) -> None:
    """Reserve one of the user's concurrent-generation slots (409 when all are taken).
    The stream key is server-issued and new for every answer, so each answer takes a slot."""
    rate_limit_hit(scope="chat_user", key=str(user_id))
    limit = settings.CHAT_MAX_CONCURRENT_PER_USER
    key = _active_key(user_id)
    now = time.time()
    redis = state_redis()
    # Entries expire by score, so a slot leaked by a crashed process frees itself.
    redis.zremrangebyscore(key, 0, now - settings.GENERATION_SLOT_TTL)
    if not redis.zadd(key, {stream_key: now}, nx=True):
        raise Conflict("This answer is already being generated.")
    if redis.zcard(key) > limit:
        redis.zrem(key, stream_key)
        raise Busy(limit)
    redis.expire(key, settings.GENERATION_SLOT_TTL)


def generation_slot_release(*, user_id, stream_key: str) -> None:
    state_redis().zrem(_active_key(user_id), stream_key)


CIRCUIT_FAILURES = 5
CIRCUIT_WINDOW_SECONDS = 60
CIRCUIT_OPEN_SECONDS = 30


def tool_failure_record(tool: str) -> None:
    """Count a failed call; the fifth within a minute opens the tool's circuit for a while."""
    redis = state_redis()
    key, now = f"tool:failures:{tool}", time.time()
    redis.zadd(key, {f"{now}:{time.monotonic_ns()}": now})
    redis.zremrangebyscore(key, 0, now - CIRCUIT_WINDOW_SECONDS)
    redis.expire(key, CIRCUIT_WINDOW_SECONDS)
    if redis.zcard(key) >= CIRCUIT_FAILURES:
        redis.set(f"tool:circuit-open:{tool}", "1", ex=CIRCUIT_OPEN_SECONDS)
        redis.delete(key)


def tool_circuit_open(tool: str) -> bool:
    return bool(state_redis().exists(f"tool:circuit-open:{tool}"))


def tool_inputs_put(inputs: dict, *, ttl: int) -> str:
    """Park a tool call's inputs (user text) for the worker, so only an id travels as a task
    argument: task arguments are visible in Flower and the broker, and kept in results."""
    key = f"tool:inputs:{uuid.uuid4()}"
    state_redis().set(key, json.dumps(inputs), ex=ttl)
    return key


def tool_inputs_take(key: str) -> dict | None:
    """The parked inputs, once (None when they expired or were taken)."""
    raw = state_redis().getdel(key) if key.startswith("tool:inputs:") else None
    return json.loads(raw) if raw is not None else None
