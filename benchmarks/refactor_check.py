"""Does a change leave the pipeline's outputs alone? The toy pipeline run at two revisions, output by output.

A refactor must not change what the pipeline computes. At full scale some
stages take an hour, so this script runs the whole pipeline (``dvc repro``, the
real tools) at the toy scale of ``tests/test_pipeline_e2e.py`` once with the
code of each revision, on this machine, and compares every stage output that
``dvc.lock`` records:

- ``identical``: the same bytes (same DVC hash);
- ``same content``: JSON reports equal once run-specific values are removed
  (timings, run ids, dates, the code digest, paths of the scratch folders);
  FITS tables and images equal in every HDU's data and in header values;
- ``differs``: anything else, with the first difference found.

Estimator folders hold Keras files with a save date inside, so they never
match byte for byte; their scores (``reports/table1.json`` and the like) carry
the comparison, and TensorFlow runs on one thread with deterministic kernels in
both runs so that the same code trains the same weights. Great Expectations data
docs and the MLflow history export carry timestamps and random ids and are not
compared. Usage::

    python benchmarks/refactor_check.py --base 374a838 --head HEAD --out reports/refactor_check.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

VOLATILE = (
    "seconds",
    "per_second",
    "time",
    "run_id",
    "date",
    "timestamp",
    "created",
    "code",
    "git_revision",
    "model_uri",
    "uri",
    "path",
    "inputs",  # digests of input files, which are compared as outputs of their own stages
)
#: one thread and deterministic kernels, so that a network trained twice on the same data has the same weights
DETERMINISTIC = {"TF_DETERMINISTIC_OPS": "1", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
#: header keys that hold a run's dates and timings (the classical fitter's resume digest includes the inputs' modification times)
VOLATILE_HEADER = ("DATE", "CHECKSUM", "DATASUM", "FINGERPR", "SECONDS", "FITRATE", "FITWALL")


def toy_params(params: dict, toy: Path) -> dict:
    """``params`` at the toy scale of ``toy`` (tests/toy_pipeline.yaml: each section's values replace the file's)."""
    for section, values in yaml.safe_load(toy.read_text()).items():
        params[section].update(values)
    return params


def run(cmd: list, cwd: Path, env: dict) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed in {cwd}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def toy_pipeline(repo_root: Path, revision: str, work: Path) -> tuple[Path, float]:
    """The revision's files in ``work``, its data pulled, the toy pipeline reproduced with its own code; the seconds."""
    work.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", revision], cwd=repo_root, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
    env = dict(
        os.environ,
        PYTHONPATH=str(work / "src"),  # this revision's legato, ahead of the installed one
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        DVC_NO_ANALYTICS="1",
        MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}",
        PYTHONHASHSEED="0",
        **DETERMINISTIC,
    )
    run(["git", "init", "-q"], work, env)
    run(["git", "add", "-A"], work, env)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", revision], work, env)
    dvc = [sys.executable, "-m", "dvc"]
    run([*dvc, "pull", "-q", "data.dvc"], work, env)
    run([*dvc, "pull", "-q", "train_production"], work, env)
    run(
        [*dvc, "pull", "-q", "train_scenes"], work, env
    )  # the frozen trainings are published, not retrained (as tests/test_pipeline_e2e.py)
    params = toy_params(yaml.safe_load((work / "params.yaml").read_text()), repo_root / "tests/toy_pipeline.yaml")
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    began = time.perf_counter()
    run([*dvc, "repro"], work, env)
    return work, time.perf_counter() - began


def recorded_outputs(work: Path) -> dict[str, dict]:
    """``{stage: {path: md5}}`` of every output dvc.lock records."""
    lock = yaml.safe_load((work / "dvc.lock").read_text())
    return {stage: {o["path"]: o.get("md5") for o in entry.get("outs", [])} for stage, entry in lock["stages"].items()}


def scrubbed(value, roots: tuple[str, ...]):
    """A JSON value without its run-specific entries (keys naming times, ids, dates, digests; scratch paths)."""
    if isinstance(value, dict):
        return {k: scrubbed(v, roots) for k, v in value.items() if not any(word in k.lower() for word in VOLATILE)}
    if isinstance(value, list):
        return [scrubbed(v, roots) for v in value]
    if isinstance(value, str):
        for root in roots:
            value = value.replace(root, "<work>")
    return value


def first_difference(a, b, where: str = "") -> str | None:
    """Where two JSON values first differ (None when equal)."""
    if type(a) is not type(b):
        return f"{where or '/'}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{where}/{key}: only in {'head' if key not in a else 'base'}"
            found = first_difference(a[key], b[key], f"{where}/{key}")
            if found:
                return found
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} vs {len(b)} items"
        for k, (x, y) in enumerate(zip(a, b)):
            found = first_difference(x, y, f"{where}[{k}]")
            if found:
                return found
        return None
    return None if a == b else f"{where}: {a!r} vs {b!r}"


def fits_difference(a: Path, b: Path) -> str | None:
    """Where two FITS files first differ in data or header values (None when equal; dates and checksums ignored)."""
    import numpy as np
    from astropy.io import fits

    with fits.open(a) as x, fits.open(b) as y:
        if len(x) != len(y):
            return f"{len(x)} vs {len(y)} HDUs"
        for k, (u, v) in enumerate(zip(x, y)):
            keys = {c for c in set(u.header) | set(v.header) if c not in VOLATILE_HEADER}
            for key in sorted(keys):
                if u.header.get(key) != v.header.get(key):
                    return f"HDU {k} header {key}: {u.header.get(key)!r} vs {v.header.get(key)!r}"
            if u.data is None or v.data is None:
                if (u.data is None) != (v.data is None):
                    return f"HDU {k}: data in one only"
                continue
            if hasattr(u.data, "columns"):
                for name in u.data.columns.names:
                    if any(word in name.lower() for word in VOLATILE):  # a per-row timing such as fit_seconds
                        continue
                    if not np.array_equal(np.asarray(u.data[name]), np.asarray(v.data[name]), equal_nan=u.data[name].dtype.kind == "f"):
                        return f"HDU {k} column {name}"
            elif not np.array_equal(u.data, v.data, equal_nan=True):
                return f"HDU {k} pixels"
    return None


def compare_output(path: str, base: Path, head: Path) -> dict:
    """The verdict on one output path (a file or a folder of files)."""
    a, b = base / path, head / path
    if not (a.exists() and b.exists()):  # a stage or output one revision adds or removes
        return {"verdict": "differs", "detail": f"only at {'head' if b.exists() else 'base'}"}
    if path.endswith("_docs") or path == "datasets/validation" or path == "mlflow_history":
        return {"verdict": "not comparable (Great Expectations data docs and MLflow exports carry timestamps and random ids)"}
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file()) if a.is_dir() else [Path()]
    other = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) if b.is_dir() else [Path()]
    if files != other:
        return {"verdict": "differs", "detail": f"files {sorted(set(map(str, files)) ^ set(map(str, other)))[:5]}"}
    worst = "identical"
    for name in files:
        x, y = a / name, b / name
        if x.read_bytes() == y.read_bytes():
            continue
        suffix = x.name.lower()
        if suffix.endswith(".json"):
            roots = (str(base), str(head))
            found = first_difference(scrubbed(json.loads(x.read_text()), roots), scrubbed(json.loads(y.read_text()), roots))
        elif suffix.endswith((".fits", ".fits.gz")):
            found = fits_difference(x, y)
        elif suffix.endswith(".keras") or suffix in ("mlmodel", "estimator.json", "run.json", "model_card.md") or "mlruns" in str(name):
            worst = "estimator (scored by the reports)" if worst == "identical" else worst
            continue
        else:
            found = "bytes"
        if found:
            return {"verdict": "differs", "detail": f"{name}: {found}"}
        worst = "same content" if worst == "identical" else worst
    return {"verdict": worst}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="Revision before the change (git).")
    parser.add_argument("--head", default="HEAD", help="Revision after the change (git).")
    parser.add_argument("--out", type=Path, default=Path("reports/refactor_check.json"))
    parser.add_argument(
        "--intended",
        action="append",
        default=[],
        metavar="STAGE:PATH=WHY",
        help="An output the change means to alter, and why (reported as intended, not as a difference).",
    )
    args = parser.parse_args()
    intended = dict(item.split("=", 1) for item in args.intended)
    repo_root = Path(__file__).resolve().parents[1]
    revisions = {
        k: subprocess.run(["git", "rev-parse", "--short", r], cwd=repo_root, capture_output=True, text=True, check=True).stdout.strip()
        for k, r in (("base", args.base), ("head", args.head))
    }
    with tempfile.TemporaryDirectory(prefix="legato-refactor-") as tmp:
        base, base_seconds = toy_pipeline(repo_root, revisions["base"], Path(tmp) / "base")
        head, head_seconds = toy_pipeline(repo_root, revisions["head"], Path(tmp) / "head")
        base_outs, head_outs = recorded_outputs(base), recorded_outputs(head)
        stages = {}
        for stage in sorted(set(base_outs) | set(head_outs)):
            paths = sorted(set(base_outs.get(stage, {})) | set(head_outs.get(stage, {})))
            stages[stage] = {
                p: {"verdict": "identical"}
                if base_outs.get(stage, {}).get(p) == head_outs.get(stage, {}).get(p)
                else compare_output(p, base, head)
                for p in paths
            }
    for key, why in intended.items():
        stage, path = key.split(":", 1)
        if stages.get(stage, {}).get(path, {}).get("verdict") == "differs":
            stages[stage][path] = {"verdict": "intended", "detail": stages[stage][path]["detail"], "why": why}
    counts: dict[str, int] = {}
    for outputs in stages.values():
        for verdict in outputs.values():
            counts[verdict["verdict"]] = counts.get(verdict["verdict"], 0) + 1
    report = {
        "what": "the toy pipeline (tests/test_pipeline_e2e.py scale) run with the code of each revision; every dvc.lock output compared",
        "revisions": revisions,
        "repro_seconds": {"base": round(base_seconds, 1), "head": round(head_seconds, 1)},
        "counts": counts,
        "unchanged": counts.get("differs", 0) == 0,
        "stages": stages,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("revisions", "repro_seconds", "counts", "unchanged")}, indent=2))
    for stage, outputs in stages.items():
        for path, verdict in outputs.items():
            if verdict["verdict"] == "differs":
                print(f"differs: {stage} {path}: {verdict['detail']}")


if __name__ == "__main__":
    main()
