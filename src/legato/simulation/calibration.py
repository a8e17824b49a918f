"""Calibrating the noise model so simulated S/N follows the catalogue's ``sn`` column."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from legato.catalog.vanderwel import read_vanderwel_catalog, select_good_fits
from legato.simulation.noise import NoiseModel, segmentation_snr
from legato.simulation.parameters import draw_parameters
from legato.simulation.render import render_sersic_stamp

MAG_BIN_EDGES = (20.0, 21.0, 22.0, 23.0, 24.0, 24.5)


def binned_median(mag, values, edges=MAG_BIN_EDGES) -> np.ndarray:
    """Median of ``values`` in magnitude bins (NaN for an empty bin)."""
    mag = np.asarray(mag)
    values = np.asarray(values)
    out = np.full(len(edges) - 1, np.nan)
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        inside = (mag >= lo) & (mag < hi)
        if inside.any():
            out[i] = np.median(values[inside])
    return out


def catalog_snr_relation(config, edges=MAG_BIN_EDGES) -> np.ndarray:
    """Median catalogue S/N per magnitude bin for the galaxies the simulator draws from."""
    catalog = select_good_fits(
        read_vanderwel_catalog(config.catalog),
        mag_min=config.space.mag_min,
        mag_max=config.space.mag_max,
        re_max_arcsec=config.space.re_max_arcsec,
    )
    return binned_median(catalog["mag"], catalog["sn"], edges)


def calibrate_noise(config, sample_size: int = 600, seed: int = 7) -> dict:
    """Fit ``sky_sigma`` and ``exposure_time`` to the catalogue's S/N-versus-magnitude relation.

    Noiseless stamps of ``sample_size`` catalogue galaxies (H 20-24.5) are
    rendered once; for each (sky_sigma, exposure_time) on a grid the median
    segmentation S/N per 1-mag bin is compared with the catalogue's median
    ``sn`` of the same bin, and the pair minimising the summed squared log
    ratio is kept.

    Parameters
    ----------
    config : SimulationConfig
        Simulation settings (catalogue, PSF, stamp geometry, parameter space).
    sample_size : int
        Galaxies rendered for the fit.
    seed : int
        Seed of the sample.

    Returns
    -------
    dict
        ``sky_sigma``, ``exposure_time``, the per-bin catalogue and simulated
        medians and their ratios.
    """
    from legato.simulation.psf import read_psf_image

    space = replace(config.space, mag_min=MAG_BIN_EDGES[0], mag_max=MAG_BIN_EDGES[-1], bandwidth=0.0)
    catalog = select_good_fits(
        read_vanderwel_catalog(config.catalog),
        mag_min=space.mag_min,
        mag_max=space.mag_max,
        re_max_arcsec=space.re_max_arcsec,
    )
    params = draw_parameters(catalog, sample_size, space, np.random.default_rng(seed))
    params = params[np.argsort(params["n"])]
    psf = read_psf_image(config.psf, expected_pixel_scale=config.pixel_scale).galsim_profile()
    models = np.stack(
        [
            render_sersic_stamp(
                row["mag"],
                row["re_arcsec"],
                row["n"],
                row["q"],
                row["pa_deg"],
                row["x_offset_pix"],
                row["y_offset_pix"],
                psf=psf,
                size=config.stamp_size,
                pixel_scale=config.pixel_scale,
                zeropoint=config.zeropoint,
            )
            for row in params
        ]
    )
    mag = np.asarray(params["mag"])
    target = binned_median(mag, params["catalog_sn"])
    best = None
    for sky_sigma in np.geomspace(0.002, 0.05, 60):
        for exposure_time in np.geomspace(1_000.0, 20_000.0, 25):
            noise = NoiseModel(sky_sigma=float(sky_sigma), exposure_time=float(exposure_time))
            simulated = binned_median(mag, segmentation_snr(models, noise, config.snr_threshold_sigma))
            cost = np.nansum(np.log(simulated / target) ** 2)
            if best is None or cost < best[0]:
                best = (cost, noise, simulated)
    _, noise, simulated = best
    return {
        "sky_sigma": round(noise.sky_sigma, 6),
        "exposure_time": round(noise.exposure_time, 1),
        "mag_bin_edges": list(MAG_BIN_EDGES),
        "catalog_median_sn": [round(float(v), 2) for v in target],
        "simulated_median_sn": [round(float(v), 2) for v in simulated],
        "ratio": [round(float(s / t), 3) for s, t in zip(simulated, target)],
        "sample_size": sample_size,
    }
