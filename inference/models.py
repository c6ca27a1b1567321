"""The model catalogue as data: remote models and aliases, edited at run time in the admin or the API.

``SLUICE_REMOTE_MODELS`` seeds the catalogue (the base layer); an entry here of the same name replaces that
model, a disabled one hides it. Every change bumps ``CatalogueVersion``, which each worker polls (see
``inference.catalogue``). Upstream keys are kept encrypted (``inference.secrets_box``) or named by an
environment variable, and never shown back.
"""

from __future__ import annotations

from urllib.parse import urlparse

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from platform.env import REMOTE_TOKENIZERS, sampling_defaults_problem


class CatalogueEntry(models.Model):
    name = models.CharField(max_length=200, unique=True, help_text="The model id clients send as \"model\".")
    alias_of = models.CharField(
        max_length=200, blank=True,
        help_text="Set: this name is an alias of that served model (local or remote) and the fields below are unused.")
    urls = models.JSONField(default=list, blank=True,
                            help_text='Upstream base URLs, as a JSON list: ["http://gpu1:8000/v1", ...]')
    upstream_model = models.CharField(max_length=200, blank=True, help_text="The name upstream (default: the name).")
    tokenizer = models.CharField(max_length=10, default="none", choices=[(t, t) for t in REMOTE_TOKENIZERS])
    context_window = models.PositiveIntegerField(null=True, blank=True)
    defaults = models.JSONField(default=dict, blank=True,
                                help_text='Sampling defaults, e.g. {"temperature": 0.7, "top_p": 0.9}')
    api_key_encrypted = models.TextField(blank=True, editable=False)
    api_key_env = models.CharField(
        max_length=100, blank=True,
        help_text="Or: the name of an environment variable that holds the upstream key (on every host).")
    enabled = models.BooleanField(default=True, help_text="Off: refused as an unknown model on every worker.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "catalogue model"

    def __str__(self) -> str:
        return self.name

    @property
    def is_alias(self) -> bool:
        return bool(self.alias_of)

    @property
    def api_key_set(self) -> bool:
        return bool(self.api_key_encrypted or self.api_key_env)

    def clean(self) -> None:
        errors = {}
        if not self.name.strip() or "/" in self.name:
            errors["name"] = "A model id must be non-empty and contain no '/'."
        elif settings.SLUICE_LOCAL_MODEL and self.name == settings.SLUICE_MODEL_ID:
            errors["name"] = "This is the local model's id (SLUICE_MODEL_ID)."
        if self.alias_of:
            if self.alias_of == self.name:
                errors["alias_of"] = "An alias cannot point at itself."
            elif CatalogueEntry.objects.filter(name=self.alias_of).exclude(alias_of="").exists():
                errors["alias_of"] = "An alias must point at a served model, not at another alias."
        else:
            if not isinstance(self.urls, list) or not self.urls:
                errors["urls"] = "A remote model needs a JSON list of upstream base URLs."
            else:
                for url in self.urls:
                    parsed = urlparse(url) if isinstance(url, str) else None
                    if parsed is None or parsed.scheme not in {"http", "https"} or not parsed.hostname:
                        errors["urls"] = f"{url!r} is not an http(s) URL."
            problem = sampling_defaults_problem(self.defaults)
            if problem:
                errors["defaults"] = f"Defaults {problem}."
            if self.api_key_env and not self.api_key_env.replace("_", "").isalnum():
                errors["api_key_env"] = "An environment variable name: letters, digits and underscores."
        if errors:
            raise ValidationError(errors)


class CatalogueVersion(models.Model):
    """One row whose number grows with every change to the catalogue; workers poll it."""

    number = models.BigIntegerField(default=0)


class CatalogueChange(models.Model):
    """Who changed which catalogue entry, when, how, and which fields (values, never an upstream key)."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor = models.CharField(max_length=200, help_text="The user's name as it was then.")
    via = models.CharField(max_length=10, choices=[("admin", "admin"), ("api", "API"), ("other", "other")])
    action = models.CharField(max_length=10, choices=[(a, a) for a in ("added", "changed", "removed")])
    model_name = models.CharField(max_length=200)
    changes = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.actor} {self.action} {self.model_name}"
