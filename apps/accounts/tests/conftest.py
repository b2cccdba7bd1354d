import re
import time
from urllib.parse import unquote

import pytest
from django_otp.oath import hotp
from django_otp.plugins.otp_totp.models import TOTPDevice

from apps.accounts import services


@pytest.fixture(autouse=True)
def locmem_email(settings):
    settings.MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}


def totp_code(user, confirmed=None) -> str:
    """The next code the user's authenticator app would show that the server will still accept
    (a code is good once: each must be for a later time step than the last one used)."""
    devices = TOTPDevice.objects.filter(user=user)
    if confirmed is not None:
        devices = devices.filter(confirmed=confirmed)
    device = devices.get()
    now_step = int((time.time() - device.t0) // device.step) + device.drift
    step = max(now_step, device.last_t + 1)
    assert step <= now_step + device.tolerance, "no acceptable code left in this time window"
    return f"{hotp(device.bin_key, step, digits=device.digits):06d}"


@pytest.fixture
def mfa_user(make_user):
    """A user with MFA on: (user, recovery codes)."""

    def make(**kwargs):
        user = make_user(**kwargs)
        services.mfa_enrolment_start(actor=user)
        codes = services.mfa_enrolment_confirm(actor=user, code=totp_code(user, confirmed=False))
        return user, codes

    return make


def link_token(message) -> str:
    return unquote(re.search(r"\?token=(\S+)", message.body).group(1))
