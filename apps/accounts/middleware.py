from django.contrib import auth

from apps.accounts import selectors
from apps.accounts.authentication import BROWSER_SESSION_KEY


class BrowserSessionMiddleware:
    """Logs a browser out on its next request once its AuthSession is revoked or expired (from
    the sessions page, a password change or reset, MFA changes). Revoking also deletes the Django
    session outright (services.auth_session_revoke); this catches a session whose key moved on."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        session = getattr(request, "session", None)
        session_id = session.get(BROWSER_SESSION_KEY) if session is not None else None
        if session_id and request.user.is_authenticated:
            if selectors.auth_session_live(session_id=session_id, user_id=request.user.pk) is None:
                auth.logout(request)
        return self.get_response(request)
