"""Real-data ingestion: GALFIT blocks (the bundled real UDS set) and a mosaic with a van der Wel catalogue."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

from legato.cli import app
from legato.errors import DataError
from legato.io.galfit import parse_galfit_value, read_galfit_block
from legato.io.ingest import INGEST_PADDED, ingest_galfit_blocks, ingest_mosaic
from legato.io.stamps import read_stamp_set


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
        f"7 {ra:.8f} {dec:.8f} 0 {target['MAG'].value} 0.05 {target['RE'].value * 0.06} 0.01 {target['N'].value} 0.1 {target['AR'].value} 0.02 10.0 2.0 30.0\n"
        f"8 {ra + 0.1:.8f} {dec:.8f} 1 22.0 0.05 0.3 0.01 1.0 0.1 0.5 0.02 10.0 2.0 30.0\n"
    )
    report = ingest_mosaic(mosaic, catalogue, tmp_path / "set", size=32)
    assert report["ingested"] == 1 and list(report["skipped"]) == ["8"] and report["skipped"]["8"] == "off the mosaic"
    stamps, labels, _ = read_stamp_set(tmp_path / "set")
    assert labels["id"][0] == 7 and labels["re_arcsec"][0] == pytest.approx(target["RE"].value * 0.06)
    # RA/Dec went through the WCS back to the target's pixel, now the stamp's centre pixel
    ix, iy = int(np.floor(target["XC"].value - 1.0 + 0.5)), int(np.floor(target["YC"].value - 1.0 + 0.5))
    assert stamps[0][16, 16] == pytest.approx(block.image[iy, ix], rel=1e-6)
    assert stamps[0][16 + 5, 16 - 3] == pytest.approx(block.image[iy + 5, ix - 3], rel=1e-6)

    broken = tmp_path / "broken.galfit"
    broken.write_text("1 2 3\n")
    result = CliRunner().invoke(app, ["ingest", "mosaic", str(mosaic), str(broken), "-o", str(tmp_path / "x")])
    assert result.exit_code == 1 and "expected 15" in result.output
