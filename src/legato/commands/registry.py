"""The MLflow model registry: ``register``, ``promote``, ``rollback``, ``models``, ``track-estimator``, ``route``, ``deblend``."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from typing import Annotated, Optional

import typer

from legato.commands.common import AliasOption, ModelOption, ParamsOption, registry_settings
from legato.reports import write_json


def register(
    params: ParamsOption = Path("params.yaml"),
    model: ModelOption = None,
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow tracking URI.")] = None,
    promote_best: Annotated[
        bool, typer.Option("--promote-best/--no-promote", help="Offer the best version to the alias through the gates.")
    ] = True,
    report: Annotated[Optional[Path], typer.Option(help="Write the registry state (JSON) here.")] = None,
):
    """Register the trained estimators (params registry.estimators) as versions of one model, tagged."""
    from legato.registry.promotion import register_and_offer
    from legato.registry.store import DEFAULT_MODEL_NAME

    settings, client = registry_settings(params, tracking_uri, must_exist=False)
    state = register_and_offer(client, model or settings.get("name", DEFAULT_MODEL_NAME), settings, promote_best, log=typer.echo)
    if report is not None:
        write_json(report, state)


def promote_command(
    params: ParamsOption = Path("params.yaml"),
    model: ModelOption = None,
    version: Annotated[Optional[str], typer.Option(help="Candidate version (default: the newest).")] = None,
    alias: AliasOption = "champion",
    tolerance: Annotated[Optional[float], typer.Option(help="Allowed R2 shortfall per parameter (default: params).")] = None,
    subset: Annotated[Optional[str], typer.Option(help="Test subset whose metrics gate (default: params).")] = None,
    force: Annotated[bool, typer.Option(help="Promote even if a gate fails (needs --reason).")] = False,
    reason: Annotated[Optional[str], typer.Option(help="Why (recorded on the version).")] = None,
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow tracking URI.")] = None,
):
    """Move an alias (default champion) to a version that passes the gates; the previous holder stays reachable."""
    from legato.registry.promotion import promote
    from legato.registry.store import DEFAULT_MODEL_NAME, get_model

    settings, client = registry_settings(params, tracking_uri)
    name = model or settings.get("name", DEFAULT_MODEL_NAME)
    get_model(client, name)
    if version is None:
        version = str(max(int(v.version) for v in client.search_model_versions(f"name='{name}'")))
    outcome = promote(
        client,
        name,
        version,
        alias,
        subset or settings.get("gate_subset", "paper_h23"),
        float(settings.get("tolerance", 0.0)) if tolerance is None else tolerance,
        force=force,
        reason=reason,
    )
    if not outcome["promoted"]:
        typer.echo(f"error: version {version} not promoted to {alias!r}: {'; '.join(outcome['failures'])}", err=True)
        raise typer.Exit(code=1)
    forced = " (forced)" if outcome["forced"] else ""
    typer.echo(
        f"{name}@{alias} -> version {outcome['version']}{forced} (was {outcome['previous'] or 'unset'}); by {outcome['by']}: "
        f"{outcome['reason']}"
    )


def rollback(
    params: ParamsOption = Path("params.yaml"),
    model: ModelOption = None,
    alias: AliasOption = "champion",
    reason: Annotated[Optional[str], typer.Option(help="Why (recorded on the version).")] = None,
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow tracking URI.")] = None,
):
    """Give an alias back to the version that held it before the last promotion."""
    from legato.registry.promotion import rollback as run_rollback
    from legato.registry.store import DEFAULT_MODEL_NAME

    settings, client = registry_settings(params, tracking_uri)
    name = model or settings.get("name", DEFAULT_MODEL_NAME)
    outcome = run_rollback(client, name, alias, reason)
    typer.echo(f"{name}@{alias} -> version {outcome['version']} (was {outcome['previous']}); by {outcome['by']}")


def list_models(
    params: ParamsOption = Path("params.yaml"),
    model: ModelOption = None,
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow tracking URI.")] = None,
):
    """List the registered versions with their aliases, provenance and test R2."""
    from datetime import datetime

    from legato.columns import PARAMETERS
    from legato.registry.store import DEFAULT_MODEL_NAME, all_versions, get_model
    from legato.registry.versions import version_metrics

    settings, client = registry_settings(params, tracking_uri)
    name = model or settings.get("name", DEFAULT_MODEL_NAME)
    get_model(client, name)
    subset = settings.get("gate_subset", "paper_h23")
    header = ["version", "aliases", "architecture", "domain", "validation", *[f"R2 {p}" for p in PARAMETERS], "created (UTC)"]
    rows = []
    for v in all_versions(client, name):
        tags = v.tags or {}
        metrics = version_metrics(client, v, subset)
        created = datetime.fromtimestamp(v.creation_timestamp / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")
        rows.append(
            [
                v.version,
                ",".join(sorted(v.aliases or [])) or "-",
                tags.get("architecture", "?"),
                tags.get("training_domain", "?"),
                tags.get("validation", "?"),
                *[f"{metrics[p]:.4f}" if p in metrics else "-" for p in PARAMETERS],
                created,
            ]
        )
    widths = [max(len(str(r[k])) for r in [header, *rows]) for k in range(len(header))]
    typer.echo(f"{name} (test R2 on {subset})")
    for row in [header, *rows]:
        typer.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))


def track_estimator_command(
    estimator: Annotated[Path, typer.Argument(help="Published estimator folder (e.g. models/production, from dvc pull).")],
    out: Annotated[Path, typer.Option(help="Tracked copy (with run.json of this store).")],
    params: ParamsOption = Path("params.yaml"),
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow tracking URI.")] = None,
):
    """Give a published estimator a run and a logged model in this MLflow store (for evaluation, registry, serving)."""
    from legato.config import load_params
    from legato.registry.publish import track_estimator
    from legato.tracking import tracking_settings

    uri, experiment = tracking_settings(load_params(params), tracking_uri)
    summary = track_estimator(estimator, out, uri, experiment)
    how = "its training run" if summary["reused"] else "a new run"
    typer.echo(f"{estimator} -> {out}: {how} {summary['run_id']} ({summary['model_uri']})")


def route_command(
    params: ParamsOption = Path("params.yaml"),
    settings_section: Annotated[
        str, typer.Option("--section", help="params.yaml section of the settings: route, or a section whose keys override route's.")
    ] = "route",
    isolated: Annotated[
        Optional[Path], typer.Option(help="Estimator for unflagged stamps on its own PSF (default: params route.isolated).")
    ] = None,
    blended: Annotated[
        Optional[Path], typer.Option(help="Estimator for BLENDED stamps and every other PSF (default: params route.blended).")
    ] = None,
    out: Annotated[Optional[Path], typer.Option(help="Routed estimator folder, both copied in (default: params route.out).")] = None,
    disagreement_sigma: Annotated[
        Optional[float], typer.Option(help="Also route a stamp to --blended when the two disagree by more sigmas (default: params).")
    ] = None,
):
    """Combine two estimators into one that measures each stamp with the one trained for it (docs/scenes.md)."""
    from legato.config import load_params, section
    from legato.models.routing import write_routed_estimator

    settings = section(load_params(params), "route", settings_section)
    isolated = isolated or Path(settings["isolated"])
    blended = blended or Path(settings["blended"])
    out = out or Path(settings["out"])
    sigma = settings.get("disagreement_sigma") if disagreement_sigma is None else disagreement_sigma
    manifest = write_routed_estimator(isolated, blended, out, sigma)
    routes = f"{blended} for BLENDED stamps, other PSFs and disagreements > {sigma} sigma; else {isolated}"
    typer.echo(f"routed estimator {out} ({manifest.name}): {routes}")


def deblend_command(
    params: ParamsOption = Path("params.yaml"),
    settings_section: Annotated[
        str, typer.Option("--section", help="params.yaml section of the settings: deblend, or a section whose keys override deblend's.")
    ] = "deblend",
    base: Annotated[Optional[Path], typer.Option(help="Estimator shown stamps without neighbours (default: params deblend.base).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Deblended estimator folder (default: params deblend.out).")] = None,
    grow_pix: Annotated[Optional[int], typer.Option(help="Pixels the neighbours' segments are grown by (default: params).")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Write the summary (JSON) here.")] = None,
):
    """Wrap an estimator so that it measures each stamp with its neighbours removed, its BLENDED intervals calibrated (docs/scenes.md)."""
    from legato.config import load_params, section
    from legato.training.deblend import build_deblended

    loaded = load_params(params)
    settings = section(loaded, "deblend", settings_section)
    summary = build_deblended(
        base or Path(settings["base"]),
        out or Path(settings["out"]),
        settings["grow_pix"] if grow_pix is None else grow_pix,
        Path(settings["calibration"]),
        settings.get("max_stamps"),
        int(settings.get("min_rows", 20)),
    )
    if report is not None:
        write_json(report, summary)
    factors = (summary["blended_calibration"] or {}).get("68", {})
    typer.echo(
        f"deblended estimator {summary['out']} (base {summary['base']}, grow {summary['grow_pix']} px); "
        f"BLENDED 68% interval factors from {summary['calibration_blended_rows']} stamps: "
        + (" ".join(f"{k} {v:.2f}" for k, v in factors.items()) or "none (the base's)")
    )
