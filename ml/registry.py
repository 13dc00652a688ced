"""The MLflow model registry for the fraud scorer: which version serves, and loading it.

One registered model (``mlflow.model_name``); the serving version is the one
under the alias ``mlflow.alias`` (champion). ``champion_version`` is one
registry call, cheap enough for every micro-batch boundary; ``load_champion``
loads the scorer only when needed. Neither raises when nothing is registered
yet: they return None, and the caller marks rows unscored.
"""

from __future__ import annotations

import logging

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ecom.settings import Settings
from ml.model import FraudScorer

log = logging.getLogger(__name__)


def use_tracking(settings: Settings) -> MlflowClient:
    """Point MLflow (tracking and registry) at the configured store and return a client for it."""
    uri = settings.mlflow.tracking_uri
    if uri.startswith("sqlite:///"):
        from pathlib import Path

        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _missing(exc: MlflowException) -> bool:
    return exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE")


def alias_version(settings: Settings, alias: str) -> str | None:
    """The registry version under ``alias`` of ``mlflow.model_name``, or None if there is none."""
    client = use_tracking(settings)
    try:
        return str(client.get_model_version_by_alias(settings.mlflow.model_name, alias).version)
    except MlflowException as exc:
        if _missing(exc):
            return None
        raise


def champion_version(settings: Settings) -> str | None:
    """The version serving now (one registry call), or None when no model is registered."""
    return alias_version(settings, settings.mlflow.alias)


def load_version(settings: Settings, version: str) -> FraudScorer:
    """The scorer of one registered version."""
    use_tracking(settings)
    model = mlflow.pyfunc.load_model(f"models:/{settings.mlflow.model_name}/{version}")
    return model.unwrap_python_model().scorer


def load_alias(settings: Settings, alias: str) -> tuple[FraudScorer, str] | None:
    """(scorer, version) under ``alias``, or None when nothing is registered under it."""
    version = alias_version(settings, alias)
    if version is None:
        return None
    return load_version(settings, version), version


def load_champion(settings: Settings) -> tuple[FraudScorer, str] | None:
    """(scorer, registry version) of the champion, or None when no model is registered yet."""
    try:
        found = load_alias(settings, settings.mlflow.alias)
    except MlflowException as exc:
        if not _missing(exc):
            raise
        found = None
    if found is None:
        log.warning(
            "no fraud model registered as %s@%s yet: rows stay unscored until `ecom train` registers one",
            settings.mlflow.model_name,
            settings.mlflow.alias,
        )
    return found
