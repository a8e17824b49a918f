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
