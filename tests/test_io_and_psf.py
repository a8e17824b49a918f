"""Readers reject bad files with precise messages; the PSF follows the shared convention."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from legato.catalog.vanderwel import read_vanderwel_catalog, select_good_fits
from legato.errors import DataError
from legato.io.stamps import StampSetMeta, read_labels, read_stamp_chunk, read_stamp_masks, read_stamp_set, write_stamp_set
from legato.simulation.psf import model_psf_profile, read_psf_image, write_psf_image


def meta():
    return StampSetMeta(pixel_scale=0.06, zeropoint=25.9463, band="F160W", psf_id="test", domain="unit-test")


def test_stamp_set_round_trip(tmp_path):
    stamps = np.random.default_rng(0).normal(size=(7, 16, 16)).astype(np.float32)
    labels = Table({"id": np.arange(7), "mag": np.linspace(20, 23, 7)})
    labels["mag"].unit = "mag"
    write_stamp_set(tmp_path / "set", stamps, labels, meta(), chunk_size=3)
    back, back_labels, header = read_stamp_set(tmp_path / "set")
    np.testing.assert_array_equal(back, stamps)
    assert list(back_labels["id"]) == list(range(7)) and str(back_labels["mag"].unit) == "mag"
    assert header["NCHUNKS"] == 3 and header["DOMAIN"] == "unit-test"


def test_neighbour_masks_round_trip_and_are_optional(tmp_path):
    from astropy import units as u

    rng = np.random.default_rng(1)
    stamps = rng.normal(size=(7, 16, 16)).astype(np.float32)
    masks = rng.random((7, 16, 16)) < 0.2
    labels = Table({"id": np.arange(7), "noise_sigma": np.full(7, 0.003)})
    labels["noise_sigma"].unit = u.electron / u.s  # not a FITS unit: kept in generic form
    write_stamp_set(tmp_path / "masked", stamps, labels, meta(), chunk_size=3, masks=masks)
    back = read_stamp_masks(tmp_path / "masked")
    assert back.dtype == bool and back.shape == masks.shape
    np.testing.assert_array_equal(back, masks)
    cube, back_labels, _ = read_stamp_set(tmp_path / "masked")  # the readers still return (stamps, labels, header)
    np.testing.assert_array_equal(cube, stamps)
    assert back_labels["noise_sigma"].unit == u.electron / u.s and read_labels(tmp_path / "masked")["noise_sigma"].unit == u.electron / u.s
    with fits.open(tmp_path / "masked" / "stamps_00000.fits") as hdul:
        assert [h.name for h in hdul] == ["STAMPS", "LABELS", "NBRMASK"] and hdul["NBRMASK"].data.dtype == np.uint8

    write_stamp_set(tmp_path / "plain", stamps, labels, meta())
    assert read_stamp_masks(tmp_path / "plain") is None
    with pytest.raises(DataError, match="do not match the stamps"):
        write_stamp_set(tmp_path / "bad", stamps, labels, meta(), masks=masks[:, :8])


def test_truncated_stamp_file_is_a_clear_error(tmp_path):
    stamps = np.zeros((4, 16, 16), np.float32)
    [path] = write_stamp_set(tmp_path / "set", stamps, Table({"id": np.arange(4)}), meta())
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(DataError, match="cannot read stamp file"):
        read_stamp_chunk(path)


def test_missing_stamp_set_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no stamp set"):
        read_stamp_set(tmp_path / "nothing")


def test_mismatched_labels_are_rejected(tmp_path):
    with pytest.raises(DataError, match="3 stamps but 2 label rows"):
        write_stamp_set(tmp_path / "s", np.zeros((3, 8, 8)), Table({"id": [0, 1]}), meta())


def test_catalogue_reader_units_and_selection(raw_data):
    catalog = read_vanderwel_catalog(raw_data["catalog"])
    assert len(catalog) == 33879
    assert str(catalog["re"].unit) == "arcsec" and str(catalog["mag"].unit) == "mag"
    good = select_good_fits(catalog, 16.0, 23.0, 1.0)
    assert np.all(good["f"] == 0) and good["mag"].max() <= 23.0


def test_catalogue_errors(tmp_path):
    with pytest.raises(DataError, match="catalogue not found"):
        read_vanderwel_catalog(tmp_path / "missing.galfit")
    bad = tmp_path / "bad.galfit"
    bad.write_text("# NUMBER RA DEC\n1 150.0 2.0\n")
    with pytest.raises(DataError, match="has 3 columns, expected 15"):
        read_vanderwel_catalog(bad)


def test_versioned_psf_matches_the_model_and_f160w_width(raw_data, tmp_path):
    psf = read_psf_image(raw_data["psf"])
    assert psf.array.sum() == pytest.approx(1.0)
    header = fits.getheader(raw_data["psf"])
    assert header["PIXRESP"] is False and 0.16 <= header["FWHM"] <= 0.20
    remade = read_psf_image(write_psf_image(tmp_path / "psf.fits", size=psf.array.shape[0]))
    np.testing.assert_allclose(remade.array, psf.array, atol=1e-7)
    assert model_psf_profile().calculateFWHM() == pytest.approx(0.18, abs=0.01)


def test_psf_with_wrong_pixel_scale_is_rejected(tmp_path):
    path = tmp_path / "psf.fits"
    fits.PrimaryHDU(np.ones((5, 5), np.float32), header=fits.Header([("PIXSCALE", 0.13)])).writeto(path)
    with pytest.raises(DataError, match="PIXSCALE 0.13"):
        read_psf_image(path)
    path.write_bytes(b"not a fits file")
    with pytest.raises(DataError, match="cannot read PSF image"):
        read_psf_image(path)
