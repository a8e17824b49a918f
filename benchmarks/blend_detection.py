"""How well, and how fast, does the labels' photutils segmentation tell a stamp with neighbours from an isolated one?

Groundwork for the ``BLENDED`` flag of the crowded-stamps issue: on the
realistic test A, whose simulation records how many neighbours each stamp
holds (``n_neighbours``), the segmentation the classical labels use
(:func:`legato.analysis.segmentation.segment_stamp`) is run on every stamp. A
stamp is called blended when another segment comes within ``radius`` pixels
of the target's segment; the report gives, per radius, the fraction of stamps
with neighbours that are flagged (recall), the fraction of flagged stamps that
hold neighbours (precision), and the segmentation's speed on this machine
(one core), against the 1,500 stamps/s the inference paths must sustain::

    python benchmarks/blend_detection.py --out reports/blend_detection.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

RADII_PIX = (0, 2, 4, 8, 16, 64)  # 64: anywhere in the 64x64 stamp


def nearest_neighbour_gap(segmentation) -> float:
    """Pixels between the target's segment and the nearest other segment (inf: none; nan: no target)."""
    from scipy.ndimage import distance_transform_edt

    labels, target = segmentation.labels, segmentation.target
    if target == 0:
        return float("nan")
    others = (labels > 0) & (labels != target)
    if not others.any():
        return float("inf")
    return float(distance_transform_edt(labels != target)[others].min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--test", type=Path, default=Path("datasets/realistic/labelled/A"))
    parser.add_argument("--out", type=Path, default=Path("reports/blend_detection.json"))
    args = parser.parse_args()
    from legato.analysis.segmentation import segment_stamp
    from legato.io.stamps import read_stamp_set
    from legato.reports import machine_description

    stamps, labels, _ = read_stamp_set(args.test)
    truth = np.asarray(labels["n_neighbours"]) > 0
    began = time.perf_counter()
    gaps = np.array([nearest_neighbour_gap(segment_stamp(stamp)) for stamp in stamps])
    seconds = time.perf_counter() - began
    rows = []
    for radius in RADII_PIX:
        flagged = gaps <= radius
        hits = int(np.sum(flagged & truth))
        rows.append(
            {
                "radius_pix": radius,
                "flagged": int(flagged.sum()),
                "recall": round(hits / max(1, int(truth.sum())), 3),
                "precision": round(hits / max(1, int(flagged.sum())), 3),
            }
        )
    report = {
        "what": "photutils segmentation of the labels (analysis.segmentation.segment_stamp) as a blend detector on realistic test A",
        "stamps": len(stamps),
        "with_neighbours": int(truth.sum()),
        "no_target_found": int(np.isnan(gaps).sum()),
        "by_radius": rows,
        "stamps_per_second_one_core": round(len(stamps) / seconds, 1),
        "inference_target_stamps_per_second": 1500,
        "machine": machine_description(),
        "note": "measured beside a training on the other core: a lower bound on the idle speed",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
