from rest_framework import authentication, exceptions

from apps.accounts import selectors
from apps.accounts.models import AuthSession
from apps.accounts.tokens import API_KEY_PREFIX, InvalidToken, access_token_read

# The Django session key naming a browser login's AuthSession (see AuthSession).
BROWSER_SESSION_KEY = "liminal_auth_session_id"


def current_session_id(request):
    """The id of the AuthSession a request comes with: its access token's, or its browser login's
    (None for an API key, or a browser login older than browser sessions)."""
    auth = getattr(request, "auth", None)
    if isinstance(auth, AuthSession):
        return auth.id
    session = getattr(request, "session", None)
    return session.get(BROWSER_SESSION_KEY) if session is not None else None


def user_for_bearer(token: str):
    """(user, auth) for an access token or an API key; raises InvalidToken otherwise."""
    if token.startswith(API_KEY_PREFIX):
        user = selectors.api_key_user(key=token)
        if user is None:
            raise InvalidToken("Invalid or revoked API key.")
        return user, None
    return user_session_for_access_token(token)


def user_session_for_access_token(token: str):
    """(user, session) for a live access token; raises InvalidToken otherwise."""
    claims = access_token_read(token)
    session = selectors.auth_session_live(session_id=claims["sid"], user_id=claims["uid"])
    if session is None:
        raise InvalidToken("Session revoked or expired.")
    return session.user, session


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1").split()
        if not header or header[0].lower() != self.keyword:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Malformed Authorization header.")
        try:
            return user_for_bearer(header[1])
        except InvalidToken as exc:
            raise exceptions.AuthenticationFailed(str(exc)) from exc

    def authenticate_header(self, request):
        return 'Bearer realm="liminal"'
