"""Server-rendered account pages (Django sessions + CSRF)."""

from django.contrib import auth
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_http_methods, require_POST

from apps.accounts import selectors, services
from apps.accounts.authentication import BROWSER_SESSION_KEY, current_session_id
from apps.accounts.emails import base_url_of
from apps.accounts.forms import (
    CodeForm,
    EmailChangeForm,
    LoginForm,
    PasswordChangeForm,
    PasswordResetRequestForm,
    ProfileForm,
    SetPasswordForm,
    SignupForm,
)
from apps.accounts.mfa import totp_enrolment
from apps.accounts.ratelimit import client_ip, rate_limit_hit
from liminal.api import Conflict, RateLimited
from liminal.errors import Invalid, NotFound

PENDING_LOGIN_KEY = "liminal_pending_login_id"
TOO_MANY = "Too many attempts; try again in a few minutes."


def _login(request, user) -> None:
    """Log the browser in and give it an AuthSession row (listed on the sessions page)."""
    auth.login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    session = services.browser_session_start(
        user=user,
        session_key=request.session.session_key,
        user_agent=request.headers.get("User-Agent", ""),
        ip_address=client_ip(request),
    )
    request.session[BROWSER_SESSION_KEY] = str(session.id)


def _next_url(request) -> str:
    next_url = request.GET.get("next", "")
    if next_url.startswith("/") and not next_url.startswith("//"):
        return next_url
    return reverse("chat-home")


def _add_errors(form, exc: Invalid) -> None:
    for field, messages in (exc.details or {}).items():
        if field == "pointer":
            continue
        form.add_error(field if field in form.fields else None, messages)


@require_http_methods(["GET", "POST"])
def signup(request):
    """Sign-up answers alike for a new and a registered address when EMAIL_VERIFICATION_REQUIRED
    is on (a "check your inbox" page); off, it logs the new user in (see services.account_signup)."""
    form = SignupForm(request.POST or None)
    status = 200
    if request.method == "POST" and form.is_valid():
        try:
            rate_limit_hit(scope="signup_ip", key=client_ip(request))
            user = services.account_signup(
                email=form.cleaned_data["email"],
                password=form.cleaned_data["password"],
                handle=form.cleaned_data["handle"],
                base_url=base_url_of(request),
            )
        except Conflict as exc:
            form.add_error(None, str(exc.detail))
            status = 409
        except DjangoValidationError as exc:
            form.add_error("password", exc.messages)
            status = 400
        except RateLimited:
            form.add_error(None, "Too many sign-ups from your address; try again in a minute.")
            status = 429
        else:
            if user is None:
                return render(request, "accounts/check_inbox.html", {"email": form.cleaned_data["email"]})
            _login(request, user)
            return redirect("chat-home")
    elif request.method == "POST":
        status = 400
    return render(request, "accounts/signup.html", {"form": form}, status=status)


@require_http_methods(["GET", "POST"])
def login(request):
    form = LoginForm(request.POST or None)
    status = 200
    if request.method == "POST" and form.is_valid():
        email = form.cleaned_data["email"]
        try:
            rate_limit_hit(scope="login_ip", key=client_ip(request))
            rate_limit_hit(scope="login_email", key=email.lower())
        except RateLimited:
            form.add_error(None, "Too many attempts; try again in a minute.")
            status = 429
        else:
            user = services.credentials_check(email=email, password=form.cleaned_data["password"])
            if user is None:
                form.add_error(None, "Invalid email or password.")
                status = 401
            else:
                try:
                    services.login_allowed_check(user=user, base_url=base_url_of(request))
                except services.EmailNotVerified as exc:
                    form.add_error(None, str(exc))
                    status = 403
                else:
                    if services.mfa_enabled(user=user):
                        pending = services.pending_login_start(
                            user=user,
                            user_agent=request.headers.get("User-Agent", ""),
                            ip_address=client_ip(request),
                        )
                        request.session[PENDING_LOGIN_KEY] = str(pending.id)
                        query = urlencode({"next": request.GET["next"]}) if request.GET.get("next") else ""
                        return redirect(reverse("accounts:login-mfa") + (f"?{query}" if query else ""))
                    _login(request, user)
                    return redirect(_next_url(request))
    elif request.method == "POST":
        status = 400
    return render(request, "accounts/login.html", {"form": form}, status=status)


@require_http_methods(["GET", "POST"])
def login_mfa(request):
    """The second step of a login for a user with MFA on: a code from the app or a recovery code."""
    pending_id = request.session.get(PENDING_LOGIN_KEY)
    if not pending_id:
        return redirect("accounts:login")
    form = CodeForm(request.POST or None)
    status = 200
    if request.method == "POST" and form.is_valid():
        try:
            rate_limit_hit(scope="mfa_ip", key=client_ip(request))
            user = services.pending_login_complete(pending_login_id=pending_id, code=form.cleaned_data["code"])
        except NotFound:
            request.session.pop(PENDING_LOGIN_KEY, None)
            return redirect("accounts:login")
        except Invalid as exc:
            _add_errors(form, exc)
            status = 400
        except services.MfaCodeRejected:
            form.add_error("code", "The code is not correct.")
            status = 401
        except RateLimited:
            form.add_error(None, TOO_MANY)
            status = 429
        else:
            request.session.pop(PENDING_LOGIN_KEY, None)
            _login(request, user)
            return redirect(_next_url(request))
    elif request.method == "POST":
        status = 400
    return render(request, "accounts/login_mfa.html", {"form": form}, status=status)


@require_POST
def logout(request):
    session_id = request.session.get(BROWSER_SESSION_KEY)
    if session_id and request.user.is_authenticated:
        session = selectors.auth_session_get(actor=request.user, session_id=session_id)
        if session is not None:
            services.auth_session_revoke(session=session)
    auth.logout(request)
    return redirect("accounts:login")


@login_required
@require_http_methods(["GET", "POST"])
def settings_page(request):
    """Account settings: API keys for OpenAI-compatible clients (shown once at creation)."""
    new_key = None
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "create":
            _, new_key = services.api_key_create(actor=request.user, name=request.POST.get("name", ""))
        elif action == "revoke":
            api_key = selectors.api_key_get(actor=request.user, key_id=request.POST.get("key_id"))
            if api_key is not None:
                services.api_key_revoke(actor=request.user, api_key=api_key)
    return render(
        request,
        "accounts/settings.html",
        {"api_keys": selectors.api_key_list(actor=request.user), "new_key": new_key, "tab": "keys"},
    )


@login_required
@require_http_methods(["GET", "POST"])
def profile(request):
    """Handle, email (changed once the new address confirms) and password (other sessions end)."""
    action = request.POST.get("action") if request.method == "POST" else None
    forms = {
        "handle": ProfileForm(
            request.POST if action == "handle" else None, initial={"handle": request.user.handle}, prefix="handle"
        ),
        "email": EmailChangeForm(request.POST if action == "email" else None, prefix="email"),
        "password": PasswordChangeForm(request.POST if action == "password" else None, prefix="password"),
    }
    notice, status = None, 200
    form = forms.get(action)
    if form is not None and form.is_valid():
        data = form.cleaned_data
        try:
            rate_limit_hit(scope="account_user", key=str(request.user.pk))
            if action == "handle":
                services.user_profile_update(actor=request.user, handle=data["handle"])
                notice = "Your handle is saved."
            elif action == "email":
                services.email_change_request(
                    actor=request.user,
                    new_email=data["new_email"],
                    password=data["password"],
                    base_url=base_url_of(request),
                )
                notice = f"We have sent a link to {data['new_email']}; your email changes once you follow it."
                forms["email"] = EmailChangeForm(prefix="email")
            else:
                user = services.password_change(
                    actor=request.user,
                    current_password=data["current_password"],
                    new_password=data["new_password"],
                    keep_session_id=current_session_id(request),
                )
                auth.update_session_auth_hash(request, user)
                services.browser_session_rekey(
                    session_id=current_session_id(request), session_key=request.session.session_key
                )
                notice = "Your password is changed; every other session was logged out."
                forms["password"] = PasswordChangeForm(prefix="password")
        except Invalid as exc:
            _add_errors(form, exc)
            status = 400
        except Conflict as exc:
            form.add_error(None, str(exc.detail))
            status = 409
        except RateLimited:
            form.add_error(None, TOO_MANY)
            status = 429
    elif form is not None:
        status = 400
    request.user.refresh_from_db()
    return render(request, "accounts/profile.html", {**forms, "notice": notice, "tab": "profile"}, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def security(request):
    """Two-factor authentication: enrol (QR code), confirm, recovery codes, disable."""
    action = request.POST.get("action") if request.method == "POST" else None
    form = CodeForm(request.POST if action in {"confirm", "disable", "regenerate"} else None)
    recovery_codes, notice, status = None, None, 200
    try:
        if action == "start":
            rate_limit_hit(scope="account_user", key=str(request.user.pk))
            services.mfa_enrolment_start(actor=request.user)
        elif action == "cancel":
            services.mfa_enrolment_cancel(actor=request.user)
        elif action in {"confirm", "disable", "regenerate"}:
            if not form.is_valid():
                raise Invalid("Enter a code.", field="code")
            rate_limit_hit(scope="mfa_ip", key=client_ip(request))
            code = form.cleaned_data["code"]
            if action == "confirm":
                recovery_codes = services.mfa_enrolment_confirm(
                    actor=request.user, code=code, keep_session_id=current_session_id(request)
                )
                notice = "Two-factor authentication is on; your other sessions were logged out."
            elif action == "disable":
                services.mfa_disable(actor=request.user, code=code, keep_session_id=current_session_id(request))
                notice = "Two-factor authentication is off; your other sessions were logged out."
            else:
                recovery_codes = services.mfa_recovery_codes_regenerate(actor=request.user, code=code)
                notice = "New recovery codes; the old ones no longer work."
            form = CodeForm()
    except Invalid as exc:
        _add_errors(form, exc)
        status = 400
    except services.MfaCodeRejected:
        form.add_error("code", "The code is not correct.")
        status = 400
    except Conflict as exc:
        form.add_error(None, str(exc.detail))
        status = 409
    except RateLimited:
        form.add_error(None, TOO_MANY)
        status = 429
    pending = selectors.mfa_enrolment_pending(actor=request.user)
    context = {
        "status": selectors.mfa_status(actor=request.user),
        "enrolment": totp_enrolment(pending) if pending is not None else None,
        "form": form,
        "recovery_codes": [f"{c[:4]}-{c[4:]}" for c in recovery_codes or []],
        "notice": notice,
        "tab": "security",
    }
    return render(request, "accounts/security.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def sessions(request):
    """Every device logged in to the account (browsers and API clients), each revocable."""
    current = str(current_session_id(request) or "")
    if request.method == "POST":
        if request.POST.get("action") == "revoke_others":
            services.auth_sessions_revoke_all(user=request.user, keep_session_id=current or None)
        else:
            try:
                session = selectors.auth_session_get(actor=request.user, session_id=request.POST.get("session_id"))
            except DjangoValidationError:
                session = None
            if session is None:
                raise Http404("Session not found.")
            services.auth_session_revoke(session=session)
            if str(session.id) == current:
                auth.logout(request)
                return redirect("accounts:login")
        return redirect("accounts:sessions")
    items = [(s, str(s.id) == current) for s in selectors.auth_session_list(actor=request.user) if s.is_active]
    return render(request, "accounts/sessions.html", {"sessions": items, "tab": "sessions"})


@require_http_methods(["GET", "POST"])
def password_reset(request):
    form = PasswordResetRequestForm(request.POST or None)
    status, sent = 200, False
    if request.method == "POST" and form.is_valid():
        try:
            rate_limit_hit(scope="reset_ip", key=client_ip(request))
            rate_limit_hit(scope="reset_email", key=form.cleaned_data["email"].lower())
        except RateLimited:
            form.add_error(None, TOO_MANY)
            status = 429
        else:
            services.password_reset_request(email=form.cleaned_data["email"], base_url=base_url_of(request))
            sent = True
    elif request.method == "POST":
        status = 400
    return render(request, "accounts/password_reset.html", {"form": form, "sent": sent}, status=status)


@require_http_methods(["GET", "POST"])
def password_reset_confirm(request):
    """The emailed link: /accounts/password-reset/confirm/?token=… (no token in the path, so the
    URL config names no object another user could probe)."""
    token = request.GET.get("token", "")
    try:
        services.password_reset_user(token=token)
    except Invalid:
        return render(request, "accounts/password_reset_confirm.html", {"invalid": True}, status=400)
    form = SetPasswordForm(request.POST or None)
    status = 200
    if request.method == "POST" and form.is_valid():
        try:
            rate_limit_hit(scope="reset_ip", key=client_ip(request))
            services.password_reset_confirm(token=token, new_password=form.cleaned_data["new_password"])
        except Invalid as exc:
            _add_errors(form, exc)
            status = 400
        except RateLimited:
            form.add_error(None, TOO_MANY)
            status = 429
        else:
            if request.user.is_authenticated:
                auth.logout(request)
            return render(request, "accounts/password_reset_confirm.html", {"done": True})
    elif request.method == "POST":
        status = 400
    return render(request, "accounts/password_reset_confirm.html", {"form": form}, status=status)


@require_http_methods(["GET", "POST"])
def verify_email(request):
    """The emailed link. GET only shows a button: mail scanners that fetch links must not spend it."""
    token = request.GET.get("token", "")
    if request.method == "GET":
        return render(request, "accounts/verify_email.html", {"token": token})
    try:
        rate_limit_hit(scope="verify_email_ip", key=client_ip(request))
        user = services.email_link_confirm(token=token)
    except Invalid as exc:
        error = (exc.details or {}).get("token", [exc.message])[0]
        return render(request, "accounts/verify_email.html", {"error": error}, status=400)
    except Conflict as exc:
        return render(request, "accounts/verify_email.html", {"error": str(exc.detail)}, status=409)
    except RateLimited:
        return render(request, "accounts/verify_email.html", {"error": TOO_MANY}, status=429)
    return render(request, "accounts/verify_email.html", {"verified_email": user.email})
