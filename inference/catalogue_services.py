"""Changing the model catalogue: one place for the admin and the API, each change audited and announced.

Every save or delete of an entry (here, in the admin, or from a shell) bumps ``CatalogueVersion`` in the same
transaction (signals below), which is what every worker polls. ``CatalogueChange`` records who changed what;
the admin's own LogEntry is written beside it for admin edits.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import F
from django.db.models.signals import post_delete, post_save

from inference.catalogue import catalogue_changed
from inference.models import CatalogueChange, CatalogueEntry, CatalogueVersion
from inference.secrets_box import secret_encrypt

AUDITED_FIELDS = ("name", "alias_of", "urls", "upstream_model", "tokenizer", "context_window", "defaults",
                  "api_key_env", "enabled")


def _audited(entry: CatalogueEntry) -> dict:
    values = {name: getattr(entry, name) for name in AUDITED_FIELDS}
    values["api_key"] = "stored" if entry.api_key_encrypted else "none"  # never the key itself
    return values


def _actor(user) -> str:
    return user.get_username() if user is not None else "system"


@transaction.atomic
def catalogue_entry_save(*, entry: CatalogueEntry, user, via: str, api_key: str | None = None,
                         clear_api_key: bool = False) -> CatalogueEntry:
    """Save ``entry`` (new or changed). ``api_key``: a new upstream key to store encrypted (it replaces an
    environment variable reference); ``clear_api_key`` forgets the stored one."""
    before = _audited(CatalogueEntry.objects.get(pk=entry.pk)) if entry.pk else None
    if api_key:
        entry.api_key_encrypted, entry.api_key_env = secret_encrypt(api_key), ""
    elif clear_api_key or entry.api_key_env:
        entry.api_key_encrypted = ""
    entry.clean()
    entry.save()
    after = _audited(entry)
    changes = {name: [None if before is None else before[name], value] for name, value in after.items()
               if before is None or before[name] != value}
    if api_key and before is not None and before["api_key"] == "stored":
        changes["api_key"] = ["stored", "replaced"]
    CatalogueChange.objects.create(user=user, actor=_actor(user), via=via,
                                   action="added" if before is None else "changed", model_name=entry.name,
                                   changes=changes)
    return entry


@transaction.atomic
def catalogue_entry_delete(*, entry: CatalogueEntry, user, via: str) -> None:
    CatalogueChange.objects.create(user=user, actor=_actor(user), via=via, action="removed", model_name=entry.name,
                                   changes={name: [value, None] for name, value in _audited(entry).items()})
    entry.delete()


def _bump_version(**_) -> None:
    if not CatalogueVersion.objects.filter(pk=1).update(number=F("number") + 1):
        CatalogueVersion.objects.get_or_create(pk=1, defaults={"number": 1})
    catalogue_changed()  # this process at once (other threads may read the old rows until the commit)
    transaction.on_commit(catalogue_changed)


def catalogue_signals_connect() -> None:
    post_save.connect(_bump_version, sender=CatalogueEntry, dispatch_uid="catalogue-version-save")
    post_delete.connect(_bump_version, sender=CatalogueEntry, dispatch_uid="catalogue-version-delete")
