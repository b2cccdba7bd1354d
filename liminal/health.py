"""GET /healthz: is every dependency this node needs reachable?"""

import uuid

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
