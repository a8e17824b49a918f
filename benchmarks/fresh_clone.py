"""Benchmark: a new user's first `make run`, on a fresh clone, timed end to end.

Clones the repository (its committed HEAD) into a temporary folder, then times
`make install` (the locked environment; reported apart) and `make run` (pull
of the published artifacts, import of their MLflow history, `dvc repro`,
`dvc status`, `legato where`). Afterwards it checks what the issue asks of a
fresh clone: `dvc status` up to date, `git status` clean, the champion is the
production estimator, and `mlflow server` (the UI's backend, started on
127.0.0.1 and stopped by PID) lists the shipped runs. Writes
reports/fresh_clone.json.

    python benchmarks/fresh_clone.py            # ~10-20 min on 2 cores, most of it the install
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 30 * 60


def timed(command: list[str], cwd: Path, log: Path) -> tuple[float, int, str]:
    """Run a command, its output to ``log``; (wall seconds, return code, output)."""
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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
            f"{server.url}/api/2.0/mlflow/runs/search", data=json.dumps({"experiment_ids": [experiment], "max_results": 1000}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            listed = {run["info"]["run_id"] for run in json.load(response).get("runs", [])}
        pid = server.process.pid
    return {"shipped": len(manifest["runs"]), "listed_by_mlflow_server": len(listed), "all_shipped_listed": set(manifest["runs"]) <= listed, "server_pid_stopped": pid}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, default=REPO / "reports/fresh_clone.json")
    parser.add_argument("--keep", action="store_true", help="Keep the clone (its path is printed).")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="legato-fresh-"))
    clone = workdir / "legato"
    try:
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True, check=True).stdout.strip()
        install_s, install_rc, _ = timed(["make", "install"], clone, workdir / "install.log")
        run_s, run_rc, output = timed(["make", "run"], clone, workdir / "run.log")
        stages = re.findall(r"Running stage '([\w-]+)'", output)
        dvc_status = subprocess.run([str(clone / ".venv/bin/dvc"), "status"], cwd=clone, capture_output=True, text=True).stdout.strip()
        git_status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True).stdout.strip()
        champion = re.search(r"champion: (\S+) = version (\d+) \(([^,]+),", output)
        report = {
            "revision": revision,
            "install_seconds": round(install_s, 1),
            "install_ok": install_rc == 0,
            "make_run_seconds": round(run_s, 1),
            "make_run_ok": run_rc == 0,
            "stages_run": stages,
            "dvc_status": dvc_status,
            "git_status_clean": git_status == "",
            "git_status": git_status.splitlines()[:20],
            "champion": {"uri": champion.group(1), "version": int(champion.group(2)), "architecture": champion.group(3)} if champion else None,
            "mlflow_ui": shipped_runs_in_ui(clone) if run_rc == 0 else None,
            "command": "python benchmarks/fresh_clone.py",
        }
        report["targets"] = {
            "make_run_within_30_min": run_rc == 0 and run_s <= TARGET_SECONDS,
            "dvc_up_to_date": "up to date" in dvc_status,
            "git_clean": report["git_status_clean"],
            "champion_is_production": bool(champion) and champion.group(3) == "production",
            "ui_shows_shipped_runs": bool(report["mlflow_ui"]) and report["mlflow_ui"]["all_shipped_listed"],
        }
        if run_rc != 0:
            report["make_run_tail"] = output.strip().splitlines()[-30:]
    finally:
        if args.keep:
            print(f"clone kept at {clone}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
