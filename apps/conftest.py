import pytest
import redis
from django.conf import settings


@pytest.fixture(autouse=True)
def _fresh_redis_state():
    """Rate-limit counters, cache and channel groups must not leak between tests."""
    from liminal.settings import redis_db_url

    for db in (settings.REDIS_DB_CACHE, settings.REDIS_DB_STATE, settings.REDIS_DB_CHANNELS):
        redis.Redis.from_url(redis_db_url(db)).flushdb()
    yield


@pytest.fixture(scope="session", autouse=True)
def _close_stray_connections(django_db_setup, django_db_blocker):
    """Async tests leave connections open in Channels' thread pool; end them so the test
    database can be dropped at the end of the session."""
    yield
    from django.db import connection

    with django_db_blocker.unblock():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
