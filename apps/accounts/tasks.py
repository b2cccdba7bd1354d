from celery import shared_task

from apps.accounts.services import auth_sessions_purge_expired


@shared_task
def purge_expired_auth_sessions() -> int:
    return auth_sessions_purge_expired()
