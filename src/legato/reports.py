"""Writing JSON reports atomically."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def write_json(path: str | Path, payload: dict) -> Path:
    """Write a JSON report atomically (temporary file, then rename); return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


TIMING_KEYS = ("wall_seconds", "render_seconds", "stamps_per_second", "cpu_count", "workers", "fingerprint_check")
TIMING_DIR = Path("reports/timing")


def write_report_and_timing(path: str | Path | None, summary: dict, timing_dir: str | Path = TIMING_DIR) -> None:
    """Write a stage summary whose bytes depend only on its inputs, and its timing apart.

    A stage that is regenerated rather than published (a stamp set) must
    write the same report on every machine, or ``dvc repro`` on a fresh clone
    would change ``dvc.lock``. The machine-dependent keys (:data:`TIMING_KEYS`)
    go to ``<timing_dir>/<name of path>`` instead (not tracked).

    Parameters
    ----------
    path : str, Path or None
        The report (nothing is written when None).
    summary : dict
        The stage summary, timing keys included.
    timing_dir : str or Path
        Folder of the timing files.
    """
    if path is None:
        return
    path = Path(path)
    write_json(path, {key: value for key, value in summary.items() if key not in TIMING_KEYS})
    write_json(Path(timing_dir) / path.name, {key: summary[key] for key in TIMING_KEYS if key in summary})


def regeneration_summary(timing_dir: str | Path = TIMING_DIR) -> list[str]:
    """One line per stamp set regenerated on this machine: its time and how its fingerprints settled.

    Read from the timing files of the regenerating stages (the ones holding a
    ``fingerprint_check``), so it describes the last ``dvc repro`` here.
    """
    import json

    lines = []
    for path in sorted(Path(timing_dir).glob("*.json")):
        try:
            timing = json.loads(path.read_text())
        except ValueError:
            continue
        check = timing.get("fingerprint_check")
        if not isinstance(check, dict):
            continue
        splits = check.get("splits", {})
        outcomes = sorted({str(s.get("outcome")) for s in splits.values()})
        deviations = [s["largest_deviation"] for s in splits.values() if isinstance(s.get("largest_deviation"), (int, float))]
        seconds = timing.get("wall_seconds")
        line = f"{check.get('set')}: {', '.join(splits)} regenerated" + (
            f" in {seconds:.0f} s" if isinstance(seconds, (int, float)) else ""
        )
        line += f"; fingerprints {'/'.join(outcomes)}"
        if deviations:
            line += f" (largest deviation {max(deviations):.2g} of the tolerance)"
        lines.append(line)
    return lines


def machine_description() -> dict:
    """This CPU's model name, core count and vector instruction-set flags (from /proc/cpuinfo), for benchmark reports."""
    model, flags = platform.processor(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    vector = sorted(flag for flag in flags if flag.startswith(("avx", "fma", "amx", "sse4")))
    return {"model": model, "cores": os.cpu_count(), "vector_flags": vector, "avx512": "avx512f" in flags}
