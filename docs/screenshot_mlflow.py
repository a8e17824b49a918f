"""Screenshot of the MLflow comparison view of the arch1, arch2 and classical-imfit runs (headless Chromium).

Starts the real `mlflow server` on 127.0.0.1 over the project's store, opens the
"Compare runs" page of the newest run of each name in headless Chromium (Debian's
`chromium` package), saves the PNG and stops the server by PID.

    python docs/screenshot_mlflow.py --out docs/img/mlflow_compare.png
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import urllib.parse
from pathlib import Path

from legato.serving.server import tracking_server
from legato.tracking import resolve_tracking_uri

RUN_NAMES = ("arch1", "arch2", "classical-imfit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None, help="tracking store (default: the project's sqlite:///mlflow.db)")
    parser.add_argument("--experiment", default="legato")
    parser.add_argument("--out", type=Path, default=Path("docs/img/mlflow_compare.png"))
    parser.add_argument("--size", default="1600,1100")
    args = parser.parse_args()

    from mlflow import MlflowClient

    store = resolve_tracking_uri(args.store)
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name(args.experiment)
    runs = []
    for name in RUN_NAMES:
        found = client.search_runs(
            [experiment.experiment_id], f"attributes.run_name = '{name}'", order_by=["attributes.start_time DESC"], max_results=1
        )
        if found:
            runs.append(found[0].info.run_id)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium not found: apt-get install chromium")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tracking_server(store, Path("mlruns")) as server:
        query = urllib.parse.urlencode({"runs": json.dumps(runs), "experiments": json.dumps([experiment.experiment_id])})
        url = f"{server.url}/#/compare-runs?{query}"
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--window-size={args.size}",
                "--virtual-time-budget=20000",
                f"--screenshot={args.out.resolve()}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )
    print(f"wrote {args.out} ({len(runs)} runs: {url})")


if __name__ == "__main__":
    main()
