"""The realistic domain: disjoint test A / pool B, the four kinds of galaxy, correlated noise, neighbour masking, labels."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from legato.analysis.segmentation import segment_stamp
from legato.classical.fitter import FLAG_AT_LIMIT, FLAG_POOR_FIT
from legato.classical.labels import labelled_table, usable
from legato.errors import ConfigError
from legato.simulation import realistic
from legato.simulation.noise import correlated_noise
from legato.simulation.realistic import KINDS, draw_realistic_parameters, in_test_split, realistic_config


@pytest.fixture(scope="module")
def config(params, repo_root):
    loaded = {
        **params,
        "simulate": {
            **params["simulate"],
            "catalog": str(repo_root / params["simulate"]["catalog"]),
            "psf": str(repo_root / params["simulate"]["psf"]),
        },
    }
    loaded["realistic"] = {**params["realistic"], "cosmos_dir": str(repo_root / params["realistic"]["cosmos_dir"])}
    return realistic_config(loaded, {"sizes": {"A": 40, "B": 60}})


def test_a_and_b_share_no_source(config):
    tables = draw_realistic_parameters(config, n_cosmos=100)
    a, b = tables["A"], tables["B"]
    assert (len(a), len(b)) == (40, 60)
    assert in_test_split(a["source_number"]).all() and not in_test_split(b["source_number"]).any()
    cosmos_a = set(a["cosmos_index"][a["cosmos_index"] >= 0])
    cosmos_b = set(b["cosmos_index"][b["cosmos_index"] >= 0])
    assert cosmos_a and cosmos_b and not cosmos_a & cosmos_b
    assert set(a["kind"]) | set(b["kind"]) <= set(KINDS)
    assert (b["psf_dilation"] >= 0.95).all() and (b["psf_dilation"] <= 1.08).all()
    again = draw_realistic_parameters(config, n_cosmos=100)
    assert np.array_equal(again["B"]["gen_mag"], b["gen_mag"])  # seeded


def test_every_kind_renders_a_finite_sky_subtracted_stamp(config):
    realistic._init_worker(config)
    table = draw_realistic_parameters(config, n_cosmos=100)["B"]
    seen = set()
    for row in table:
        kind = str(row["kind"])
        if kind in seen:
            continue
        seen.add(kind)
        values = {name: row[name] for name in table.colnames}
        stamp, flux = realistic.render_realistic_stamp(values, 1)
        again, _ = realistic.render_realistic_stamp(values, 1)
        assert stamp.shape == (64, 64) and stamp.dtype == np.float32 and np.isfinite(stamp).all()
        assert np.array_equal(stamp, again)
        assert flux > 0 and abs(np.median(stamp[:6, :6])) < 3 * config.base.noise.sky_sigma
    assert seen == set(KINDS)


def test_correlated_noise_keeps_the_pixel_sigma():
    rng = np.random.default_rng(1)
    noise = correlated_noise((256, 256), 0.01, 0.6, rng)
    assert np.std(noise) == pytest.approx(0.01, rel=0.05)
    neighbour_correlation = np.corrcoef(noise[:, :-1].ravel(), noise[:, 1:].ravel())[0, 1]
    assert 0.3 < neighbour_correlation < 0.9
    white = correlated_noise((256, 256), 0.01, 0.0, rng)
    assert abs(np.corrcoef(white[:, :-1].ravel(), white[:, 1:].ravel())[0, 1]) < 0.05


def test_neighbour_mask_masks_the_neighbour_not_the_target():
    yy, xx = np.indices((64, 64))
    rng = np.random.default_rng(3)
    target = 0.5 * np.exp(-0.5 * ((yy - 32) ** 2 + (xx - 32) ** 2) / 3.0**2)
    blended = 1.0 * np.exp(-0.5 * ((yy - 32) ** 2 + (xx - 44) ** 2) / 2.5**2)  # touching the target
    image = target + blended + rng.normal(0, 0.01, (64, 64))
    mask = segment_stamp(image, 0.01).neighbour_mask
    assert not mask[30:35, 30:35].any()
    assert mask[32, 44] and mask[30:35, 42:47].all()
    assert not segment_stamp(target + rng.normal(0, 0.01, (64, 64)), 0.01).neighbour_mask[26:39, 26:39].any()


def test_labels_are_the_fits_and_unusable_fits_are_marked():
    generation = Table({"id": [3, 1, 2], "gen_mag": [20.0, 21.0, 22.0]})
    fits = Table(
        {
            "id": [1, 2, 3],
            "mag": [21.1, 22.1, 20.1],
            "re_arcsec": [0.2, 0.3, 0.4],
            "n": [1.0, 2.0, 3.0],
            "q": [0.5, 0.6, 0.7],
            "ellipticity": [0.5, 0.4, 0.3],
            "pa_deg": [0.0, 10.0, 20.0],
            "flags": [0, FLAG_AT_LIMIT, FLAG_POOR_FIT],
            "reduced_chi2": [1.0, 1.2, 4.0],
        }
    )
    table = labelled_table(generation, fits, fits[:2])
    assert list(table["mag"]) == [20.1, 21.1, 22.1]
    assert list(usable(table["label_flags"])) == [True, True, False]  # a poor fit of a non-Sérsic galaxy is still a label
    assert np.isnan(table["alt_mag"][0]) and table["alt_flags"][0] & 2  # id 3 has no alternative fit


def test_realistic_config_errors(params):
    with pytest.raises(ConfigError, match="unknown realistic kind"):
        realistic_config({**params, "realistic": {**params["realistic"], "kinds": {"spiral": 1.0}}})
    with pytest.raises(ConfigError, match="neighbour_probability"):
        realistic_config({**params, "realistic": {**params["realistic"], "neighbour_probability": 2}})
