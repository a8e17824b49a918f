"""Turn a finished production checkpoint into a published estimator.

Calibrates the uncertainties and measures the input range on validation stamps
drawn over the training depths (galaxies the network never trained on),
writes the estimator folder (network without optimizer state, scaler,
manifest, model card) atomically and logs it to the training's MLflow run as
a servable pyfunc model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from legato.io.folders import publish_folder
from legato.tracking import training_domain
from legato.training.noise_aware import ProductionConfig, read_state

MODEL_CARD = "MODEL_CARD.md"
CALIBRATION_MAG_EDGES = (20.0, 21.0, 22.0, 23.0, 24.0)  # predicted-magnitude bins of the uncertainty calibration
CALIBRATION_NOISE_EDGES = (0.4, 0.7, 1.4)  # measured sky sigma / calibrated one: bins of the uncertainty calibration


def calibration_set(config: ProductionConfig, data_dir: Path):
    """Validation stamps at random training depths (seeded apart from the monitoring set): ``(stamps, psf inputs or
    None, labels, noise model, header)``.

    ``config.calibration_stamps`` beyond the number of validation galaxies repeat
    them with other depths, symmetries and noise. A scene recipe's stamps are
    crowded scenes like its training batches (its neighbours, sky residuals and
    PSF inputs); their magnitudes are on the reference zeropoint the network learns.
    """
    from legato.io.stamps import load_split
    from legato.models.noise_aware import reference_band_mag
    from legato.symmetry import dihedral
    from legato.training.noise_aware import ISOLATED, noiseless_set_noise, scene_library
    from legato.training.noisy_batches import noisy_copies
    from legato.training.scenes import scene_stamps

    models, labels, header = load_split(data_dir / "val")
    if "zeropoint" in labels.colnames:  # a multi-band set: magnitudes on the reference zeropoint, as in training
        labels["mag"] = reference_band_mag(labels["mag"], labels["zeropoint"])
    noise = noiseless_set_noise(header, data_dir)
    rows = np.arange(config.calibration_stamps) % len(models)
    rng = np.random.default_rng([config.seed, 2])
    if config.scenes is not None or config.psf_input:
        library = scene_library(models, np.zeros((len(models), 1)), labels, config)
        stamps, _ = scene_stamps(library, rows, config.scenes or ISOLATED, noise, config.depths, rng)
        return stamps, None if library.extra is None else library.extra[rows], labels[rows], noise, header
    scale, correlation = config.depths.draw(len(rows), rng)
    stamps = noisy_copies(dihedral(models[rows], rng.integers(0, 8, len(rows))), noise, scale, correlation, seed=config.seed + 2)
    return stamps, None, labels[rows], noise, header


def calibrate(model, scaler, stamps: np.ndarray, labels, noise, psf=None, split_blends: bool = False) -> tuple:
    """The network's outputs on the calibration stamps, the binned uncertainty factors, and each stamp's measured sky sigma.

    With ``split_blends`` the stamps the blend detector flags (as every inference path will,
    :func:`legato.io.stamp_checks.blend_measurements`) are calibrated apart from the isolated ones.
    """
    from legato.columns import SERSIC_COLUMNS
    from legato.io.stamp_checks import blend_measurements
    from legato.models.noise_aware import N_TARGETS, forward_in_batches, gaussian_sigma
    from legato.models.targets import to_network_space
    from legato.models.uncertainty import binned_calibration_scales, split_calibration

    outputs = forward_in_batches(model, stamps, psf=psf)
    mean = outputs[:, :N_TARGETS] * np.array(scaler.std) + np.array(scaler.mean)
    sigma = gaussian_sigma(outputs[:, N_TARGETS : 2 * N_TARGETS], scaler.std)
    noise_ratio = np.exp(outputs[:, 2 * N_TARGETS].astype(np.float64))
    truth = to_network_space(labels, SERSIC_COLUMNS)
    arguments = (truth, mean, sigma, mean[:, 0], CALIBRATION_MAG_EDGES, noise_ratio, CALIBRATION_NOISE_EDGES)
    if split_blends:
        scales = split_calibration(*arguments, blend_measurements(stamps)[1])
    else:
        scales = binned_calibration_scales(*arguments)
    return outputs, scales, noise.sky_sigma * noise_ratio


def write_estimator(
    staging: Path, model, scaler, stamp_size: int, noise, scales: dict, input_range: dict, training: dict, history: list, psf_input=None
):
    """The estimator folder: network (no optimizer state), scaler, manifest (with the ``psf_input`` bands of a
    PSF-conditioned network) and model card."""
    from legato.columns import SERSIC_COLUMNS
    from legato.models.estimator import write_manifest

    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save(staging / "network.keras")
    scaler.to_json(staging / "network_scaler.json")
    write_manifest(
        staging,
        [{"model": "network.keras", "scaler": "network_scaler.json", "targets": list(SERSIC_COLUMNS), "head": "gaussian"}],
        stamp_size=stamp_size,
        kind="production",
        architecture="production",
        mode="multi_output",
        reference_sigma=noise.sky_sigma,
        uncertainty=scales,
        input_range=input_range,
        training=training,
        **({"psf_input": psf_input} if psf_input else {}),
    )
    (staging / MODEL_CARD).write_text(model_card(training, scales, input_range, history, psf_input))


def log_finalized(
    state, r2: dict, scales: dict, staging: Path, example: np.ndarray, tracking_uri: str | None, experiment: str, domain: str
):
    """Log the validation R², the calibration factors, the ``training_domain`` tag and the estimator (as the pyfunc
    model) to the training's run."""
    import mlflow

    from legato.columns import SERSIC_COLUMNS
    from legato.serving.pyfunc import log_estimator_model
    from legato.tracking import start_tracking
    from legato.training.noise_aware import resume_or_start_run

    start_tracking(tracking_uri, experiment)
    with resume_or_start_run(state.run_id) as run:
        metrics = {f"val_r2_{p}": float(v) for p, v in r2.items() if np.isfinite(v)}
        metrics.update(
            {
                f"uncertainty_scale{k}_{t}": float(np.median(np.asarray(scales[k])[..., i]))
                for k in ("68", "95")
                for i, t in enumerate(SERSIC_COLUMNS)
            }
        )
        metrics.update({"train_seconds": state.seconds, "steps": state.step})
        mlflow.log_metrics(metrics)
        mlflow.set_tag("training_domain", domain)
        mlflow.log_artifact(str(staging / MODEL_CARD))
        info = log_estimator_model(staging, example)
    return run, info, metrics


def finalize_production(
    config: ProductionConfig,
    data_dir: str | Path,
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    progress: dict,
    tracking_uri: str | None = None,
    experiment: str = "legato",
) -> dict:
    """Write the production estimator from the finished checkpoint and log it to MLflow.

    Returns
    -------
    dict
        Run id, model URI, steps, training seconds, calibration factors, validation R², input range.
    """
    import keras

    from legato.conventions import BAND
    from legato.io.stamps import read_labels
    from legato.models.input_range import InputRange
    from legato.models.noise_aware import N_TARGETS, reference_band_mag
    from legato.models.psf_condition import REFERENCE_ZEROPOINT, training_bands
    from legato.models.targets import TargetScaler, physical_columns
    from legato.stats import r2_table
    from legato.tracking import dvc_output_hash, git_revision
    from legato.training.noise_aware import CHECKPOINT_MODEL

    data_dir, checkpoint_dir, out_dir = Path(data_dir), Path(checkpoint_dir), Path(out_dir)
    state = read_state(checkpoint_dir)
    model = keras.saving.load_model(checkpoint_dir / CHECKPOINT_MODEL, compile=False)
    scaler = TargetScaler.from_json(checkpoint_dir / "scaler.json")
    stamps, psf, labels, noise, header = calibration_set(config, data_dir)
    scenes = config.scenes is not None
    outputs, scales, sky_sigma = calibrate(model, scaler, stamps, labels, noise, psf=psf, split_blends=scenes)
    train_labels = read_labels(data_dir / "train")
    train_mags = np.asarray(train_labels["mag"], dtype=float)
    psf_input = None
    zeropoint = float(header["MAGZPT"])
    if config.psf_input:
        train_mags = reference_band_mag(train_mags, train_labels["zeropoint"])
        psf_input = {"reference_zeropoint": REFERENCE_ZEROPOINT, "default_band": BAND, "bands": training_bands(train_labels)}
        zeropoint = REFERENCE_ZEROPOINT
    mag_range = (float(np.min(train_mags)), float(np.max(train_mags)))
    input_range = InputRange.measure(stamps, sky_sigma, config.depths.sky_scale, noise.sky_sigma, mag_range, zeropoint)
    r2 = r2_table(labels, physical_columns(scaler.inverse(outputs[:, :N_TARGETS])))
    training = {
        "data": str(data_dir),
        "data_version": dvc_output_hash(str(data_dir)),
        "git_revision": git_revision(),
        "steps": state.step,
        "train_seconds": state.seconds,
        "recipe": config.as_dict(),
        "calibration_stamps": len(stamps),
        "reference_sigma": noise.sky_sigma,
        "exposure_time": noise.exposure_time,
        "magnitude_range": list(mag_range),
        "validation_r2_training_depths": {p: round(float(v), 5) for p, v in r2.items()},
    }
    staging = out_dir.with_name(out_dir.name + ".partial")
    write_estimator(staging, model, scaler, stamps.shape[1], noise, scales, input_range.as_dict(), training, state.history, psf_input)
    run, info, metrics = log_finalized(state, r2, scales, staging, stamps[:2], tracking_uri, experiment, training_domain(config.as_dict()))
    summary = {
        "run_id": run.info.run_id,
        "model_uri": info.model_uri,
        "architecture": "production",
        "mode": "multi_output",
        "steps": state.step,
        "train_seconds": state.seconds,
        "uncertainty_scales": scales,
        "input_range": input_range.as_dict(),
        **{k: round(v, 5) for k, v in metrics.items() if k.startswith("val_r2_")},
    }
    (staging / "run.json").write_text(json.dumps(summary, indent=2))
    publish_folder(staging, out_dir)
    return summary


def calibration_rows(scales: dict) -> str:
    """Markdown rows of the binned calibration factors (noise bin, magnitude bin)."""
    mags = ["-inf", *(f"{e:g}" for e in scales["mag_edges"]), "inf"]
    noises = ["0", *(f"{e:g}" for e in scales["noise_edges"]), "inf"]
    return "\n".join(
        f"| {noises[k]} - {noises[k + 1]} | {mags[b]} - {mags[b + 1]} | {', '.join(f'{v:.2f}' for v in scales['68'][k][b])} "
        f"| {', '.join(f'{v:.2f}' for v in scales['95'][k][b])} |"
        for k in range(len(scales["68"]))
        for b in range(len(scales["68"][k]))
    )


def scene_lines(recipe: dict, psf_input: dict | None) -> tuple[str, str]:
    """The model card's training-data lines on bands and PSFs, and on neighbours and sky residuals."""
    if not psf_input:
        bands = "the project PSF (WFC3/IR F160W)."
    else:
        rows = ", ".join(
            f'{band} (zeropoint {entry["zeropoint"]:.4f}; PSF FWHM {entry["fwhm_range"][0]:.3f}-{entry["fwhm_range"][1]:.3f}", '
            f'r50 {entry["r50_range"][0]:.3f}-{entry["r50_range"][1]:.3f}")'
            for band, entry in psf_input["bands"].items()
        )
        bands = (
            f"in every band of {rows}; each model drawn with its band's PSF dilated by up to the jitter, and the PSF's "
            f"FWHM and r50 given to the network as a second input. Magnitudes are learnt on the zeropoint "
            f"{psf_input['reference_zeropoint']:.4f} and the band's own zeropoint is applied outside the network."
        )
    scene = recipe.get("scenes")
    if not scene:
        return bands, "- Isolated galaxies: no neighbours, no sky residuals."
    crowd = (
        f"- Crowded scenes composed on the fly: with probability {scene['neighbour_probability']}, 1-{scene['max_neighbours']} "
        f"neighbours of the same band at {scene['distance_pix'][0]:g}-{scene['distance_pix'][1]:g} px; constant and linear sky "
        f"residuals of sigma {scene['sky_offset_sigma']} and {scene['sky_gradient_sigma']} sky sigmas; targets drawn with "
        f"probability density(mag)^-{scene['bright_flattening']} (bright galaxies oversampled). The target's true "
        "parameters are the labels."
    )
    return bands, crowd


def model_card(training: dict, scales: dict, input_range: dict, history: list, psf_input: dict | None = None) -> str:
    """The estimator's model card (Markdown): data, recipe, ranges, calibration, learning curve, limits."""
    recipe = training["recipe"]
    curve = "\n".join(
        f"| {h['step']} | {h['seconds']:.0f} | {h.get('val_r2_mag', float('nan')):.4f} | {h.get('val_r2_re', float('nan')):.4f} "
        f"| {h.get('val_r2_n', float('nan')):.4f} | {h.get('val_r2_ellipticity', float('nan')):.4f} |"
        for h in history[:: max(1, len(history) // 14)] + history[-1:]
    )
    bands, crowd = scene_lines(recipe, psf_input)
    blended = ""
    if "blended" in scales:
        blended = f"""
Stamps the blend detector flags `BLENDED` ({100 * scales["blended_fraction"]:.0f}% of the calibration scenes) are calibrated
apart (the table above is the isolated stamps'):

| noise ratio | predicted mag | 68% factors | 95% factors |
|---|---|---|---|
{calibration_rows(scales["blended"])}
"""
    band_line = "in the bands below" if psf_input else "of HST/WFC3 F160W"
    psf_limit = (
        "- Bands and PSFs: those listed under Training data; a PSF outside every band's range is flagged INPUT_OUT_OF_RANGE."
        if psf_input
        else "- One PSF (WFC3/IR F160W)."
    )
    return f"""# Model card: legato production estimator

Single-Sérsic parameters (total AB magnitude, semi-major half-light radius in arcsec,
Sérsic index, ellipticity) of a 64x64 stamp {band_line} at 0.06"/px, in electrons/s,
with calibrated per-galaxy uncertainties. Architecture and conventions: docs/production.md{", docs/scenes.md" if psf_input else ""}.

## Training data
- Noiseless single-Sérsic models of `{training["data"]}` (DVC version `{training["data_version"]}`, code
  `{training["git_revision"]}`; `legato simulate --noiseless`; parameters
  from the van der Wel et al. 2014 3D-HST/CANDELS GALFIT catalogue, magnitudes
  {training["magnitude_range"][0]:.2f}-{training["magnitude_range"][1]:.2f}, semi-major re <= 1"), {bands}
{crowd}
- Noise drawn afresh at every step: sky sigma {recipe["depths"]["sky_scale"][0]}-{recipe["depths"]["sky_scale"][1]} x
  the calibrated {training["reference_sigma"]:.6f} e-/s/px (log-uniform), white or correlated by a Gaussian kernel of
  {", ".join(str(c) for c in recipe["depths"]["correlation_pix"])} px; source Poisson noise at the matching exposure.
- Random flips and 90-degree rotations.

## Recipe
- {training["steps"]} Adam steps of {recipe["batch_size"]} stamps, learning rate {recipe["learning_rate"]} with cosine decay
  to zero; MSE on standardised [mag, ln re, ln n, ellipticity] for the means; Gaussian NLL for the
  separate (gradient-stopped) log-variance branch. {training["train_seconds"] / 60:.0f} min on 2 CPU cores.

## Uncertainty calibration
On {training["calibration_stamps"]} validation stamps at random training depths, per bin of measured noise (sky sigma
over the calibrated one) and of predicted magnitude, the factors that turn the predicted sigma of
mag, ln re, ln n, ellipticity into the 68.27% (`*_err`) and 95% (`*_err95`) half-widths:

| noise ratio | predicted mag | 68% factors | 95% factors |
|---|---|---|---|
{calibration_rows(scales)}
{blended}
Errors of re and n are relative (the sigma of ln re, ln n) times the value.

## Input range (inputs outside are flagged INPUT_OUT_OF_RANGE whatever the network predicts)
- per-pixel noise {input_range["sky_sigma"][0]:.5f}-{input_range["sky_sigma"][1]:.5f} e-/s (border MAD the network measures);
- aperture (1") flux no more than {input_range["faint_limit_sigma"]:.2f} sigma below a galaxy of magnitude {input_range["mag_faint"]:.2f}
  on the zeropoint {input_range["zeropoint"]:.4f}; aperture magnitude brighter than {input_range["mag_bright"]:.2f};
- aperture S/N < 1: NO_SOURCE, values NaN.

## Learning curve (validation, random training depths)
| step | seconds | R² mag | R² re | R² n | R² ellipticity |
|---|---|---|---|---|---|
{curve}

## Measured (reports/production.json: Table 1, depths 0.25-2x, coverage, real UDS; reports/speed.json)
Validation R² at random training depths (mag, re, n, ellipticity):
{", ".join(f"{v:.4f}" for v in training["validation_r2_training_depths"].values())}.

## Known limits
- Single-Sérsic targets only: bulge+disc and irregular galaxies are the realistic domain's part
  (docs/adaptation.md){"" if recipe.get("scenes") else "; neighbours are not in the training stamps"}.
{psf_limit}
- re <= 1" and 64x64 stamps.
- The uncertainty calibration bins noise level and predicted magnitude, not noise correlation: white
  noise at 0.25-0.5x is over-covered, correlated noise at 0.25x slightly under-covered; real-data
  systematics (non-Sérsic light) are not in the errors.
"""
