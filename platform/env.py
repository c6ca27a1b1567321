"""Tiny helpers that read settings from the environment and fail loudly on bad values."""

from __future__ import annotations

import ipaddress
import json
import os
from urllib.parse import parse_qs, unquote, urlparse

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def env_int(name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
        raise ImproperlyConfigured(f"{name} must be {bounds}, got {value}")
    return value


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {value}")
    return value


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def database_from_url(url: str) -> dict:
    """``sqlite:///relative/or//absolute/path`` or ``postgres://user:pass@host:port/name``."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = unquote(parsed.path[1:] if parsed.path.startswith("/") else parsed.path)
        if not path:
            raise ImproperlyConfigured(f"DATABASE_URL {url!r} names no SQLite file")
        # Many threads of one worker write usage rows: WAL lets reads run beside a write, IMMEDIATE takes the
        # write lock up front (no deadlocking lock upgrades), and a writer waits for the lock, not fails.
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": path,
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    if parsed.scheme in {"postgres", "postgresql"}:
        options = {key: values[-1] for key, values in parse_qs(parsed.query).items()}
        # A database host that does not answer fails the request in seconds (503), not after the OS's minutes.
        options.setdefault("connect_timeout", "5")
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parsed.path.lstrip("/")) or "postgres",
            "USER": unquote(parsed.username or ""),
            "PASSWORD": unquote(parsed.password or ""),
            "HOST": parsed.hostname or "",
            "PORT": str(parsed.port or ""),
            "OPTIONS": options,
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
        }
    raise ImproperlyConfigured(f"DATABASE_URL must start with sqlite:// or postgres://, got {url!r}")


def cache_from_url(url: str) -> dict:
    """``locmem://`` (one process only) or ``redis://host:port/db``."""
    parsed = urlparse(url)
    if parsed.scheme == "locmem":
        return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": parsed.netloc or "sluice"}
    if parsed.scheme in {"redis", "rediss"}:
        return {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": url,
            "OPTIONS": {
                # Fail fast when Redis is down; the limiter then decides (see accounts/limits.py).
                "SOCKET_CONNECT_TIMEOUT": 0.5,
                "SOCKET_TIMEOUT": 0.5,
            },
        }
    raise ImproperlyConfigured(f"CACHE_URL must start with locmem:// or redis://, got {url!r}")


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name, default).strip() or default
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def env_networks(name: str, default: str) -> list:
    """A comma-separated list of networks (``10.0.0.0/8,127.0.0.1``); a bare address is a /32 or /128."""
    networks = []
    for item in env_list(name, default):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {item!r} is not an IP network (like 10.0.0.0/8)") from None
    return networks


_REMOTE_FIELDS = {"urls", "api_key", "tokenizer", "upstream_model", "context_window", "defaults"}
# Sampling fields a model may have a default for, with each one's allowed range (as a request's).
SAMPLING_DEFAULT_RANGES = {"temperature": (float, 0.0, 2.0), "top_p": (float, 1e-9, 1.0), "top_k": (int, 0, 1 << 20)}


def sampling_defaults_problem(value) -> str | None:
    """Why ``value`` is not a valid set of sampling defaults (``{"temperature": 0.2, "top_p": 0.9}``), or None."""
    if not isinstance(value, dict):
        return "must be an object like {\"temperature\": 0.2, \"top_p\": 0.9}"
    for name, number in value.items():
        if name not in SAMPLING_DEFAULT_RANGES:
            return f"has an unknown field {name!r}; known: {', '.join(SAMPLING_DEFAULT_RANGES)}"
        kind, low, high = SAMPLING_DEFAULT_RANGES[name]
        if isinstance(number, bool) or not isinstance(number, (int, float)) or (kind is int and not isinstance(number, int)):
            return f"{name} must be a number" if kind is float else f"{name} must be an integer"
        if not low <= number <= high:
            return f"{name} must be between {low:g} and {high:g}"
    return None


def _json_object_from_env(name: str, what: str) -> dict:
    """The JSON object in the variable ``name`` ({} when unset or empty); anything else fails at start."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as error:
        raise ImproperlyConfigured(f"{name} must be JSON: {error}") from None
    if not isinstance(value, dict):
        raise ImproperlyConfigured(f"{name} must be a JSON object {what}")
    return value


def model_defaults_from_env(name: str) -> dict[str, dict]:
    """Per-model sampling defaults as JSON: ``{"model-id": {"temperature": 0.2, "top_p": 0.9, "top_k": 40}}``."""
    value = _json_object_from_env(name, "mapping model ids to their defaults")
    for model_id, defaults in value.items():
        problem = sampling_defaults_problem(defaults)
        if problem:
            raise ImproperlyConfigured(f"{name}[{model_id!r}] {problem}")
    return value
REMOTE_TOKENIZERS = ("local", "none")


def remote_models_from_env(name: str) -> dict[str, dict]:
    """Models served by upstream OpenAI-compatible servers, as JSON::

        {"model-id": {"urls": ["http://h1:8000/v1", ...], "api_key": "...", "tokenizer": "local|none",
                      "upstream_model": "name upstream (default: model-id)", "context_window": 8192}}

    Returns each model's settings with every field filled in; any mistake fails at start, naming it.
    """
    value = _json_object_from_env(name, "mapping model ids to their upstreams")
    models = {}
    for model_id, spec in value.items():
        where = f"{name}[{model_id!r}]"
        if not model_id.strip() or not isinstance(spec, dict):
            raise ImproperlyConfigured(f"{where} must be a non-empty model id mapped to an object")
        unknown = set(spec) - _REMOTE_FIELDS
        if unknown:
            raise ImproperlyConfigured(f"{where} has unknown fields {sorted(unknown)}; known: {sorted(_REMOTE_FIELDS)}")
        urls = spec.get("urls")
        if not isinstance(urls, list) or not urls:
            raise ImproperlyConfigured(f"{where}.urls must be a non-empty list of base URLs (http://host:port/v1)")
        for url in urls:
            parsed = urlparse(url) if isinstance(url, str) else None
            if parsed is None or parsed.scheme not in {"http", "https"} or not parsed.hostname:
                raise ImproperlyConfigured(f"{where}.urls: {url!r} is not an http(s) URL")
        api_key = spec.get("api_key", "")
        upstream_model = spec.get("upstream_model", model_id)
        if not isinstance(api_key, str) or not isinstance(upstream_model, str) or not upstream_model:
            raise ImproperlyConfigured(f"{where}: api_key and upstream_model must be strings")
        tokenizer = spec.get("tokenizer", "none")
        if tokenizer not in REMOTE_TOKENIZERS:
            raise ImproperlyConfigured(f"{where}.tokenizer must be one of {', '.join(REMOTE_TOKENIZERS)}, got {tokenizer!r}")
        context_window = spec.get("context_window")
        if context_window is not None and (not isinstance(context_window, int) or context_window < 1):
            raise ImproperlyConfigured(f"{where}.context_window must be a positive integer")
        defaults = spec.get("defaults", {})
        problem = sampling_defaults_problem(defaults)
        if problem:
            raise ImproperlyConfigured(f"{where}.defaults {problem}")
        models[model_id] = {
            "defaults": defaults,
            "urls": [url.rstrip("/") for url in urls],
            "api_key": api_key,
            "tokenizer": tokenizer,
            "upstream_model": upstream_model,
            "context_window": context_window,
        }
    return models


def env_header(name: str) -> tuple[str, str] | None:
    """``Header-Name: value`` as Django's META key and value (``("HTTP_HEADER_NAME", "value")``); unset = None."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    header, separator, value = (part.strip() for part in raw.partition(":"))
    if not separator or not header or not value or not all(char.isalnum() or char == "-" for char in header):
        raise ImproperlyConfigured(f"{name} must look like 'X-Forwarded-Proto: https', got {raw!r}")
    return "HTTP_" + header.upper().replace("-", "_"), value


def env_origins(name: str) -> list[str]:
    """A comma-separated list of origins with their scheme (``https://console.example.com``)."""
    origins = env_list(name, "")
    for origin in origins:
        parsed = urlparse(origin)
        if parsed.scheme not in {"http", "https"} or not parsed.netloc or parsed.path not in {"", "/"}:
            raise ImproperlyConfigured(f"{name}: {origin!r} is not an origin like https://console.example.com")
    return origins


def secret_key_refuse_weak(key: str) -> None:
    """Refuse a SECRET_KEY that Django's own deployment check calls weak (security.W009): shorter than 50
    characters, fewer than 5 distinct ones, or Django's generated ``django-insecure-`` development key."""
    from django.core.checks.security.base import (
        SECRET_KEY_INSECURE_PREFIX,
        SECRET_KEY_MIN_LENGTH,
        SECRET_KEY_MIN_UNIQUE_CHARACTERS,
    )

    if (
        len(key) < SECRET_KEY_MIN_LENGTH
        or len(set(key)) < SECRET_KEY_MIN_UNIQUE_CHARACTERS
        or key.startswith(SECRET_KEY_INSECURE_PREFIX)
    ):
        raise ImproperlyConfigured(
            f"SECRET_KEY is too weak for a deployment (DEBUG off, a server database): it needs at least "
            f"{SECRET_KEY_MIN_LENGTH} characters, {SECRET_KEY_MIN_UNIQUE_CHARACTERS} of them different, and must not "
            f"be a generated development key. Make one with: python -c 'import secrets; print(secrets.token_urlsafe(50))'"
        )
