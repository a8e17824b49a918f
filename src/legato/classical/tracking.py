"""The classical fitter as an MLflow run beside the networks (``classical-imfit``)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from legato.classical.fitter import FitSettings

RUN_NAME = "classical-imfit"


def log_classical_run(summary: dict, settings: FitSettings, set_dir: str | Path, catalogue: str | Path, psf_path: str | Path) -> dict:
    """Log a finished set fit as an MLflow run and write ``run.json`` next to the catalogue.

    The run carries the same tags as the network runs (method, training
    domain, data version, git revision) and logs its speed under the
    networks' metric name ``predict_stamps_per_second``, so the comparison
    view lines the three methods up; ``legato evaluate`` later adds the
    ``test_r2_*`` metrics through ``run.json``.

    Parameters
    ----------
    summary : dict
        What :func:`legato.classical.run.fit_stamp_set` returned.
    settings : FitSettings
        The fit settings (logged as parameters).
    set_dir, catalogue, psf_path : str or Path
        The fitted stamp set, the output catalogue and the PSF image.

    Returns
    -------
    dict
        ``summary`` with ``run_id`` added.
    """
    import mlflow

    from legato.tracking import provenance_tags

    catalogue = Path(catalogue)
    with mlflow.start_run(run_name=RUN_NAME) as run:
        mlflow.set_tags(
            {
                "architecture": "imfit-sersic",
                "method": "classical",
                "training_domain": "none",
                **provenance_tags(str(set_dir)),
            }
        )
        mlflow.log_params({**asdict(settings), "psf": str(psf_path), "n_fitted": summary["fitted"], "workers": summary["workers"]})
        metrics = {f"flagged_{name}": count for name, count in summary["flagged"].items()}
        metrics["median_fit_seconds"] = summary["median_fit_seconds"]
        if summary.get("fits_per_second"):
            metrics["predict_stamps_per_second"] = summary["fits_per_second"]
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(catalogue), artifact_path="catalogue")
    result = {**summary, "run_id": run.info.run_id, "run_name": RUN_NAME}
    (catalogue.parent / "run.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
