"""Test overrides: same real PostgreSQL+pgvector and Redis, separate Redis databases."""

import os

os.environ.setdefault("SECRET_KEY", "liminal-tests-only-" + "x" * 40)
# Tests flush their Redis databases; keep them apart from a running dev platform's.
os.environ.setdefault("REDIS_DB_CACHE", "10")
os.environ.setdefault("REDIS_DB_CHANNELS", "11")
os.environ.setdefault("REDIS_DB_CELERY", "12")
os.environ.setdefault("REDIS_DB_STATE", "13")

from liminal.settings import *  # noqa: E402,F403
from liminal.settings import infra  # noqa: E402

SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
SECURE_HSTS_SECONDS = 0
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405
SHARED_FS_ROOT = infra.var_dir() / "test-shared"
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
CHAT_API_TIMEOUT = int(os.environ.get("CHAT_API_TIMEOUT", "120"))
ENGINE_WARMUP = False  # in-process tests compile what they use; the live worker gets ENGINE_WARMUP=0 too
# Serve static files from the source tree: a fresh checkout has run no collectstatic, and the
# live server and browser tests need htmx.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
