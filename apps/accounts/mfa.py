"""What an authenticator app needs to enrol a TOTP secret: the otpauth:// URI (Key URI Format:
SHA-1, 6 digits, 30 s steps, issuer OTP_TOTP_ISSUER), the secret in base 32 for typing, and
the URI as a QR code (an SVG data URI, so pages show it inline and API clients can too)."""

import base64

import qrcode
import qrcode.image.svg
from django_otp.plugins.otp_totp.models import TOTPDevice


def qr_code_data_uri(text: str) -> str:
    svg = qrcode.make(text, image_factory=qrcode.image.svg.SvgPathImage, border=2).to_string()
    return "data:image/svg+xml;base64," + base64.b64encode(svg).decode()


def totp_enrolment(device: TOTPDevice) -> dict:
    uri = device.config_url
    return {
        "otpauth_uri": uri,
        "secret": base64.b32encode(device.bin_key).decode(),
        "algorithm": "SHA1",
        "digits": device.digits,
        "period": device.step,
        "qr_code": qr_code_data_uri(uri),
    }
