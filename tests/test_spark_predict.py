"""The Spark engine (mlflow spark_udf on local[2]) matches the local streaming path row for row."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from astropy.table import Table

from legato.flags import StampFlag

pytest.importorskip("pyspark")
pytestmark = pytest.mark.slow  # starts a Spark session (JVM): run by make test and CI

MODEL = "legato-sersic-spark-test"
UDS = "data/candels_uds_galfit_blocks"


@pytest.fixture(scope="module")
def registered(trained):
    from legato.registry.store import registry_client
    from legato.registry.versions import register_estimator

    out, _ = trained
    version, _ = register_estimator(registry_client(), MODEL, out / "arch1")
    return version.version


@pytest.fixture(scope="module")
def spark():
    from legato.inference.spark import spark_session

    session = spark_session("local[2]", app_name="legato-test")
    yield session
    session.stop()


def _shards(tiny_sim, folder):
    """The tiny test set as two Parquet shards, with a NaN stamp and a stamp of the wrong length."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from legato.io.stamps import read_stamp_set

    stamps, labels, _ = read_stamp_set(tiny_sim / "test")
    flat = [s.ravel().astype(np.float32) for s in stamps]
    flat[4] = flat[4].copy()
    flat[4][100] = np.nan
    flat[9] = flat[9][:100]
    ids = np.asarray(labels["id"], dtype=np.int64)
    folder.mkdir()
    for k, part in enumerate((slice(0, 30), slice(30, None))):
        table = pa.table({"id": ids[part], "stamp": pa.array(flat[part], type=pa.list_(pa.float32()))})
        pq.write_table(table, folder / f"shard_{k}.parquet")
    return ids


def _local(path, model, output, repo_root):
    from legato.flags import TrainingRange
    from legato.inference.predict import predict_catalogue
    from legato.io.stamp_inputs import open_source

    training_range = TrainingRange.from_params_file(repo_root / "params.yaml")
    predict_catalogue(open_source(path), model, output, chunk_size=16, training_range=training_range, progress=False)
    return Table.read(output).to_pandas().sort_values("id").reset_index(drop=True)


def _spark(spark, path, model, output, repo_root):
    import pandas as pd

    from legato.flags import TrainingRange
    from legato.inference.spark import predict_spark

    training_range = TrainingRange.from_params_file(repo_root / "params.yaml")
    summary = predict_spark(spark, model.pyfunc_uri, path, output, training_range=training_range, symmetries=model.symmetries)
    frame = pd.read_parquet(output).sort_values("id").reset_index(drop=True)
    assert summary["rows"] == len(frame)
    return frame


def _assert_same(local, distributed):
    assert list(local["id"]) == list(distributed["id"])  # same rows, none lost or duplicated
    np.testing.assert_array_equal(local["flags"].to_numpy(), distributed["flags"].to_numpy())
    for name in ("mag", "re_arcsec", "n", "q", "ellipticity"):
        np.testing.assert_allclose(
            local[name].to_numpy(np.float32), distributed[name].to_numpy(np.float32), rtol=2e-5, atol=1e-6, equal_nan=True
        )


def test_spark_matches_local_on_parquet_and_fits_shards(registered, spark, tiny_sim, tmp_path, repo_root):
    from legato.registry.resolve import resolve_model

    model = resolve_model(registered, name=MODEL)
    shards = tmp_path / "shards"
    ids = _shards(tiny_sim, shards)
    local = _local(shards, model, tmp_path / "local.parquet", repo_root)
    distributed = _spark(spark, shards, model, tmp_path / "spark.parquet", repo_root)
    assert sorted(local["id"]) == sorted(ids)
    assert local.loc[local["id"] == ids[4], "flags"].item() == StampFlag.BAD_PIXELS | StampFlag.FAILED_VALIDATION
    assert local.loc[local["id"] == ids[9], "flags"].item() == StampFlag.FAILED_VALIDATION
    _assert_same(local, distributed)

    # --symmetries: the executors average the same flips/rotations as the local engine
    model.symmetries = 4
    averaged = _local(shards, model, tmp_path / "local_4.parquet", repo_root)
    _assert_same(averaged, _spark(spark, shards, model, tmp_path / "spark_4.parquet", repo_root))
    assert not np.allclose(averaged["mag"], local["mag"], rtol=1e-7, equal_nan=True)
    model.symmetries = 1

    # FITS shards (the real UDS stamps, resized on the executors); the corrupt file is skipped by both
    folder = tmp_path / "fits"
    folder.mkdir()
    for path in sorted((repo_root / UDS).glob("H.gf1[0-2].fits")):
        shutil.copy(path, folder)
    (folder / "broken.fits").write_text("not FITS")
    local = _local(folder, model, tmp_path / "local_fits.parquet", repo_root)
    distributed = _spark(spark, folder, model, tmp_path / "spark_fits.parquet", repo_root)
    assert len(local) == 3 and np.all(local["flags"].to_numpy() & int(StampFlag.RESIZED))
    _assert_same(local, distributed)
