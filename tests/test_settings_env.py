import pytest
from django.core.exceptions import ImproperlyConfigured

from platform.env import cache_from_url, database_from_url, env_bool, env_int


def test_it_reads_postgres_urls():
    config = database_from_url("postgres://sluice:pw@127.0.0.1:5432/sluice_db")
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["USER"], config["PASSWORD"], config["HOST"], config["PORT"], config["NAME"]) == (
        "sluice", "pw", "127.0.0.1", "5432", "sluice_db",
    )


def test_it_reads_sqlite_and_redis_urls():
    assert database_from_url("sqlite:////tmp/x.sqlite3")["NAME"] == "/tmp/x.sqlite3"
    assert cache_from_url("redis://127.0.0.1:6379/2")["BACKEND"] == "django_redis.cache.RedisCache"
    assert cache_from_url("locmem://")["BACKEND"].endswith("LocMemCache")


@pytest.mark.parametrize("url", ["mysql://x/y", "nonsense", "sqlite://"])
def test_it_fails_loudly_on_bad_database_urls(url):
    with pytest.raises(ImproperlyConfigured):
        database_from_url(url)


def test_it_fails_loudly_on_bad_numbers_and_booleans(monkeypatch):
    monkeypatch.setenv("X_INT", "twelve")
    with pytest.raises(ImproperlyConfigured, match="X_INT"):
        env_int("X_INT", 1)
    monkeypatch.setenv("X_INT", "-5")
    with pytest.raises(ImproperlyConfigured, match=">= 0"):
        env_int("X_INT", 1)
    monkeypatch.setenv("X_BOOL", "maybe")
    with pytest.raises(ImproperlyConfigured, match="X_BOOL"):
        env_bool("X_BOOL", False)
