"""Sluice settings. Every value comes from the environment; `.env.example` lists them with defaults.

With nothing set, Sluice runs on the embedded defaults: a SQLite file and a generated secret key under
`var/`, an in-process cache (valid for one process only) and the packaged SmolLM2-135M-Instruct model.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from platform.env import (
    cache_from_url,
    database_from_url,
    env_bool,
    env_choice,
    env_float,
    env_header,
    env_int,
    env_list,
    env_networks,
    env_origins,
    env_str,
    model_defaults_from_env,
    remote_models_from_env,
    secret_key_refuse_weak,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("SLUICE_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'sluice.sqlite3'}")
CACHE_URL = env_str("CACHE_URL", "locmem://")
DATABASES = {"default": database_from_url(DATABASE_URL)}
# The embedded default is one process on a SQLite file; anything else is a deployment and must say its secret.
EMBEDDED_DEFAULTS = DATABASES["default"]["ENGINE"].endswith("sqlite3")


def _secret_key() -> str:
    configured = env_str("SECRET_KEY")
    if configured:
        return configured
    if not EMBEDDED_DEFAULTS and not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY is required with a server database (DATABASE_URL) when DEBUG is off")
    # The embedded default: generate once, keep it beside the SQLite file.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_ratelimit",
    "accounts",
    "moderation",
    "inference",
    "platform.console.apps.ConsoleConfig",  # the account holder's console at /console/
    "platform.apps.PlatformConfig",  # the admin dashboard, its templates, static files and commands
]

MIDDLEWARE = [
    "platform.middleware.RequestIdMiddleware",
    "platform.observability.RequestObservationMiddleware",  # metrics and the JSON request log line
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "platform.urls"
WSGI_APPLICATION = "platform.wsgi.application"
ASGI_APPLICATION = "platform.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

CACHES = {"default": cache_from_url(CACHE_URL)}
if CACHES["default"]["BACKEND"].endswith("LocMemCache"):
    # The in-process cache is valid for one process only (the embedded default); django-ratelimit's
    # check rightly refuses it for anything shared. Production sets CACHE_URL=redis://...
    SILENCED_SYSTEM_CHECKS = ["django_ratelimit.E003", "django_ratelimit.W001"]
RATELIMIT_USE_CACHE = "default"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
# The admin and API docs assets, served by the process itself (WhiteNoise), straight from the apps in tests.
WHITENOISE_USE_FINDERS = True

# Oversized bodies are refused with 413 before any parsing (DRF >= 3.17.2 honours this in request.data).
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("SLUICE_MAX_BODY_BYTES", 1_048_576, minimum=1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["accounts.throttling.KeyRequestRateThrottle"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["platform.parsers.JSONParser"],  # refuses over-deep and unencodable JSON
    "EXCEPTION_HANDLER": "platform.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Sluice API",
    "DESCRIPTION": "OpenAI-compatible, keyed, metered and moderated language-model API.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    # Request bodies get their own components (`...Request`): input rules (no NUL, not blank) and no read-only
    # fields there, the answers' shapes as they are.
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "platform.openapi.server_limits"],
    # Names for the constant `object` fields of OpenAI's response objects.
    "ENUM_NAME_OVERRIDES": {
        "ListObjectEnum": ["list"], "ModelObjectEnum": ["model"], "UsageObjectEnum": ["usage"],
        "ChatCompletionObjectEnum": ["chat.completion"], "TextCompletionObjectEnum": ["text_completion"],
    },
}

# The model. Defaults to the packaged SmolLM2-135M-Instruct GGUF (see inference/model_files.py).
SLUICE_MODEL_ID = env_str("SLUICE_MODEL_ID", "SmolLM2-135M-Instruct")
SLUICE_MODEL_PATH = env_str("SLUICE_MODEL_PATH", "")  # local folder or hub id; empty = packaged model
SLUICE_MODEL_GGUF_FILE = env_str("SLUICE_MODEL_GGUF_FILE", "")
SLUICE_MODEL_DTYPE = env_str("SLUICE_MODEL_DTYPE", "float32")
if SLUICE_MODEL_DTYPE not in {"float32", "bfloat16"}:
    raise ImproperlyConfigured(f"SLUICE_MODEL_DTYPE must be float32 or bfloat16, got {SLUICE_MODEL_DTYPE!r}")
SLUICE_MODEL_CACHE_DIR = Path(env_str("SLUICE_MODEL_CACHE_DIR", str(VAR_DIR / "models")))
# How the generator's weight matrices are held and multiplied (inference/weight_formats.py, README "Weight
# formats"): "auto" (the default) is q4_1 for a GGUF whose matrices are Q4_1 blocks (the packaged model) where
# this CPU runs Sluice's AVX-512 kernels, float16 otherwise; or name one: q4_1, float16, int4, int8, bfloat16 or
# float32, each on the lean forward pass of inference/fast_llama.py (Llama-architecture models; others fall
# back), or "transformers": transformers' own model in SLUICE_MODEL_DTYPE.
SLUICE_WEIGHT_FORMAT = env_choice("SLUICE_WEIGHT_FORMAT", "auto",
                                  ("auto", "q4_1", "float16", "int4", "int8", "bfloat16", "float32", "transformers"))
SLUICE_ENGINE = env_str("SLUICE_ENGINE", "transformers")  # "transformers" or "fake" (tests, overhead benchmark)

# Limits.
SLUICE_MAX_PROMPT_TOKENS = env_int("SLUICE_MAX_PROMPT_TOKENS", 4096, minimum=1)
SLUICE_MAX_NEW_TOKENS = env_int("SLUICE_MAX_NEW_TOKENS", 1024, minimum=1)
SLUICE_DEFAULT_MAX_TOKENS = env_int("SLUICE_DEFAULT_MAX_TOKENS", 256, minimum=1)
SLUICE_MAX_BATCH_SIZE = env_int("SLUICE_MAX_BATCH_SIZE", 16, minimum=1, maximum=256)
SLUICE_MAX_QUEUE = env_int("SLUICE_MAX_QUEUE", 64, minimum=0)
# The interpreter's GIL switch interval once a local model is served (0: Python's own 5 ms); see
# inference/engines/transformers_engine.py.
SLUICE_GIL_SWITCH_INTERVAL_S = env_float("SLUICE_GIL_SWITCH_INTERVAL_S", 0.0001)
SLUICE_TORCH_THREADS = env_int("SLUICE_TORCH_THREADS", 0, minimum=0)  # the model's CPU threads; 0 = every CPU
# Fair sharing between accounts (inference/fair_queue.py; README "Fair sharing"). Off: first come, first served.
SLUICE_FAIR_SHARING = env_bool("SLUICE_FAIR_SHARING", True)
# An account's defaults where its own fields are empty (Django admin: Accounts): weight, rows decoding at once
# (0: up to the batch size), requests waiting (past it: 429 rate_limit_exceeded).
SLUICE_FAIR_DEFAULT_WEIGHT = env_int("SLUICE_FAIR_DEFAULT_WEIGHT", 1, minimum=1, maximum=1000)
SLUICE_FAIR_MAX_RUNNING = env_int("SLUICE_FAIR_MAX_RUNNING", 0, minimum=0)
SLUICE_FAIR_MAX_QUEUED = env_int("SLUICE_FAIR_MAX_QUEUED", 48, minimum=1)
# Rows the batch may grow past SLUICE_MAX_BATCH_SIZE for accounts with nothing running (and requests past
# SLUICE_UPSTREAM_MAX_CONNECTIONS to a remote model), so their first request starts at the next step.
SLUICE_FAIR_BURST_ROWS = env_int("SLUICE_FAIR_BURST_ROWS", 4, minimum=0, maximum=64)
SLUICE_FAIR_RETRY_AFTER_S = env_int("SLUICE_FAIR_RETRY_AFTER_S", 1, minimum=1)
# Task endpoints: at most this many items per request; optional dedicated model folders.
SLUICE_TASK_MAX_INPUTS = env_int("SLUICE_TASK_MAX_INPUTS", 32, minimum=1, maximum=1000)
SLUICE_SENTIMENT_MODEL_PATH = env_str("SLUICE_SENTIMENT_MODEL_PATH", "")
SLUICE_QA_MODEL_PATH = env_str("SLUICE_QA_MODEL_PATH", "")
# /v1/embeddings: at most this many texts per request (OpenAI's limit) and this many word pieces in all (the
# encoder's thread read 900-1,500 a second in float32 here, at load 7-8: a request of the maximum holds it ~30 s).
SLUICE_EMBEDDING_MAX_INPUTS = env_int("SLUICE_EMBEDDING_MAX_INPUTS", 2048, minimum=1, maximum=2048)
SLUICE_EMBEDDING_MAX_TOKENS = env_int("SLUICE_EMBEDDING_MAX_TOKENS", 32_768, minimum=256)
# float32: the model's own vectors (cosine 0.999), any batch; int8: ~3.5x faster, cosine ~0.98 (README, Embeddings).
SLUICE_EMBEDDING_PRECISION = env_str("SLUICE_EMBEDDING_PRECISION", "float32")
if SLUICE_EMBEDDING_PRECISION not in {"float32", "int8"}:
    raise ImproperlyConfigured(f"SLUICE_EMBEDDING_PRECISION must be float32 or int8, got {SLUICE_EMBEDDING_PRECISION!r}")
SLUICE_MODERATION_MAX_INPUTS = env_int("SLUICE_MODERATION_MAX_INPUTS", 32, minimum=1, maximum=1000)
# Allowed moderation decisions are counted in memory and written at most this often (seconds; 0: at once).
SLUICE_MODERATION_COUNT_FLUSH_S = env_float("SLUICE_MODERATION_COUNT_FLUSH_S", 5.0)
# Moderation policies are read from the database at most this often per process (seconds; 0: every request).
# Edits in the admin reach the process that saved them at once and every other process within this time.
SLUICE_POLICY_CACHE_S = env_float("SLUICE_POLICY_CACHE_S", 5.0)
# Streamed output: characters held back past each check (a phrase up to this long is judged whole
# before any of it is released).
SLUICE_MODERATION_HOLD_CHARS = env_int("SLUICE_MODERATION_HOLD_CHARS", 16, minimum=0, maximum=1000)
# Detections of this many recent texts are kept per process (0: off): a chat re-sends its conversation every turn.
SLUICE_MODERATION_CACHE_ENTRIES = env_int("SLUICE_MODERATION_CACHE_ENTRIES", 4096, minimum=0, maximum=1_000_000)
SLUICE_KEY_ROTATION_GRACE_S = env_int("SLUICE_KEY_ROTATION_GRACE_S", 86_400, minimum=0)
# Pending usage rows older than this were left by a dead worker; `settle_stale_reservations` settles them.
SLUICE_STALE_RESERVATION_S = env_int("SLUICE_STALE_RESERVATION_S", 900, minimum=60)
SLUICE_REQUEST_TIMEOUT_S = env_float("SLUICE_REQUEST_TIMEOUT_S", 300.0, minimum=1.0)

# Models served by upstream OpenAI-compatible servers (vLLM, TGI, llama-server, Ollama, another Sluice), beside
# or instead of the local one; see platform/env.py for the JSON shape and inference/remote_engine.py.
SLUICE_LOCAL_MODEL = env_bool("SLUICE_LOCAL_MODEL", True)  # 0: this worker loads no local model at all
SLUICE_REMOTE_MODELS = remote_models_from_env("SLUICE_REMOTE_MODELS")
if SLUICE_LOCAL_MODEL and SLUICE_MODEL_ID in SLUICE_REMOTE_MODELS:
    raise ImproperlyConfigured(f"SLUICE_REMOTE_MODELS names {SLUICE_MODEL_ID!r}, the local model's id (SLUICE_MODEL_ID)")
if not SLUICE_LOCAL_MODEL and not SLUICE_REMOTE_MODELS:
    raise ImproperlyConfigured("SLUICE_LOCAL_MODEL=0 needs at least one model in SLUICE_REMOTE_MODELS")
SLUICE_UPSTREAM_CONNECT_TIMEOUT_S = env_float("SLUICE_UPSTREAM_CONNECT_TIMEOUT_S", 3.0, minimum=0.05)
# The longest silence allowed from an upstream: before its first token (queueing, prefill) and between two chunks.
SLUICE_UPSTREAM_READ_TIMEOUT_S = env_float("SLUICE_UPSTREAM_READ_TIMEOUT_S", 120.0, minimum=0.05)
SLUICE_UPSTREAM_HEALTH_INTERVAL_S = env_float("SLUICE_UPSTREAM_HEALTH_INTERVAL_S", 10.0, minimum=0.5)
SLUICE_UPSTREAM_MAX_CONNECTIONS = env_int("SLUICE_UPSTREAM_MAX_CONNECTIONS", 256, minimum=1)

# --- The model catalogue (issue 17) ---
# Sampling defaults per model id, for fields a request leaves out (JSON, see README "Sampling defaults"):
# {"model-id": {"temperature": 0.2, "top_p": 0.9, "top_k": 40}}. Beats the model's own generation config.
SLUICE_MODEL_DEFAULTS = model_defaults_from_env("SLUICE_MODEL_DEFAULTS")
# Remote models and aliases are also kept in the database (admin, /v1/admin/models), SLUICE_REMOTE_MODELS being
# the base they overlay. Each worker checks the catalogue's version at most this often (seconds; 0: on every
# request): a change reaches every worker of every host within this bound.
SLUICE_CATALOGUE_POLL_S = env_float("SLUICE_CATALOGUE_POLL_S", 2.0, minimum=0.0)
# --- end of the model catalogue block ---

# A worker keeps each authenticated key this many seconds before reading it again (0: every request reads the
# database); a revoked or suspended key therefore stops working on every worker within this bound.
SLUICE_KEY_CACHE_S = env_int("SLUICE_KEY_CACHE_S", 5, minimum=0, maximum=300)

# Faults: what the server does when Redis or PostgreSQL fail, and the sweep of reservations left by dead workers.
# After a cache failure the rate limits skip the cache this long before one request probes it again.
SLUICE_CACHE_BREAKER_OPEN_S = env_float("SLUICE_CACHE_BREAKER_OPEN_S", 5.0, minimum=0.1)
# A 503 database_unavailable tells the client to retry after this many seconds.
SLUICE_DB_RETRY_AFTER_S = env_int("SLUICE_DB_RETRY_AFTER_S", 2, minimum=1)
# Each worker refreshes the heartbeat of its in-flight reservations and sweeps stale ones this often (0: off).
SLUICE_RESERVATION_SWEEP_S = env_float("SLUICE_RESERVATION_SWEEP_S", 10.0)
# A pending reservation whose heartbeat is older than this was left by a dead worker, or by a request whose
# settlement could not be written (the database was down): the sweep settles it. Keep it above twice the sweep.
SLUICE_RESERVATION_STALE_S = env_float("SLUICE_RESERVATION_STALE_S", 30.0, minimum=0.5)
if SLUICE_RESERVATION_SWEEP_S and SLUICE_RESERVATION_STALE_S < 2 * SLUICE_RESERVATION_SWEEP_S:
    raise ImproperlyConfigured("SLUICE_RESERVATION_STALE_S must be at least twice SLUICE_RESERVATION_SWEEP_S")
# SLUICE_ENGINE=fake only: seconds per generated token, so fault tests and the soak have streams that last.
SLUICE_FAKE_TOKEN_DELAY_S = env_float("SLUICE_FAKE_TOKEN_DELAY_S", 0.0, minimum=0.0)

# GET /metrics (Prometheus). Off unless a token or networks are set; every check that is set must pass.
SLUICE_METRICS_TOKEN = env_str("SLUICE_METRICS_TOKEN", "")
SLUICE_METRICS_ALLOWED_NETWORKS = env_networks("SLUICE_METRICS_ALLOWED_NETWORKS", "")
# "json": every log record, and one line per request, is a JSON object (for log shippers); "plain": readable.
SLUICE_LOG_FORMAT = env_choice("SLUICE_LOG_FORMAT", "plain", ("plain", "json"))

# --- Security -------------------------------------------------------------------------------------------
# A deployment (DEBUG off and not on the embedded SQLite defaults) is served over HTTPS: the secure options
# default on there and off on the embedded `make serve` (plain http://127.0.0.1:8000). Each can be set either way.
PRODUCTION = not DEBUG and not EMBEDDED_DEFAULTS
if PRODUCTION:
    secret_key_refuse_weak(SECRET_KEY)  # ImproperlyConfigured: no worker starts on a guessable key

SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", PRODUCTION)
# Probes and scrapers reach a worker over plain HTTP inside the network; they are never redirected.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", PRODUCTION)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", PRODUCTION)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", PRODUCTION)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", PRODUCTION)
# Opt-in, only behind a proxy that sets this header on every request: "X-Forwarded-Proto: https".
SECURE_PROXY_SSL_HEADER = env_header("SECURE_PROXY_SSL_HEADER")
CSRF_TRUSTED_ORIGINS = env_origins("CSRF_TRUSTED_ORIGINS")

# One strict Content-Security-Policy on every response (admin, dashboard, /docs, the API): scripts, styles,
# fonts and fetches from this origin only, no inline code, no framing. django-csp writes it (Django 5.2 has
# no CSP of its own); Swagger UI's start-up script and styles are static files (platform/templates/sluice/).
INSTALLED_APPS += ["csp", "axes"]
MIDDLEWARE += [
    "csp.middleware.CSPMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks: it turns a lockout into the lockout page
]
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'none'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],  # the admin's and Swagger UI's icons are data: URIs in their CSS
        "font-src": ["'self'"],
        "connect-src": ["'self'"],  # Swagger UI fetches /v1/schema and sends "Try it out" requests
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
    },
}

# Sign-in throttle (django-axes) for every view that signs a user in with Django's authenticate(): the admin's
# login now, a customer console's later. Failures are counted in the database, so every gunicorn worker and
# host sees the same counts; an address or a username with SLUICE_LOGIN_FAILURE_LIMIT failures is refused
# (the lockout page, 429) until SLUICE_LOGIN_COOLOFF_S seconds pass without another failure; a success resets.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("SLUICE_LOGIN_FAILURE_LIMIT", 10, minimum=1)
AXES_COOLOFF_TIME = timedelta(seconds=env_int("SLUICE_LOGIN_COOLOFF_S", 900, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]  # each on its own: per address, and per username
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "sluice/lockout.html"
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False  # one WARNING per failure from axes is enough; no start-up banner
# Behind N reverse proxies that append to X-Forwarded-For, the address counted is the N-th from the right.
SLUICE_TRUSTED_PROXY_HOPS = env_int("SLUICE_TRUSTED_PROXY_HOPS", 0, minimum=0, maximum=10)
AXES_CLIENT_IP_CALLABLE = "platform.client_address.client_address"
# --- end of Security -------------------------------------------------------------------------------------

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "platform.logs.JsonFormatter"},
    },
    "filters": {"not_ready_is_no_error": {"()": "platform.logs.NotReadyIsNoError"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": SLUICE_LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # httpx logs every upstream request at INFO; the request line (SLUICE_LOG_FORMAT=json) already says it.
    "loggers": {"django.request": {"level": "ERROR", "filters": ["not_ready_is_no_error"]},
                "httpx": {"level": "WARNING"}},
}

# The account holder's console (/console/, platform/console): Django's auth, sessions and CSRF. Its sign-in is
# throttled by django-ratelimit on the shared cache (platform/console/views.py), per username and per address.
LOGIN_URL = "console:login"
LOGIN_REDIRECT_URL = "console:home"
LOGOUT_REDIRECT_URL = "console:login"
SLUICE_CONSOLE_LOGIN_RATE_USER = env_str("SLUICE_CONSOLE_LOGIN_RATE_USER", "5/m")  # failed and not, per username
SLUICE_CONSOLE_LOGIN_RATE_IP = env_str("SLUICE_CONSOLE_LOGIN_RATE_IP", "20/m")  # per client address
# Links in invitation emails sent from the command line or the admin (the console's own pages use the request's host).
SLUICE_CONSOLE_BASE_URL = env_str("SLUICE_CONSOLE_BASE_URL", "http://127.0.0.1:8000")
# The playground's short-lived key, made for the signed-in member (inference scope only).
SLUICE_PLAYGROUND_KEY_TTL_S = env_int("SLUICE_PLAYGROUND_KEY_TTL_S", 3600, minimum=60)
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "sluice@localhost")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
