"""Gated promotion of a registry alias, with an audit trail and rollback.

A candidate takes an alias (``champion`` by default) only when, for every
parameter, its test R² is at least the current holder's minus a tolerance, and
the validation of its evaluation data passed. ``force`` overrides with a
recorded reason. The alias moves in one registry call; the previous holder
keeps the alias ``<alias>-previous`` and the model's tag ``alias_history.<alias>``
lists every holder, which :func:`rollback` walks back.
"""

from __future__ import annotations

import getpass
import json
import os
from datetime import UTC, datetime

from legato.columns import PARAMETERS
from legato.errors import ConfigError
from legato.registry.store import get_model, get_version, version_by_alias
from legato.registry.versions import version_metrics


def _history(client, name: str, alias: str) -> list[str]:
    tags = get_model(client, name).tags or {}
    return json.loads(tags.get(f"alias_history.{alias}", "[]"))


def _actor() -> str:
    return os.environ.get("LEGATO_USER") or getpass.getuser()


def gate_failures(candidate: dict, holder: dict | None, tolerance: float, validation: str | None) -> list[str]:
    """Reasons a candidate may not take the alias (empty when it passes).

    Parameters
    ----------
    candidate, holder : dict
        Test R² by parameter of the candidate and of the current alias holder (None: no holder).
    tolerance : float
        How far below the holder a candidate's R² may be.
    validation : str or None
        The candidate's evaluation-data validation status (``passed`` required).
    """
    failures = []
    if validation != "passed":
        failures.append(f"validation of its evaluation data is {validation or 'missing'}, not passed")
    missing = [p for p in PARAMETERS if p not in candidate]
    if missing:
        failures.append(f"no test metrics for {', '.join(missing)} (run legato evaluate)")
    for p in PARAMETERS:
        if holder is not None and p in candidate and p in holder and candidate[p] < holder[p] - tolerance:
            failures.append(f"R2 {p} {candidate[p]:.4f} < champion {holder[p]:.4f} - {tolerance:g}")
    return failures


def _move_alias(client, name: str, alias: str, version: str, previous: str | None, history: list[str], action: dict) -> None:
    if previous is not None:
        client.set_registered_model_alias(name, f"{alias}-previous", previous)
    client.set_registered_model_alias(name, alias, version)  # one registry call: the alias moves atomically
    client.set_registered_model_tag(name, f"alias_history.{alias}", json.dumps(history))
    client.set_registered_model_tag(name, f"last_action.{alias}", json.dumps(action))
    for key, value in action.items():
        client.set_model_version_tag(name, version, f"{action['action']}.{key}", str(value))


def promote(
    client, name: str, version: str | int, alias: str, subset: str, tolerance: float = 0.0, force: bool = False, reason: str | None = None
) -> dict:
    """Move ``alias`` to ``version`` if it passes the gates (or ``force`` with a reason).

    Returns
    -------
    dict
        What happened: ``promoted`` (bool), ``failures``, the previous holder, who, when, why.

    Raises
    ------
    ConfigError
        Unknown model or version, or ``force`` without a reason.
    """
    candidate = get_version(client, name, version)
    if force and not reason:
        raise ConfigError("--force needs --reason: a forced promotion must say why")
    holder = version_by_alias(client, name, alias, required=False)
    if holder is not None and holder.version == candidate.version:
        return {"promoted": False, "failures": [f"version {candidate.version} already holds {alias!r}"], "previous": holder.version}
    failures = gate_failures(
        version_metrics(client, candidate, subset),
        version_metrics(client, holder, subset) if holder is not None else None,
        tolerance,
        (candidate.tags or {}).get("validation"),
    )
    result = {
        "model": name,
        "version": candidate.version,
        "alias": alias,
        "previous": holder.version if holder else None,
        "failures": failures,
    }
    if failures and not force:
        return {**result, "promoted": False}
    action = {
        "action": "promotion",
        "by": _actor(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "reason": reason or ("first holder of the alias" if holder is None else f"passes the gates on {subset} (tolerance {tolerance:g})"),
        "forced": bool(force and failures),
        "overridden_failures": "; ".join(failures) if force else "",
        "previous": holder.version if holder else "",
    }
    history = [v for v in _history(client, name, alias) if v != candidate.version] + [candidate.version]
    if holder is not None and holder.version not in history:
        history.insert(-1, holder.version)
    _move_alias(client, name, alias, candidate.version, holder.version if holder else None, history, action)
    return {**action, **result, "promoted": True}


def rollback(client, name: str, alias: str, reason: str | None = None) -> dict:
    """Give ``alias`` back to its previous holder.

    Raises
    ------
    ConfigError
        When the alias has no earlier holder.
    """
    current = version_by_alias(client, name, alias)
    history = _history(client, name, alias)
    if current.version in history:
        history = history[: history.index(current.version)]
    if not history:
        raise ConfigError(f"alias {alias!r} of {name!r} has no previous version to roll back to")
    target = history[-1]
    get_version(client, name, target)
    action = {
        "action": "rollback",
        "by": _actor(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "reason": reason or f"rollback from version {current.version}",
        "previous": current.version,
    }
    earlier = history[-2] if len(history) > 1 else None
    if earlier is None:
        client.delete_registered_model_alias(name, f"{alias}-previous")
    _move_alias(client, name, alias, target, earlier, history, action)
    return {"model": name, "alias": alias, "version": target, **action}


def best_gated(client, versions: dict, labels, subset: str) -> str | None:
    """The label among ``labels`` whose version has every gate metric ``test_r2_*_<subset>`` and the largest sum of them.

    Returns None when none of them has the gate metrics.
    """
    gated = {k: version_metrics(client, versions[k], subset) for k in labels if k in versions}
    score = {k: sum(m.values()) for k, m in gated.items() if len(m) == len(PARAMETERS)}
    return max(score, key=score.get) if score else None


def offer_domain_alias(client, name: str, versions: dict, domain: dict) -> dict:
    """Offer a domain's best candidate (an adapted estimator) to the domain's alias through the gates on that domain's test set.

    The alias starts with ``domain['incumbent']`` (the simulation-trained estimator) when unset;
    of ``domain['candidates']``, the one with the largest sum of gate R² on ``domain['subset']`` is offered,
    and must then match or beat the holder on every parameter.
    """
    alias, subset, tolerance = domain["alias"], domain.get("subset", "realistic_a"), float(domain.get("tolerance", 0.0))
    if version_by_alias(client, name, alias, required=False) is None and domain.get("incumbent") in versions:
        promote(client, name, versions[domain["incumbent"]].version, alias, subset, tolerance)
    best = best_gated(client, versions, domain["candidates"], subset)
    if best is None:
        raise ConfigError(f"no candidate of {alias!r} ({', '.join(domain['candidates'])}) has the gate metrics test_r2_*_{subset}")
    outcome = promote(client, name, versions[best].version, alias, subset, tolerance)
    holder = version_by_alias(client, name, alias, required=False)
    summary = f"promoted {best}" if outcome["promoted"] else f"kept; {best} not promoted: {'; '.join(outcome['failures'])}"
    return {
        "alias": alias,
        "subset": subset,
        "holder": holder.version if holder else None,
        "offered": best,
        "promoted": outcome["promoted"],
        "failures": outcome["failures"],
        "summary": summary,
    }


def register_and_offer(client, name: str, settings: dict, promote_best: bool = True, log=print) -> dict:
    """Register every estimator of ``settings`` (params.yaml ``registry``) and offer the best to the alias through the gates.

    Only versions evaluated on the simulated test set (every gate metric
    ``test_r2_*_<gate_subset>`` present) are offered; the best is the one with
    the largest sum of gate R². The domain alias (``domain_alias``), when set,
    is offered its best candidate the same way (:func:`offer_domain_alias`).

    Parameters
    ----------
    client : mlflow.MlflowClient
        The registry.
    name : str
        Registered model name.
    settings : dict
        ``estimators`` (label -> folder), ``alias``, ``gate_subset``, ``tolerance``, ``domain_alias``.
    promote_best : bool
        Offer the best version to the alias (else only register).
    log : callable
        One line per registered version and per alias outcome.

    Returns
    -------
    dict
        ``model``, ``versions`` (label -> version) and, when offered, ``alias``, ``holder``, ``offered``,
        ``promoted`` and ``domain_alias``.

    Raises
    ------
    ConfigError
        When no estimator is listed, a folder is missing, or no version has the gate metrics.
    """
    from pathlib import Path

    from legato.registry.store import DEFAULT_ALIAS
    from legato.registry.versions import register_estimator

    estimators = settings.get("estimators") or {}
    if not estimators:
        raise ConfigError("params.yaml registry.estimators lists no estimator folder")
    subset, tolerance = settings.get("gate_subset", "paper_h23"), float(settings.get("tolerance", 0.0))
    versions = {}
    for label, folder in estimators.items():
        if not Path(folder).is_dir():
            raise ConfigError(f"estimator {label!r}: {folder} does not exist")
        version, created = register_estimator(client, name, folder)
        versions[label] = version
        log(f"{name} version {version.version}: {label} ({'registered' if created else 'already registered'})")
    state = {"model": name, "versions": {k: v.version for k, v in versions.items()}}
    if promote_best:
        alias = settings.get("alias", DEFAULT_ALIAS)
        best = best_gated(client, versions, versions, subset)
        if best is None:
            raise ConfigError(f"no registered version has the gate metrics test_r2_*_{subset}: run legato evaluate first")
        outcome = promote(client, name, versions[best].version, alias, subset, tolerance)
        holder = version_by_alias(client, name, alias, required=False)
        log(
            f"{alias}: version {holder.version if holder else 'none'}"
            + (f" (promoted {best})" if outcome["promoted"] else f" (kept; {best} not promoted: {'; '.join(outcome['failures'])})")
        )
        state.update({"alias": alias, "holder": holder.version if holder else None, "offered": best, "promoted": outcome["promoted"]})
    domain = settings.get("domain_alias")
    if promote_best and domain and set(domain.get("candidates") or ()) & set(versions):
        state["domain_alias"] = offer_domain_alias(client, name, versions, domain)
        log(f"{domain['alias']}: version {state['domain_alias']['holder']} ({state['domain_alias']['summary']})")
    return state
