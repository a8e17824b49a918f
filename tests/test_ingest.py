"""Real-data ingestion: GALFIT blocks (the bundled real UDS set) and a mosaic with a van der Wel catalogue."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

from legato.cli import app
from legato.errors import DataError
from legato.ingest.real_sets import INGEST_PADDED, NOISE_SIGMA_UNIT, ingest_galfit_blocks, ingest_mosaic
from legato.io.galfit import parse_galfit_value, read_galfit_block
from legato.io.stamps import read_stamp_masks, read_stamp_set


@pytest.fixture(scope="module")
def uds_blocks(repo_root):
    return sorted((repo_root / "data/candels_uds_galfit_blocks").glob("H.gf*.fits"))


def test_galfit_values_keep_errors_and_markers():
    plain = parse_galfit_value("25.1712 +/- 0.0337")
    assert (plain.value, plain.error, plain.fixed, plain.at_limit) == (25.1712, 0.0337, False, False)
    fixed = parse_galfit_value("[84.3600]")
    assert fixed.value == 84.36 and fixed.fixed and np.isnan(fixed.error)
    limit = parse_galfit_value("*0.3000* +/- *4192.5742*")
    assert limit.value == 0.3 and limit.error == 4192.5742 and limit.at_limit
    assert parse_galfit_value("-2.612e-04").value == pytest.approx(-2.612e-4)
    with pytest.raises(DataError, match="cannot read"):
        parse_galfit_value("nan-ish")


def test_block_target_is_the_sersic_nearest_the_centre(uds_blocks):
    block = read_galfit_block(uds_blocks[0])  # H.gf1: several Sérsic components
    target = block.target()
    ny, nx = block.image.shape
    sersics = [c for c in block.components if c["type"] == "sersic"]
    assert len(sersics) > 1
    distance = lambda c: np.hypot(c["XC"].value - (nx + 1) / 2, c["YC"].value - (ny + 1) / 2)  # noqa: E731
    assert distance(target) == min(distance(c) for c in sersics)


def test_real_uds_blocks_become_a_labelled_stamp_set(uds_blocks, tmp_path):
    report = ingest_galfit_blocks(uds_blocks, tmp_path / "uds", size=64)
    assert report["ingested"] == 15 and report["skipped"] == {} and report["band"] == "F160W"
    stamps, labels, header = read_stamp_set(tmp_path / "uds")
    assert stamps.shape == (15, 64, 64) and np.isfinite(stamps).all()
    assert header["PIXSCALE"] == pytest.approx(0.06, rel=1e-3) and header["MAGZPT"] == pytest.approx(25.9463)
    assert str(labels["re_arcsec"].unit) == "arcsec" and str(labels["mag"].unit) == "mag"
    row = labels[labels["source_file"] == "H.gf3.fits"][0]  # 2_RE = 2.9541 px, 2_MAG 25.1712, 2_AR 0.7431
    assert row["re_arcsec"] == pytest.approx(2.9541 * 0.06, rel=1e-3)
    assert row["mag"] == pytest.approx(25.1712) and row["ellipticity"] == pytest.approx(1 - 0.7431)
    assert row["flags"] & 4  # ERROR = 'Convergence'
    assert report["flagged"]["padded"] == int(np.sum((np.asarray(labels["flags"]) & INGEST_PADDED) > 0)) > 0
    # noise level and texture of every stamp, where the blocks have data (drizzled F160W: ~0.5 at 1 pixel, ~0.1 at 2)
    assert labels["noise_sigma"].unit == NOISE_SIGMA_UNIT
    assert np.all((labels["noise_sigma"] > 0.004) & (labels["noise_sigma"] < 0.012))
    assert np.all((labels["noise_correlation_1pix"] > 0.4) & (labels["noise_correlation_1pix"] < 0.7))
    assert np.all(np.abs(labels["noise_correlation_2pix"]) < 0.3)
    assert report["noise"]["noise_sigma_electron_per_s"] == pytest.approx(float(np.median(labels["noise_sigma"])), rel=1e-4)
    assert 0.45 < report["noise"]["noise_correlation_1pix"] < 0.6
    # padded: beyond the block or in its blank (exactly 0, no data) area; H.gf13 and H.gf8 are neither
    padded = (np.asarray(labels["flags"]) & INGEST_PADDED) > 0
    assert np.all(padded == (labels["padded_fraction"] > 0)) and set(labels["source_file"][~padded]) == {"H.gf13.fits", "H.gf8.fits"}
    # the neighbour masks travel with the stamps and agree with the label columns
    masks = read_stamp_masks(tmp_path / "uds")
    assert masks.shape == stamps.shape and masks.dtype == bool
    np.testing.assert_allclose(masks.mean(axis=(1, 2)), labels["neighbour_fraction"], atol=1e-6)
    assert np.mean(masks[:, 32, 32]) < 0.2  # the target is not a neighbour (a grown neighbour may touch the centre: H.gf2)
    assert np.all((labels["neighbour_fraction"] > 0) == (labels["n_neighbours"] > 0)) and labels["n_neighbours"].max() > 0


def _padded_band(block, size=64):
    """Pixels of the stamp beyond the block or in its blank (0, no data) area, as galfit_stamp cuts it."""
    from legato.io.mosaic import cut_stamps

    target = block.target()
    position = [[target["XC"].value - 1.0, target["YC"].value - 1.0]]
    cut, _ = cut_stamps(np.where(block.image == 0, np.nan, 1.0), None, position, size, fill_value=np.nan)
    return ~np.isfinite(cut[0])


def test_padding_has_the_residual_noise_texture(uds_blocks, tmp_path):
    """H.gf1 (45 x 65 pixels, its top 16 rows blank) in a 64 x 64 stamp: the padded band has the GALFIT residual's texture."""
    from legato.analysis.noise_texture import noise_statistics

    [path] = [p for p in uds_blocks if p.name == "H.gf1.fits"]
    block = read_galfit_block(path)
    ingest_galfit_blocks([path], tmp_path / "one", size=64, seed=3)
    stamps, labels, _ = read_stamp_set(tmp_path / "one")
    outside = _padded_band(block)
    assert labels["flags"][0] & INGEST_PADDED and outside.sum() > 1000
    residual = noise_statistics(block.residual, mask=block.image == 0)  # where the block has data
    band = noise_statistics(stamps[0], mask=~outside)
    assert labels["noise_sigma"][0] == pytest.approx(residual.sigma) and labels["noise_correlation_1pix"][0] == pytest.approx(
        residual.correlation[1]
    )
    assert band.sigma == pytest.approx(residual.sigma, rel=0.15)
    assert abs(band.correlation[1] - residual.correlation[1]) < 0.1
    assert abs(band.correlation[2] - residual.correlation[2]) < 0.1


def _synthetic_block(path, shape=(40, 44), sigma=0.004, kernel=0.9, residual=True, seed=0):
    """A GALFIT block with drizzle-like correlated noise, a Gaussian galaxy at the centre and one neighbour."""
    from legato.simulation.noise import correlated_noise

    rng = np.random.default_rng(seed)
    ny, nx = shape
    yy, xx = np.mgrid[:ny, :nx]
    xc, yc = nx / 2 + 0.5, ny / 2 + 0.5  # 1-based, as GALFIT
    galaxy = 0.2 * np.exp(-((xx - (xc - 1)) ** 2 + (yy - (yc - 1)) ** 2) / (2 * 2.5**2))
    neighbour = 0.1 * np.exp(-((xx - 6) ** 2 + (yy - 7) ** 2) / (2 * 1.5**2))
    noise = correlated_noise(shape, sigma, kernel, rng)
    header = fits.Header([("CD1_1", -0.06 / 3600), ("CD1_2", 0.0), ("CD2_1", 0.0), ("CD2_2", 0.06 / 3600)])
    model = fits.Header([("MAGZPT", 25.9463), ("COMP_1", "sky"), ("1_SKY", "[0.000e+00]"), ("COMP_2", "sersic")])
    for key, value in {"XC": xc, "YC": yc, "MAG": 23.5, "RE": 4.0, "N": 1.2, "AR": 0.8, "PA": 30.0}.items():
        model[f"2_{key}"] = f"{value:.4f} +/- 0.0100"
    hdus = [
        fits.PrimaryHDU(),
        fits.ImageHDU((galaxy + neighbour + noise).astype(np.float32), header),
        fits.ImageHDU(galaxy.astype(np.float32), model),
    ]
    if residual:
        hdus.append(fits.ImageHDU((neighbour + noise).astype(np.float32)))
    fits.HDUList(hdus).writeto(path)
    return noise


@pytest.mark.parametrize("with_residual", [True, False])
def test_synthetic_block_padding_and_noise_columns(tmp_path, with_residual):
    """Correlated noise of known sigma and correlation; without a residual it is measured on the image's sky pixels."""
    from legato.analysis.noise_texture import noise_statistics

    path = tmp_path / "H.gf77.fits"
    noise = _synthetic_block(path, residual=with_residual)
    truth = noise_statistics(noise)
    report = ingest_galfit_blocks([path], tmp_path / "set", size=64, seed=1)
    stamps, labels, _ = read_stamp_set(tmp_path / "set")
    row = labels[0]
    assert row["flags"] & INGEST_PADDED and report["flagged"]["padded"] == 1
    assert row["noise_sigma"] == pytest.approx(truth.sigma, rel=0.15)
    assert abs(row["noise_correlation_1pix"] - truth.correlation[1]) < 0.1
    band = noise_statistics(stamps[0], mask=~_padded_band(read_galfit_block(path)))
    assert band.sigma == pytest.approx(row["noise_sigma"], rel=0.15)
    assert abs(band.correlation[1] - row["noise_correlation_1pix"]) < 0.1
    # the neighbour at block pixel (6, 7) is masked, the target is not
    mask = read_stamp_masks(tmp_path / "set")[0]
    assert row["n_neighbours"] >= 1 and 0 < row["neighbour_fraction"] < 0.2
    assert not mask[32, 32] and mask[32 - 20 + 7, 32 - 22 + 6]


def test_bad_blocks_are_reported_per_file_and_skipped(uds_blocks, tmp_path):
    folder = tmp_path / "blocks"
    folder.mkdir()
    for path in uds_blocks[:3]:
        shutil.copy(path, folder / path.name)
    truncated = folder / "H.gf90.fits"
    truncated.write_bytes(uds_blocks[3].read_bytes()[:20000])
    with fits.open(uds_blocks[4]) as hdul:
        for key in [k for k in hdul[2].header if k.startswith("COMP_")]:
            del hdul[2].header[key]
        hdul.writeto(folder / "H.gf91.fits", output_verify="silentfix")
    with fits.open(uds_blocks[5]) as hdul:
        hdul[1].data[10, 10] = np.nan
        hdul.writeto(folder / "H.gf92.fits", output_verify="silentfix")

    result = CliRunner().invoke(app, ["ingest", "galfit", str(folder), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "ingested 3 of 6 blocks" in result.output
    assert "H.gf90.fits: unreadable or truncated FITS" in result.output
    assert "H.gf91.fits: missing keywords COMP_k" in result.output
    assert "H.gf92.fits: 1 NaN/inf pixels" in result.output
    assert len(read_stamp_set(tmp_path / "out")[0]) == 3

    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    shutil.copy(truncated, only_bad / truncated.name)
    result = CliRunner().invoke(app, ["ingest", "galfit", str(only_bad), "-o", str(tmp_path / "none")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "none of the 1 GALFIT blocks could be ingested" in result.output
    assert not (tmp_path / "none").exists()


def test_mosaic_and_vanderwel_catalogue(uds_blocks, tmp_path):
    """A real UDS block with its WCS as a small mosaic; its target (RA/Dec via the WCS) plus a source off the mosaic."""
    from astropy.wcs import WCS

    from legato.io.mosaic import image_wcs

    block = read_galfit_block(uds_blocks[14])  # H.gf9, 77 x 80 pixels
    wcs = image_wcs(block.header)
    target = block.target()
    ra, dec = wcs.wcs_pix2world([[target["XC"].value - 1.0, target["YC"].value - 1.0]], 0)[0]
    mosaic = tmp_path / "mosaic.fits"
    fits.PrimaryHDU(block.image.astype(np.float32), header=wcs.to_header()).writeto(mosaic)
    assert isinstance(wcs, WCS)
    catalogue = tmp_path / "cat.galfit"
    catalogue.write_text(
        "# NUMBER RA DEC f mag dmag re dre n dn q dq pa dpa sn\n"
        f"7 {ra:.8f} {dec:.8f} 0 {target['MAG'].value} 0.05 {target['RE'].value * 0.06} 0.01 {target['N'].value} 0.1 "
        f"{target['AR'].value} 0.02 10.0 2.0 30.0\n"
        f"8 {ra + 0.1:.8f} {dec:.8f} 1 22.0 0.05 0.3 0.01 1.0 0.1 0.5 0.02 10.0 2.0 30.0\n"
    )
    report = ingest_mosaic(mosaic, catalogue, tmp_path / "set", size=32)
    assert report["ingested"] == 1 and list(report["skipped"]) == ["8"] and report["skipped"]["8"] == "off the mosaic"
    stamps, labels, _ = read_stamp_set(tmp_path / "set")
    assert labels["id"][0] == 7 and labels["re_arcsec"][0] == pytest.approx(target["RE"].value * 0.06)
    # noise measured on the stamp's sky pixels (32 x 32 in a crowded block: ~200 of them, galaxy wings push it up), masks stored
    assert labels["noise_sigma"].unit == NOISE_SIGMA_UNIT and 0.005 < labels["noise_sigma"][0] < 0.03
    assert labels["flags"][0] & INGEST_PADDED and 0.1 < labels["padded_fraction"][0] < 0.4  # H.gf9's blank corner
    assert 0.4 < labels["noise_correlation_1pix"][0] < 0.9 and report["noise"]["noise_correlation_1pix"] == pytest.approx(
        labels["noise_correlation_1pix"][0], abs=1e-5
    )
    assert read_stamp_masks(tmp_path / "set").shape == (1, 32, 32) and "n_neighbours" in labels.colnames
    # RA/Dec went through the WCS back to the target's pixel, now the stamp's centre pixel
    ix, iy = int(np.floor(target["XC"].value - 1.0 + 0.5)), int(np.floor(target["YC"].value - 1.0 + 0.5))
    assert stamps[0][16, 16] == pytest.approx(block.image[iy, ix], rel=1e-6)
    assert stamps[0][16 + 5, 16 - 3] == pytest.approx(block.image[iy + 5, ix - 3], rel=1e-6)

    broken = tmp_path / "broken.galfit"
    broken.write_text("1 2 3\n")
    result = CliRunner().invoke(app, ["ingest", "mosaic", str(mosaic), str(broken), "-o", str(tmp_path / "x")])
    assert result.exit_code == 1 and "expected 15" in result.output
