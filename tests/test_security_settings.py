"""Security settings from the environment: what a deployment gets by default, what the embedded defaults keep,
the refusal of a weak SECRET_KEY, `check --deploy` clean, and the Content-Security-Policy on every kind of page.

Production-like runs are subprocesses (settings are read once per process): DEBUG off, a PostgreSQL URL and a
Redis URL (neither is connected to by `check`), a strong generated key."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from platform.env import env_header, env_origins, secret_key_refuse_weak
from tests.servers import ROOT

SETTINGS_READ = (
    "from django.conf import settings as s; import json; print(json.dumps({name: getattr(s, name) for name in "
    "['SECURE_SSL_REDIRECT', 'SECURE_HSTS_SECONDS', 'SECURE_HSTS_INCLUDE_SUBDOMAINS', 'SECURE_HSTS_PRELOAD', "
    "'SESSION_COOKIE_SECURE', 'CSRF_COOKIE_SECURE', 'SECURE_PROXY_SSL_HEADER', 'CSRF_TRUSTED_ORIGINS']}))"
)


def sluice_env(tmp_path, **overrides: str) -> dict[str, str]:
    """The environment of a fresh process with none of this run's Sluice or Django settings."""
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("PYTEST", "SLUICE_", "SECURE_", "CSRF_", "SESSION_"))
        and key not in {"DATABASE_URL", "CACHE_URL", "SECRET_KEY", "DEBUG", "DJANGO_SETTINGS_MODULE"}
    }
    env.update({"HF_HUB_OFFLINE": "1", "SLUICE_VAR_DIR": str(tmp_path / "var")})
    env.update(overrides)
    return env


def production_env(tmp_path, **overrides: str) -> dict[str, str]:
    deployment = {
        "DATABASE_URL": "postgres://sluice@127.0.0.1:5432/sluice_not_connected",
        "CACHE_URL": "redis://127.0.0.1:6379/5",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "api.example.com",
    }
    return sluice_env(tmp_path, **{**deployment, **overrides})


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def settings_of(env: dict[str, str]) -> dict:
    result = manage(env, "shell", "-c", SETTINGS_READ)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_deployment_security_checks_are_clean_at_warning_level_in_a_production_like_environment(tmp_path):
    result = manage(production_env(tmp_path), "check", "--deploy", "--tag", "security", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_is_clean_at_warning_level_in_a_production_like_environment(tmp_path):
    """Every deployment check, drf-spectacular's schema generation (its W001 warnings) included."""
    result = manage(production_env(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_a_deployment_gets_https_only_settings_by_default(tmp_path):
    assert settings_of(production_env(tmp_path)) == {
        "SECURE_SSL_REDIRECT": True,
        "SECURE_HSTS_SECONDS": 31_536_000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": True,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_PROXY_SSL_HEADER": None,  # opt-in: trusting a header is only safe behind a proxy that sets it
        "CSRF_TRUSTED_ORIGINS": [],
    }


def test_the_embedded_defaults_keep_plain_http_working(tmp_path):
    values = settings_of(sluice_env(tmp_path))
    assert values["SECURE_SSL_REDIRECT"] is False
    assert values["SECURE_HSTS_SECONDS"] == 0
    assert values["SESSION_COOKIE_SECURE"] is False and values["CSRF_COOKIE_SECURE"] is False


def test_each_security_setting_is_read_from_the_environment(tmp_path):
    values = settings_of(production_env(
        tmp_path,
        SECURE_SSL_REDIRECT="0", SECURE_HSTS_SECONDS="3600", SECURE_HSTS_INCLUDE_SUBDOMAINS="0",
        SECURE_HSTS_PRELOAD="0", SESSION_COOKIE_SECURE="0", CSRF_COOKIE_SECURE="0",
        SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto: https",
        CSRF_TRUSTED_ORIGINS="https://console.example.com,https://admin.example.com",
    ))
    assert values == {
        "SECURE_SSL_REDIRECT": False,
        "SECURE_HSTS_SECONDS": 3600,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": False,
        "SECURE_HSTS_PRELOAD": False,
        "SESSION_COOKIE_SECURE": False,
        "CSRF_COOKIE_SECURE": False,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
        "CSRF_TRUSTED_ORIGINS": ["https://console.example.com", "https://admin.example.com"],
    }


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("probe", id="short"),
        pytest.param("ci-only-secret", id="the-old-ci-key"),
        pytest.param("ab" * 40, id="two-distinct-characters"),
        pytest.param("django-insecure-" + secrets.token_urlsafe(50), id="django-development-key"),
    ],
)
def test_a_deployment_refuses_to_start_with_a_weak_secret_key(tmp_path, key):
    result = manage(production_env(tmp_path, SECRET_KEY=key), "check")
    assert result.returncode != 0
    assert "SECRET_KEY is too weak for a deployment" in result.stderr


def test_a_deployment_refuses_to_start_without_a_secret_key(tmp_path):
    result = manage(production_env(tmp_path, SECRET_KEY=""), "check")
    assert result.returncode != 0 and "SECRET_KEY is required" in result.stderr


def test_the_embedded_defaults_and_debug_accept_any_secret_key(tmp_path):
    assert manage(sluice_env(tmp_path, SECRET_KEY="probe"), "check").returncode == 0
    assert manage(production_env(tmp_path, SECRET_KEY="probe", DEBUG="1"), "check").returncode == 0


def test_the_weak_key_rule_is_djangos_own():
    secret_key_refuse_weak(secrets.token_urlsafe(50))
    for weak in ["x" * 49, "abcd" * 20, "django-insecure-" + "q" * 60]:
        with pytest.raises(ImproperlyConfigured):
            secret_key_refuse_weak(weak)


def test_bad_proxy_headers_and_origins_fail_loudly(monkeypatch):
    for value in ["X-Forwarded-Proto", "X-Forwarded-Proto:", "X Forwarded: https"]:
        monkeypatch.setenv("SECURE_PROXY_SSL_HEADER", value)
        with pytest.raises(ImproperlyConfigured, match="SECURE_PROXY_SSL_HEADER"):
            env_header("SECURE_PROXY_SSL_HEADER")
    for value in ["console.example.com", "https://console.example.com/path", "ftp://x"]:
        monkeypatch.setenv("CSRF_TRUSTED_ORIGINS", value)
        with pytest.raises(ImproperlyConfigured, match="CSRF_TRUSTED_ORIGINS"):
            env_origins("CSRF_TRUSTED_ORIGINS")


def test_a_redirect_to_https_spares_the_probes(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    response = client.get("/v1/models")
    assert response.status_code == 301 and response["Location"] == "https://testserver/v1/models"
    assert client.get("/healthz").status_code == 200


def test_https_responses_carry_hsts(client, settings):
    settings.SECURE_HSTS_SECONDS = 31_536_000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_HSTS_PRELOAD = True
    response = client.get("/healthz", secure=True)
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"


def directives(response) -> dict[str, str]:
    return {
        part.split()[0]: " ".join(part.split()[1:])
        for part in response["Content-Security-Policy"].split(";") if part.strip()
    }


@pytest.mark.parametrize("path", ["/docs", "/admin/login/", "/v1/models", "/healthz", "/no/such/page"])
def test_every_kind_of_page_carries_the_strict_content_security_policy(client, db, path):
    policy = directives(client.get(path))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'" and policy["base-uri"] == "'none'"
    assert "unsafe" not in " ".join(policy.values())


def test_the_api_docs_page_has_no_inline_script_or_style(client, db):
    page = client.get("/docs").content.decode()
    assert "<style" not in page and " style=" not in page
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, flags=re.S)
    assert scripts and all('src="' in attributes and not body.strip() for attributes, body in scripts)
    start_up = client.get("/docs?script=")
    assert start_up.status_code == 200
    assert start_up["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle" in start_up.content.decode()
