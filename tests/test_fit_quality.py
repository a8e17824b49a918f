"""Goodness of fit: models of estimates, chi² of true models against pure noise, flags, blocks and galleries."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from legato.modelling.renderer import Geometry, ModelRenderer, stamp_geometry
from legato.modelling.statistics import fit_statistics, rotate_180


@pytest.fixture(scope="module")
def renderer(galsim_psf):
    return ModelRenderer(galsim_psf)


@pytest.fixture(scope="module")
def test_set(tiny_sim):
    from legato.io.stamps import read_stamp_set

    stamps, truth, header = read_stamp_set(tiny_sim / "test")
    return stamps.astype(np.float64), truth, float(header["SKYSIG"]), float(header["EXPTIME"])


def true_model(renderer, row):
    geometry = Geometry(float(row["pa_deg"]), float(row["x_offset_pix"]), float(row["y_offset_pix"]))
    return renderer.render(row["mag"], row["re_arcsec"], row["n"], row["ellipticity"], geometry)


def test_the_true_model_leaves_pure_noise(renderer, test_set):
    """Reduced chi² of the true parameters' model within 3 sigma of 1 for its degrees of freedom, on every stamp."""
    stamps, truth, sky_sigma, exposure_time = test_set
    for stamp, row in zip(stamps[:24], truth[:24]):
        statistics = fit_statistics(stamp, true_model(renderer, row), sky_sigma, exposure_time)
        dof = statistics.n_pixels - 7
        assert abs(statistics.chi2_nu - 1.0) < 3.0 * np.sqrt(2.0 / dof), (row["id"], statistics)
        assert abs(statistics.residual_flux_fraction) < 0.1 and abs(statistics.residual_asymmetry) < 0.1


def test_a_neighbour_or_a_wrong_estimate_is_flagged(renderer, test_set, galsim_psf):
    from legato.inference.measurements import ResidualAugmentation
    from legato.simulation.render import render_sersic_stamp

    stamps, truth, sky_sigma, exposure_time = test_set
    k = int(np.argmin(np.abs(np.asarray(truth["mag"]) - 21.5)))
    row, stamp = truth[k], stamps[k]
    geometry = Geometry(float(row["pa_deg"]), float(row["x_offset_pix"]), float(row["y_offset_pix"]))
    estimate = (row["mag"], row["re_arcsec"], row["n"], row["ellipticity"])
    check = ResidualAugmentation(renderer, chi2_threshold=3.0, exposure_time=exposure_time)
    assert check.measure(stamp, estimate, sky_sigma, geometry)[1] is False
    neighbour = render_sersic_stamp(
        row["mag"] + 0.5, 0.2, 1.0, 0.8, 0.0, 7.0, 3.0, psf=galsim_psf, size=64, pixel_scale=0.06, zeropoint=25.9463
    )
    values, flagged = check.measure(stamp + neighbour, estimate, sky_sigma, geometry)
    assert flagged and values["chi2_nu"] > 3.0 and values["residual_asymmetry"] > 0.1
    wrong = (row["mag"] - 0.5, *estimate[1:])  # 0.5 mag too bright
    assert check.measure(stamp, wrong, sky_sigma, geometry)[1] is True


def test_moments_give_the_geometry_of_an_elongated_galaxy(renderer):
    model = renderer.render(20.0, 0.4, 1.0, 0.5, Geometry(35.0, 0.4, -0.3))
    geometry = stamp_geometry(model)
    assert geometry.pa_deg == pytest.approx(35.0, abs=1.0)
    assert geometry.x_offset_pix == pytest.approx(0.4, abs=0.05) and geometry.y_offset_pix == pytest.approx(-0.3, abs=0.05)
    assert stamp_geometry(np.zeros((64, 64))) == Geometry()


def test_rotation_is_about_the_centre_pixel():
    image = np.zeros((64, 64))
    image[32, 40] = 1.0
    rotated = rotate_180(image)
    assert rotated[32, 24] == 1.0 and rotated.sum() == 1.0


def test_no_model_for_a_row_without_estimate(renderer):
    with pytest.raises(ValueError, match="no model"):
        renderer.render(np.nan, 0.3, 1.0, 0.2)


def test_block_and_gallery_open_in_astropy(renderer, test_set, tmp_path):
    from legato.modelling.gallery import Inspection, gallery_figure, write_block

    stamps, truth, sky_sigma, _ = test_set
    row = truth[0]
    model = true_model(renderer, row)
    values = {
        "mag": row["mag"],
        "re_arcsec": row["re_arcsec"],
        "n": row["n"],
        "ellipticity": row["ellipticity"],
        **fit_statistics(stamps[0], model, sky_sigma).as_dict(),
    }
    good = Inspection("7", stamps[0], model, values, Geometry(float(row["pa_deg"])), 0, "truth")
    empty = Inspection("8", stamps[1], None, {"mag": np.nan}, flags=32)
    path = write_block(tmp_path / "7.fits", good, 0.06, 25.9463)
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "INPUT", "MODEL", "RESIDUAL"]
        assert hdul["MODEL"].header["MAG"] == pytest.approx(row["mag"], rel=1e-6) and hdul["MODEL"].header["NOMODEL"] is False
        assert np.allclose(hdul["RESIDUAL"].data, (hdul["INPUT"].data - hdul["MODEL"].data), atol=1e-6)
        assert "CTYPE1" not in hdul["MODEL"].header
    with fits.open(write_block(tmp_path / "8.fits", empty, 0.06, 25.9463)) as hdul:
        assert hdul["MODEL"].header["NOMODEL"] is True and np.all(np.isnan(hdul["MODEL"].data))
    png = gallery_figure([good, empty], tmp_path / "gallery.png", title="test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
