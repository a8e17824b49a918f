"""Stamps cut from a mosaic: centring, edges, off-image sources, NaN pixels, sky and pixel positions."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import Table
from astropy.wcs import WCS

from legato.errors import ConfigError
from legato.flags import StampFlag
from legato.io.mosaic import catalog_positions, cut_stamps, read_mosaic


def _wcs(shape=(200, 300)):
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [34.4, -5.2]
    wcs.wcs.crpix = [shape[1] / 2, shape[0] / 2]
    wcs.wcs.cd = [[-0.06 / 3600, 0], [0, 0.06 / 3600]]
    return wcs


def test_cut_stamps_centres_flags_edges_and_off_image():
    image = np.zeros((200, 300), dtype=np.float32)
    image[100, 150] = 5.0
    image[10, 10] = 7.0
    image[150, 250] = np.nan
    xy = [[150.0, 100.0], [150.4, 99.6], [10.0, 10.0], [400.0, 100.0], [250.0, 150.0], [np.nan, 3.0]]
    stamps, flags = cut_stamps(image, None, xy, size=64)
    assert stamps.shape == (6, 64, 64) and stamps.dtype == np.float32
    assert stamps[0, 32, 32] == 5.0 and stamps[1, 32, 32] == 5.0  # rounded to the nearest pixel
    assert flags[0] == 0 and flags[1] == 0
    assert flags[2] == StampFlag.NEAR_EDGE and stamps[2, 32, 32] == 7.0 and stamps[2, 0, 0] == 0.0  # zero-filled
    assert flags[3] == StampFlag.OFF_IMAGE | StampFlag.FAILED_VALIDATION
    assert flags[4] & StampFlag.BAD_PIXELS and flags[4] & StampFlag.FAILED_VALIDATION
    assert flags[5] == StampFlag.OFF_IMAGE | StampFlag.FAILED_VALIDATION


def test_sky_and_pixel_positions_agree():
    wcs = _wcs()
    image = np.random.default_rng(0).normal(size=(200, 300)).astype(np.float32)
    pixels = np.array([[150.0, 100.0], [40.0, 60.0]])
    sky = wcs.pixel_to_world(pixels[:, 0], pixels[:, 1])
    catalogue = Table({"RA": sky.ra.deg, "Dec": sky.dec.deg, "X_IMAGE": pixels[:, 0] + 1, "Y_IMAGE": pixels[:, 1] + 1})
    from_sky = catalog_positions(catalogue, wcs, ra="ra", dec="dec")
    from_xy = catalog_positions(catalogue, None, x="x_image", y="y_image", pixel_origin=1)
    np.testing.assert_allclose(from_sky, pixels, atol=1e-6)
    np.testing.assert_allclose(from_xy, pixels)
    a, _ = cut_stamps(image, wcs, SkyCoord(sky.ra, sky.dec), 64)
    b, _ = cut_stamps(image, None, from_xy, 64)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ConfigError, match="needs columns"):
        catalog_positions(Table({"a": [1.0]}), wcs)


def test_real_uds_block_reads_with_its_wcs(repo_root):
    image, wcs, header = read_mosaic(repo_root / "data/candels_uds_galfit_blocks/H.gf5.fits")
    assert image.shape == (127, 187) and wcs is not None and wcs.sip is None  # stray SIP keywords dropped
    centre = wcs.pixel_to_world(93, 63)
    stamps, flags = cut_stamps(image, wcs, SkyCoord([centre.ra], [centre.dec]), 64)
    assert flags[0] == 0
    np.testing.assert_array_equal(stamps[0], image[31:95, 61:125])
