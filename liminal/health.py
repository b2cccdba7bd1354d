"""GET /healthz (liveness): is every dependency this node needs reachable?
GET /readyz (readiness): can this platform answer a chat now, i.e. is an inference worker's
engine loaded and warm? Workers announce that in Redis with a TTL (see engine_ready_announce)."""

import json
import time
import uuid

import redis
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django_redis import get_redis_connection


def check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def check_redis() -> str:
    get_redis_connection("default").ping()
    return "ok"


def check_filesystem() -> str:
    root = settings.SHARED_FS_ROOT
    root.mkdir(parents=True, exist_ok=True)
    probe = root / f".healthz-{uuid.uuid4().hex}"
    probe.write_bytes(b"ok")
    probe.unlink()
    return "ok"


CHECKS = {"database": check_database, "redis": check_redis, "filesystem": check_filesystem}


@never_cache
@require_GET
def healthz(request):
    results = {}
    for name, check in CHECKS.items():
        try:
            results[name] = check()
        except Exception as exc:  # any failure makes the node unhealthy; the reason is reported
            results[name] = f"error: {exc.__class__.__name__}: {exc}"[:300]
    healthy = all(value == "ok" for value in results.values())
    return JsonResponse(
        {"status": "healthy" if healthy else "unhealthy", "checks": results},
        status=200 if healthy else 503,
    )


# ---------------------------------------------------------------- readiness

# Each inference worker whose engine is warm keeps a key of its own alive (TTL: ENGINE_READY_TTL_S,
# refreshed every third of it, so Redis' own clock expires a worker that died or hung) and its
# name in a set, so that readiness reads a few keys instead of scanning the database.
READINESS_PREFIX = "liminal:ready:"

_state_client = None


def _state_redis() -> redis.Redis:
    global _state_client
    if _state_client is None:
        _state_client = redis.Redis.from_url(settings.STATE_REDIS_URL, socket_timeout=5, socket_connect_timeout=5)
    return _state_client


def engine_ready_announce(*, worker: str, ttl: int) -> None:
    """Say, for `ttl` seconds, that `worker` has its inference engine loaded and warm."""
    body = json.dumps({"worker": worker, "announced_at": time.time()})
    _state_redis().pipeline().set(f"{READINESS_PREFIX}engine:{worker}", body, ex=ttl).sadd(
        f"{READINESS_PREFIX}engines", worker
    ).execute()


def engines_ready() -> list[dict]:
    """The inference workers whose announcement has not expired."""
    client = _state_redis()
    workers = sorted(member.decode() for member in client.smembers(f"{READINESS_PREFIX}engines"))
    if not workers:
        return []
    bodies = client.mget([f"{READINESS_PREFIX}engine:{worker}" for worker in workers])
    expired = [worker for worker, body in zip(workers, bodies, strict=True) if body is None]
    if expired:
        client.srem(f"{READINESS_PREFIX}engines", *expired)
    return [json.loads(body) for body in bodies if body is not None]


@never_cache
@require_GET
def readyz(request):
    """200 in the envelope when the dependencies answer and an inference engine is warm, else
    503 with the reason (`not_ready`), so a load balancer sends no chats to a cold platform."""
    from liminal.api import error_body, request_id_of

    checks = {}
    for name in ("database", "redis"):
        try:
            checks[name] = CHECKS[name]()
        except Exception as exc:
            checks[name] = f"error: {exc.__class__.__name__}: {exc}"[:300]
    try:
        workers = engines_ready()
    except Exception as exc:
        workers, checks["redis"] = [], f"error: {exc.__class__.__name__}: {exc}"[:300]
    details = {"checks": checks, "inference_workers": workers}
    failing = [name for name, value in checks.items() if value != "ok"]
    if failing:
        message = f"Not ready: {', '.join(failing)} unreachable."
    elif not workers:
        message = "Not ready: no inference worker has its engine loaded and warm yet."
    else:
        return JsonResponse({"status": "ok", "data": {"ready": True, **details}, "request_id": request_id_of(request)})
    return JsonResponse(error_body("not_ready", message, details, request_id_of(request)), status=503)
