from apps.accounts.models import AuthSession, User


def user_profile(*, actor: User) -> User:
    return User.objects.select_related("tenant").get(pk=actor.pk)


def auth_session_list(*, actor: User):
    return AuthSession.objects.filter(user=actor, revoked_at__isnull=True).order_by("-created_at")


def auth_session_get(*, actor: User, session_id) -> AuthSession | None:
    """The actor's own session, or None: another user's session id is indistinguishable from a bad one."""
    return AuthSession.objects.filter(user=actor, pk=session_id).first()


def auth_session_live(*, session_id, user_id) -> AuthSession | None:
    session = (
        AuthSession.objects.select_related("user", "user__tenant")
        .filter(pk=session_id, user_id=user_id, revoked_at__isnull=True)
        .first()
    )
    if session is None or not session.is_active or not session.user.is_active:
        return None
    return session
