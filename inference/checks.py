"""A system check (run by ``migrate``, ``runserver`` and ``check``, so by ``make serve`` before gunicorn
starts): the task models' files are there and match their manifests."""

from __future__ import annotations

from django.core.checks import Error, register


@register()
def task_model_artefacts(app_configs=None, **kwargs) -> list[Error]:
    from inference.task_models import ArtefactError, artefact_folder, read_manifest

    errors = []
    for task in ("sentiment", "qa"):
        try:
            read_manifest(task, artefact_folder(task))
        except ArtefactError as error:
            errors.append(Error(str(error), id=f"inference.E00{1 if task == 'sentiment' else 2}"))
    return errors
