"""Benchmark: a new user's first `make run`, on a fresh clone, timed end to end.

Clones the repository (its committed HEAD) into a temporary folder, then times
`make install` (the locked environment; reported apart) and `make run` (pull
of the published artifacts, import of their MLflow history, `dvc repro`,
`dvc status`, `legato where`). Afterwards it checks what the issue asks of a
fresh clone: `dvc status` up to date, `git status` clean, only the regenerated
stages ran, the champion is the version the shipped registry history holds
(``mlflow_history/manifest.json``: the register stage's holder or a rollback's), and `mlflow server` (the
UI's backend, started on 127.0.0.1 and stopped by PID) lists the shipped runs.

With ``--cpu avx2`` it does the same a second time on another clone as an
AVX2-only CPU would: NumPy's AVX-512 dispatch off
(``NPY_DISABLE_CPU_FEATURES``; on an AVX-512 machine this regenerates exactly
the stamp bytes an AMD EPYC AVX2 machine does, docs/reproducibility.md) and
TensorFlow's oneDNN capped at AVX2. ``--cold-install`` times the locked install
into a new environment with pip's cache off. The report names the CPU and its
vector flags. Writes reports/fresh_clone.json.

    python benchmarks/fresh_clone.py --cpu native --cpu avx2 --cold-install   # ~15 min on 2 cores
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 10 * 60
REGENERATED_STAGES = {"simulate", "simulate_noiseless", "simulate_bands", "simulate_realistic", "assemble_realistic"}
CPU_ENV = {"native": {}, "avx2": {"NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR", "ONEDNN_MAX_CPU_ISA": "AVX2"}}


def timed(command: list[str], cwd: Path, log: Path, env: dict | None = None) -> tuple[float, int, str]:
    """Run a command, its output to ``log``; (wall seconds, return code, output)."""
    start = time.perf_counter()
    result = subprocess.run(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ, **(env or {}))
    )
    log.write_text(result.stdout)
    return time.perf_counter() - start, result.returncode, result.stdout


def shipped_runs_in_ui(clone: Path) -> dict:
    """Start `mlflow server` on the clone's store, count the runs its REST API lists, stop it."""
    sys.path.insert(0, str(REPO / "src"))
    from legato.serving.server import tracking_server

    manifest = json.loads((clone / "mlflow_history/manifest.json").read_text())
    server = tracking_server(f"sqlite:///{clone / 'mlflow.db'}", clone / "mlruns", log_path=clone / "mlflow_server.log")
    server.command[0] = str(clone / ".venv/bin/python")
    with server:
        with urllib.request.urlopen(f"{server.url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=legato", timeout=30) as response:
            experiment = json.load(response)["experiment"]["experiment_id"]
        request = urllib.request.Request(
            f"{server.url}/api/2.0/mlflow/runs/search",
            data=json.dumps({"experiment_ids": [experiment], "max_results": 1000}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            listed = {run["info"]["run_id"] for run in json.load(response).get("runs", [])}
        pid = server.process.pid
    return {
        "shipped": len(manifest["runs"]),
        "listed_by_mlflow_server": len(listed),
        "all_shipped_listed": set(manifest["runs"]) <= listed,
        "server_pid_stopped": pid,
    }


def stamps_digest(folder: Path) -> str:
    """md5 over a regenerated set's stamp files (names and bytes), its fingerprints left out."""
    digest = hashlib.md5()
    for path in sorted(folder.rglob("stamps_*.fits")):
        digest.update(path.relative_to(folder).as_posix().encode() + hashlib.md5(path.read_bytes()).digest())
    return digest.hexdigest()


def cold_install(workdir: Path) -> dict:
    """The locked install into a new environment with pip's cache off (downloads every wheel)."""
    venv = workdir / "cold-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    seconds, rc, _ = timed(
        [
            str(venv / "bin/python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-cache-dir",
            "--require-hashes",
            "--no-deps",
            "-r",
            str(REPO / "requirements.lock"),
        ],
        workdir,
        workdir / "cold_install.log",
    )
    shutil.rmtree(venv, ignore_errors=True)
    return {"seconds": round(seconds, 1), "ok": rc == 0, "pip_cache": "off (--no-cache-dir)"}


def registered_champion(clone: Path) -> int | None:
    """The champion version the shipped registry history holds (``mlflow_history/manifest.json``).

    That is the register stage's holder, or the version a later ``legato rollback`` gave the alias back to.
    """
    path = clone / "mlflow_history/manifest.json"
    if not path.is_file():
        return None
    for model in json.loads(path.read_text())["registry"]:
        for version in model["versions"]:
            if "champion" in version["aliases"]:
                return int(version["version"])
    return None


def fresh_clone_run(workdir: Path, cpu: str) -> dict:
    """Clone, install, `make run` with the CPU's environment; what ran and what the clone looks like after."""
    clone = workdir / f"legato-{cpu}"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True, check=True).stdout.strip()
    install_s, install_rc, _ = timed(["make", "install"], clone, workdir / f"install-{cpu}.log")
    run_s, run_rc, output = timed(["make", "run"], clone, workdir / f"run-{cpu}.log", CPU_ENV[cpu])
    stages = re.findall(r"Running stage '([\w-]+)'", output)
    dvc_status = subprocess.run([str(clone / ".venv/bin/dvc"), "status"], cwd=clone, capture_output=True, text=True).stdout.strip()
    git_status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True).stdout.strip()
    champion = re.search(r"champion: (\S+) = version (\d+) \(([^,]+),", output)
    report = {
        "revision": revision,
        "environment": CPU_ENV[cpu],
        "install_seconds": round(install_s, 1),
        "install_ok": install_rc == 0,
        "make_run_seconds": round(run_s, 1),
        "make_run_ok": run_rc == 0,
        "stages_run": stages,
        "regenerated": [line.removeprefix("regenerated: ") for line in output.splitlines() if line.startswith("regenerated: ")],
        "simulated_stamps_md5": stamps_digest(clone / "datasets/simulated") if (clone / "datasets/simulated").is_dir() else None,
        "dvc_status": dvc_status,
        "git_status_clean": git_status == "",
        "git_status": git_status.splitlines()[:20],
        "champion": {"uri": champion.group(1), "version": int(champion.group(2)), "architecture": champion.group(3)} if champion else None,
        "mlflow_ui": shipped_runs_in_ui(clone) if run_rc == 0 else None,
    }
    report["targets"] = {
        "make_run_within_10_min": run_rc == 0 and run_s <= TARGET_SECONDS,
        "only_regenerated_stages_ran": set(stages) == REGENERATED_STAGES,
        "dvc_up_to_date": "up to date" in dvc_status,
        "git_clean": report["git_status_clean"],
        "champion_is_the_registered_one": bool(champion) and int(champion.group(2)) == registered_champion(clone),
        "ui_shows_shipped_runs": bool(report["mlflow_ui"]) and report["mlflow_ui"]["all_shipped_listed"],
    }
    if run_rc != 0:
        report["make_run_tail"] = output.strip().splitlines()[-30:]
    return report


def main() -> None:
    sys.path.insert(0, str(REPO / "src"))
    from legato.reports import machine_description

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, default=REPO / "reports/fresh_clone.json")
    parser.add_argument("--cpu", action="append", choices=sorted(CPU_ENV), default=None, help="native (default) and/or avx2")
    parser.add_argument("--cold-install", action="store_true", help="also time the locked install with pip's cache off")
    parser.add_argument("--keep", action="store_true", help="Keep the clones (their folder is printed).")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="legato-fresh-"))
    report: dict = {"machine": machine_description(), "command": "python benchmarks/fresh_clone.py " + " ".join(sys.argv[1:])}
    try:
        if args.cold_install:
            report["cold_install"] = cold_install(workdir)
        report["runs"] = {cpu: fresh_clone_run(workdir, cpu) for cpu in args.cpu or ["native"]}
    finally:
        if args.keep:
            print(f"clones kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    digests = {cpu: run["simulated_stamps_md5"] for cpu, run in report["runs"].items()}
    report["regenerated_bytes_differ_between_cpus"] = len(set(digests.values())) > 1 if len(digests) > 1 else None
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
