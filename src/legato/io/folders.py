"""Output folders written whole or not at all: built under ``<name>.partial``, then swapped in."""

from __future__ import annotations

import shutil
from pathlib import Path


def publish_folder(staging: str | Path, target: str | Path) -> Path:
    """Replace ``target`` by the finished ``staging`` folder (the old one removed first); the target path."""
    staging, target = Path(staging), Path(target)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return target


def staging_with(members: dict[str, str | Path], out: str | Path) -> tuple[Path, dict[str, dict]]:
    """A fresh ``<out>.partial`` folder holding each of ``members`` (name -> folder) copied in under its name,
    and each member's lineage: the ``run_id`` and ``model_uri`` of its ``run.json`` (empty without one).

    The caller writes the rest and swaps the folder in with :func:`publish_folder`.
    """
    import json

    out = Path(out)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    lineage = {}
    for name, folder in members.items():
        shutil.copytree(folder, staging / name)
        run = Path(folder) / "run.json"
        record = json.loads(run.read_text()) if run.is_file() else {}
        lineage[name] = {k: record[k] for k in ("run_id", "model_uri") if k in record}
    return staging, lineage
