"""`legato predict`: the three input kinds (cube, FITS folder incl. the real UDS stamps, mosaic + catalogue),
output formats with units and model metadata, per-row flags, bad input, and interruption/resume."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from typer.testing import CliRunner

from legato.cli import app
from legato.flags import StampFlag

MODEL = "legato-sersic-predict-test"
UDS = "data/candels_uds_galfit_blocks"


@pytest.fixture(scope="module")
def champion(trained):
    """The tiny Arch1 registered under MODEL with the alias champion; (version, estimator folder)."""
    from legato.registry.store import registry_client
    from legato.registry.versions import register_estimator

    out, _ = trained
    client = registry_client()
    version, _ = register_estimator(client, MODEL, out / "arch1")
    client.set_registered_model_alias(MODEL, "champion", version.version)
    return version.version, out / "arch1"


@pytest.fixture(scope="module")
def cube(tiny_sim, tmp_path_factory):
    """The tiny test set as one cube (48 stamps) with stamp 3 holding a NaN pixel and stamp 5 all zeros."""
    from legato.io.stamps import read_stamp_set

    stamps, labels, _ = read_stamp_set(tiny_sim / "test")
    stamps = stamps.copy()
    stamps[3, 10, 10] = np.nan
    stamps[5] = 0.0
    path = tmp_path_factory.mktemp("cube") / "cube.fits"
    primary = fits.PrimaryHDU(stamps.astype(np.float32))
    primary.header["PIXSCALE"] = 0.06
    table = fits.table_to_hdu(labels)
    table.header["EXTNAME"] = "LABELS"
    fits.HDUList([primary, table]).writeto(path)
    return path, stamps, np.asarray(labels["id"])


def run(*args):
    result = CliRunner().invoke(app, ["predict", *map(str, args)])
    return result


def model_args(repo_root):
    return ["--model-name", MODEL, "--params", repo_root / "params.yaml", "--no-progress"]


def test_cube_to_fits_ecsv_parquet_with_units_flags_and_model_metadata(champion, cube, tmp_path, repo_root):
    from legato.models.estimator import LoadedEstimator

    version, folder = champion
    path, stamps, ids = cube
    tables = {}
    for ext in ("fits", "ecsv", "parquet"):
        out = tmp_path / f"cat.{ext}"
        result = run(path, "-o", out, *model_args(repo_root), "--chunk-size", 20)
        assert result.exit_code == 0, result.output
        assert "46/48 stamps predicted" in result.output
        tables[ext] = table = Table.read(out, **({"mask_invalid": False} if ext == "fits" else {}))
        assert len(table) == 48 and list(table["id"]) == list(ids)
        assert table.colnames == ["id", "mag", "re_arcsec", "n", "q", "ellipticity", "flags"]
        assert str(table["re_arcsec"].unit) == "arcsec" and str(table["mag"].unit) == "mag"
        meta = {k.lower(): v for k, v in table.meta.items()}
        assert meta["model_name"] == MODEL and str(meta["model_version"]) == str(version) and meta["model_alias"] == "champion"
        assert not list(tmp_path.glob("*.parts")) and not list(tmp_path.glob(".cat*"))
    table = tables["fits"]
    assert table["flags"][3] == StampFlag.BAD_PIXELS | StampFlag.FAILED_VALIDATION and np.isnan(table["mag"][3])
    assert table["flags"][5] == StampFlag.FAILED_VALIDATION and np.isnan(table["n"][5])
    good = np.ones(48, bool)
    good[[3, 5]] = False
    expected = LoadedEstimator(folder).predict(stamps[good])
    for name in ("mag", "re_arcsec", "n", "q", "ellipticity"):
        np.testing.assert_allclose(table[name][good], expected[name], rtol=1e-5)
        for ext in ("ecsv", "parquet"):
            np.testing.assert_array_equal(tables[ext][name], table[name])
    # predictions outside the training range (params.yaml simulate) are flagged, not removed
    outside = (table["mag"] > 24.5) | (table["mag"] < 16) | (table["re_arcsec"] > 1.0) | (table["re_arcsec"] < 0.01)
    assert np.all((table["flags"][good & outside] & StampFlag.OUT_OF_RANGE) != 0)


def test_real_uds_folder_is_resized_and_corrupt_files_are_reported(champion, tmp_path, repo_root):
    folder = tmp_path / "stamps"
    folder.mkdir()
    blocks = sorted((repo_root / UDS).glob("H.gf*.fits"))
    for path in blocks:
        shutil.copy(path, folder)
    (folder / "broken.fits").write_bytes((repo_root / UDS / "H.gf1.fits").read_bytes()[:5000])  # truncated
    (folder / "garbage.fits").write_text("not a FITS file")
    report = tmp_path / "report.json"
    result = run(folder, "-o", tmp_path / "uds.ecsv", *model_args(repo_root), "--report", report)
    assert result.exit_code == 0, result.output
    table = Table.read(tmp_path / "uds.ecsv")
    assert sorted(table["id"]) == sorted(p.name[:-5] for p in blocks)  # one row per readable stamp
    assert np.all(table["flags"] & StampFlag.RESIZED)  # 45-230 px blocks centre-cut/padded to 64
    assert np.isfinite(table["mag"]).all()
    import json

    summary = json.loads(report.read_text())
    assert {p["file"] for p in summary["problems"]} == {"broken.fits", "garbage.fits"}
    assert "2 file(s) skipped" in result.output


def test_a_single_2d_stamp_file_is_predicted_like_the_folder_holding_it(champion, tmp_path, repo_root):
    block = repo_root / UDS / "H.gf1.fits"
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(block, folder)
    assert run(block, "-o", tmp_path / "file.ecsv", *model_args(repo_root)).exit_code == 0
    assert run(folder, "-o", tmp_path / "folder.ecsv", *model_args(repo_root)).exit_code == 0
    one, other = Table.read(tmp_path / "file.ecsv"), Table.read(tmp_path / "folder.ecsv")
    assert list(one["id"]) == ["H.gf1"] and len(one) == 1
    for name in ("mag", "re_arcsec", "n", "ellipticity", "flags"):
        assert np.array_equal(one[name], other[name]), name


def test_mosaic_with_radec_and_xy_catalogues(champion, tmp_path, repo_root):
    mosaic = repo_root / UDS / "H.gf5.fits"  # 187 x 127 px with its HST WCS
    header = fits.getheader(mosaic, 1)
    from legato.io.mosaic import image_wcs

    wcs = image_wcs(header)
    pixels = np.array([[93.0, 63.0], [100.0, 70.0], [5.0, 60.0], [1000.0, 60.0]])  # inside, inside, edge, off
    sky = wcs.pixel_to_world(pixels[:, 0], pixels[:, 1])
    Table({"ID": [11, 12, 13, 14], "RA": sky.ra.deg, "DEC": sky.dec.deg}).write(tmp_path / "radec.ecsv")
    Table({"id": [11, 12, 13, 14], "x": pixels[:, 0] + 1, "y": pixels[:, 1] + 1}).write(tmp_path / "xy.csv", format="ascii.csv")
    outputs = {}
    for name in ("radec.ecsv", "xy.csv"):
        result = run(mosaic, "--catalog", tmp_path / name, "-o", tmp_path / f"{name}.parquet", *model_args(repo_root))
        assert result.exit_code == 0, result.output
        outputs[name] = Table.read(tmp_path / f"{name}.parquet")
    a, b = outputs["radec.ecsv"], outputs["xy.csv"]
    assert list(a["id"]) == [11, 12, 13, 14]
    assert list(a["flags"] & (StampFlag.NEAR_EDGE | StampFlag.OFF_IMAGE)) == [0, 0, StampFlag.NEAR_EDGE, StampFlag.OFF_IMAGE]
    assert np.isfinite(a["mag"][:3]).all() and np.isnan(a["mag"][3])
    np.testing.assert_array_equal(a["flags"], b["flags"])
    np.testing.assert_allclose(a["mag"], b["mag"], equal_nan=True)
    # missing position columns: one line, exit 1
    Table({"id": [1], "flux": [2.0]}).write(tmp_path / "bad.ecsv")
    result = run(mosaic, "--catalog", tmp_path / "bad.ecsv", "-o", tmp_path / "bad.fits", *model_args(repo_root))
    assert result.exit_code == 1 and "needs columns" in result.output and len(result.output.strip().splitlines()) == 1


def test_interrupted_run_resumes_without_losing_or_duplicating_rows(champion, cube, tmp_path, repo_root):
    from legato.flags import TrainingRange
    from legato.inference.predict import predict_catalogue
    from legato.io.stamp_inputs import open_source
    from legato.registry.resolve import resolve_model

    path, _, ids = cube
    model = resolve_model("champion", name=MODEL)
    estimator = model.load()
    training_range = TrainingRange.from_params_file(repo_root / "params.yaml")
    options = {"chunk_size": 7, "training_range": training_range, "progress": False, "estimator": estimator}

    reference = tmp_path / "reference.parquet"
    predict_catalogue(open_source(path), model, reference, **options)

    output = tmp_path / "resumed.parquet"

    def interrupt(index):
        if index == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_catalogue(open_source(path), model, output, on_chunk=interrupt, **options)
    assert not output.exists()  # nothing half-written
    parts = list(tmp_path.glob("resumed.parquet.parts/*/part_*.parquet"))
    assert len(parts) == 3
    summary = predict_catalogue(open_source(path), model, output, **options)
    assert summary["chunks_resumed"] == 3 and summary["rows_this_run"] == 48 - 21 and summary["chunks"] == 7
    a, b = Table.read(reference), Table.read(output)
    assert len(b) == 48 and len(set(b["id"])) == 48 and list(b["id"]) == list(ids)
    for name in a.colnames:
        np.testing.assert_array_equal(a[name], b[name])
    assert not (tmp_path / "resumed.parquet.parts").exists()


def test_bad_arguments_are_one_line_errors(champion, cube, tmp_path, repo_root):
    path, _, _ = cube
    for args, message in (
        ([path, "-o", tmp_path / "x.fits", "--model", "nosuchalias", *model_args(repo_root)], "no alias 'nosuchalias'"),
        ([path, "-o", tmp_path / "x.fits", "--model", "99", *model_args(repo_root)], "no version 99"),
        ([path, "-o", tmp_path / "x.txt", *model_args(repo_root)], "unknown output extension"),
        ([tmp_path / "missing.fits", "-o", tmp_path / "x.fits", *model_args(repo_root)], "input not found"),
    ):
        result = run(*args)
        assert result.exit_code == 1, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not list(tmp_path.glob("x.*"))


def test_pyfunc_accepts_flattened_stamps(champion, cube):
    import mlflow.pyfunc
    import pandas as pd

    version, _ = champion
    _, stamps, _ = cube
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}/{version}")
    good = stamps[6:10]
    flat = pd.DataFrame({"stamp": list(good.reshape(len(good), -1))})
    a = model.predict(flat)
    b = model.predict(good)
    pd.testing.assert_frame_equal(a, b)


def test_crb_adds_the_cramer_rao_bound_at_each_estimate(champion, cube, tmp_path, repo_root, raw_data):
    _, folder = champion
    path, _, ids = cube
    out = tmp_path / "bounds.fits"
    result = run(
        path, "-o", out, "--model", folder, "--params", repo_root / "params.yaml", "--no-progress", "--crb", "--psf", raw_data["psf"]
    )
    assert result.exit_code == 0, result.output
    table = Table.read(out, mask_invalid=False)
    assert table.colnames == [
        "id",
        "mag",
        "re_arcsec",
        "n",
        "q",
        "ellipticity",
        "crb_mag",
        "crb_re_arcsec",
        "crb_n",
        "crb_ellipticity",
        "flags",
    ]
    assert str(table["crb_mag"].unit) == "mag" and str(table["crb_re_arcsec"].unit) == "arcsec"
    flags = np.asarray(table["flags"])
    predicted = np.isfinite(np.asarray(table["mag"]))
    bounded = predicted & ((flags & StampFlag.NO_BOUND) == 0)
    assert bounded.sum() >= 0.8 * predicted.sum()
    for column in ("crb_mag", "crb_re_arcsec", "crb_n", "crb_ellipticity"):
        values = np.asarray(table[column])
        assert np.all(values[bounded] > 0) and np.all(np.isnan(values[~bounded])), column
    # stamps that were not predicted (3: NaN pixel, 5: all zeros) get no bound and no NO_BOUND flag
    assert not np.any(flags[[3, 5]] & StampFlag.NO_BOUND) and np.isnan(table["crb_mag"][3])
    result = run(path, "-o", tmp_path / "s.parquet", "--model", folder, "--engine", "spark", "--crb")
    assert result.exit_code == 1 and "run with the local engine only" in result.output


def test_refit_replaces_bright_estimates_by_the_exact_model_fit(champion, cube, tiny_sim, tmp_path, repo_root, raw_data):
    from legato.evaluation.crb_catalogue import stamp_set_noise
    from legato.io.stamps import read_stamp_set

    _, folder = champion
    path, _, _ = cube
    truth = read_stamp_set(tiny_sim / "test")[1]
    args = [*model_args(repo_root), "--model", folder, "--psf", raw_data["psf"]]
    network_path, refit_path = tmp_path / "network.fits", tmp_path / "refit.fits"
    assert run(path, "-o", network_path, *args).exit_code == 0
    network = Table.read(network_path, mask_invalid=False)
    ordered = np.sort(np.asarray(network["mag"], dtype=float)[np.isfinite(network["mag"])])
    limit = float(0.5 * (ordered[11] + ordered[12]))  # the 12 brightest estimates, halfway to the 13th: no row on the limit
    exposure = stamp_set_noise(tiny_sim / "test")["exposure_time"]
    result = run(path, "-o", refit_path, *args, "--refit-brighter-than", limit, "--exposure-time", exposure)
    assert result.exit_code == 0, result.output
    refit = Table.read(refit_path, mask_invalid=False)
    assert refit.colnames[:6] == network.colnames[:6] and {"refit", "mag_err", "n_err95"} <= set(refit.colnames)
    done = np.asarray(refit["refit"]) == 1
    bright = np.asarray(network["mag"]) < limit
    assert done.sum() >= 0.7 * bright.sum() > 0 and not np.any(done & ~bright)
    for column in ("mag", "re_arcsec", "n", "ellipticity"):
        np.testing.assert_array_equal(np.asarray(refit[column])[~done], np.asarray(network[column])[~done])
        assert np.all(np.isnan(np.asarray(refit[f"{column}_err"])[~done])) and np.all(np.asarray(refit[f"{column}_err"])[done] > 0)
    # the tiny network is rough; the refit of the same stamps lands close to the truth
    for column, tolerance in (("mag", 0.05), ("ellipticity", 0.05)):
        refit_error = np.median(np.abs(np.asarray(refit[column])[done] - np.asarray(truth[column])[done]))
        network_error = np.median(np.abs(np.asarray(network[column])[done] - np.asarray(truth[column])[done]))
        assert refit_error < min(tolerance, network_error), column
    result = run(path, "-o", tmp_path / "s.parquet", "--model", folder, "--engine", "spark", "--refit-brighter-than", 21)
    assert result.exit_code == 1 and "run with the local engine only" in result.output
    result = run(path, "-o", tmp_path / "alone.fits", *args, "--refit-blended")
    assert result.exit_code == 1 and "give both" in result.output and not (tmp_path / "alone.fits").exists()


def test_residuals_gallery_and_inspect(champion, cube, tmp_path, repo_root, raw_data):
    _, folder = champion
    path, _, ids = cube
    out = tmp_path / "fit.fits"
    gallery = tmp_path / "gallery"
    result = run(
        path,
        "-o",
        out,
        "--model",
        folder,
        "--params",
        repo_root / "params.yaml",
        "--no-progress",
        "--residuals",
        "--exposure-time",
        20000,
        "--psf",
        raw_data["psf"],
        "--gallery",
        gallery,
    )
    assert result.exit_code == 0, result.output
    table = Table.read(out, mask_invalid=False)
    assert table.colnames[-4:] == ["chi2_nu", "residual_flux_fraction", "residual_asymmetry", "flags"]
    predicted = np.isfinite(np.asarray(table["mag"]))
    chi2 = np.asarray(table["chi2_nu"])
    assert np.all(chi2[predicted] > 0) and np.all(np.isnan(chi2[~predicted]))
    flagged = (np.asarray(table["flags"]) & StampFlag.BAD_FIT) > 0
    import yaml

    threshold = yaml.safe_load((repo_root / "params.yaml").read_text())["fit_quality"]["chi2_threshold"]
    assert np.array_equal(flagged, predicted & (chi2 > threshold))
    assert (gallery / "gallery.png").is_file() and len(list(gallery.glob("*.fits"))) == 16

    blocks = tmp_path / "blocks"
    result = CliRunner().invoke(
        app,
        [
            "inspect",
            str(out),
            "--stamps",
            str(path),
            "--out",
            str(blocks),
            "--id",
            str(ids[3]),
            "--id",
            str(ids[10]),
            "--worst",
            "2",
            "--psf",
            str(raw_data["psf"]),
        ],
    )
    assert result.exit_code == 0, result.output
    with fits.open(blocks / f"{ids[3]}.fits") as hdul:  # stamp 3 has a NaN pixel: no estimate, no model
        assert hdul["MODEL"].header["NOMODEL"] is True
    with fits.open(blocks / f"{ids[10]}.fits") as hdul:
        assert hdul["MODEL"].header["MAG"] == pytest.approx(float(table["mag"][10]), abs=1e-4)
    worst = [str(i) for i in np.asarray(table["id"])[np.argsort(-np.nan_to_num(chi2, nan=-1))[:2]]]
    assert all((blocks / f"{i}.fits").is_file() for i in worst) and len(list(blocks.glob("*.fits"))) == 4

    result = CliRunner().invoke(
        app,
        [
            "inspect",
            str(out),
            "--stamps",
            str(path),
            "--out",
            str(tmp_path / "x"),
            "--id",
            "999999",
            "--id",
            "nope",
            "--psf",
            str(raw_data["psf"]),
        ],
    )
    assert result.exit_code == 1 and "id(s) not in the catalogue: 999999, nope" in result.output
    assert not (tmp_path / "x").exists()


def test_symmetries_average_the_flips_and_rotations_and_are_recorded(champion, cube, tmp_path, repo_root):
    from legato.errors import ConfigError
    from legato.models.estimator import LoadedEstimator
    from legato.symmetry import dihedral

    version, folder = champion
    path, stamps, _ = cube
    good = stamps[6:30]
    averaged = LoadedEstimator(folder, symmetries=8)
    once, flipped = averaged.predict(good), averaged.predict(dihedral(good, np.full(len(good), 5)))
    plain = LoadedEstimator(folder).predict(good)
    for name in ("mag", "re_arcsec", "n", "ellipticity"):
        # the 8 flips of a flipped stamp are the 8 flips of the stamp: the average does not see the flip
        np.testing.assert_allclose(flipped[name], once[name], rtol=1e-5)
        assert not np.allclose(once[name], plain[name], rtol=1e-7)
    for bad in (0, 9, 2.5):
        with pytest.raises(ConfigError, match="symmetries must be an integer from 1 to 8"):
            LoadedEstimator(folder, symmetries=bad)

    out = tmp_path / "cat.fits"
    result = run(path, "-o", out, *model_args(repo_root), "--symmetries", 8)
    assert result.exit_code == 0, result.output
    table = Table.read(out, mask_invalid=False)
    assert int({k.lower(): v for k, v in table.meta.items()}["model_symmetries"]) == 8
    np.testing.assert_allclose(table["mag"][6:30], once["mag"], rtol=1e-6)
    # an interrupted plain run's parts are not reused by an averaged one (and the reverse)
    assert run(path, "-o", tmp_path / "plain.fits", *model_args(repo_root)).exit_code == 0
    assert not np.allclose(Table.read(tmp_path / "plain.fits", mask_invalid=False)["mag"][6:30], table["mag"][6:30], rtol=1e-7)

    assert run(path, "-o", tmp_path / "x.fits", *model_args(repo_root), "--symmetries", 9).exit_code != 0
    assert not list(tmp_path.glob("x.*"))


def test_the_graphs_are_built_while_the_first_chunk_is_read_and_change_no_value(champion, cube):
    from legato.inference.predict import prefetch
    from legato.models.estimator import LoadedEstimator

    _, folder = champion
    _, stamps, _ = cube
    good = stamps[6:30]
    cold = LoadedEstimator(folder).predict(good, batch_size=16)
    warm = LoadedEstimator(folder)
    warm.warm_up(16)
    assert warm._compiled is not None
    again = warm.predict(good, batch_size=16)  # a batch of 16, then one of 8: both traced already
    for name in cold:
        np.testing.assert_array_equal(again[name], cold[name])

    events = []

    def chunks():
        for k in range(3):
            events.append(f"read {k}")
            yield k

    for depth in (2, 0):
        events.clear()
        items = prefetch(chunks(), depth, meanwhile=lambda: events.append("warm up"))
        first = next(items)
        assert "warm up" in events  # done before the first chunk reaches the network
        assert [first, *items] == [0, 1, 2] and events.count("warm up") == 1
    assert events[0] == "warm up"  # without a reader thread: before the first chunk is read
