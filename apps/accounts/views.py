"""Server-rendered account pages (Django sessions + CSRF)."""

from django.contrib import auth
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from apps.accounts import selectors, services
from apps.accounts.forms import LoginForm, SignupForm
from apps.accounts.ratelimit import client_ip, rate_limit_hit
from liminal.api import Conflict, RateLimited


@require_http_methods(["GET", "POST"])
def signup(request):
    form = SignupForm(request.POST or None)
    status = 200
    if request.method == "POST" and form.is_valid():
        try:
            rate_limit_hit(scope="signup_ip", key=client_ip(request))
            user = services.user_create(
                email=form.cleaned_data["email"],
                password=form.cleaned_data["password"],
                handle=form.cleaned_data["handle"],
            )
        except Conflict as exc:
            form.add_error(None, str(exc.detail))
            status = 409
        except RateLimited:
            form.add_error(None, "Too many sign-ups from your address; try again in a minute.")
            status = 429
        else:
            auth.login(request, user, backend="django.contrib.auth.backends.ModelBackend")
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
            if user is not None:
                auth.login(request, user, backend="django.contrib.auth.backends.ModelBackend")
                next_url = request.GET.get("next", "")
                if next_url.startswith("/") and not next_url.startswith("//"):
                    return redirect(next_url)
                return redirect("chat-home")
            form.add_error(None, "Invalid email or password.")
            status = 401
    elif request.method == "POST":
        status = 400
    return render(request, "accounts/login.html", {"form": form}, status=status)


@require_POST
def logout(request):
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
        {"api_keys": selectors.api_key_list(actor=request.user), "new_key": new_key},
    )
