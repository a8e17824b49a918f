"""Benchmark: the production network's forward pass under each CPU inference runtime, on AVX-512 and on AVX2.

Each runtime runs in its own process on the same stamps (the simulated test
set, tiled to ``--stamps``), at the batch size ``legato predict`` uses, with
both cores. The AVX2 rows cap TensorFlow's oneDNN at AVX2
(``ONEDNN_MAX_CPU_ISA=AVX2``) and NumPy's dispatch at X86_V3, which is how an
AVX2-only CPU (AMD EPYC, the issue's machine) runs the network; ONNX Runtime's
kernels (MLAS) have no such cap, so its AVX2 figure needs an AVX2 machine and
is reported as not measured. Outputs are compared with TensorFlow's on the
same stamps (largest absolute difference over the 9 raw outputs).

Runtimes: ``tensorflow`` (today's compiled tf.function, oneDNN kernels),
``tensorflow-eigen`` (the same with oneDNN off: Eigen's kernels), ``tensorflow-xla``
(the same with ``jit_compile=True``), ``onnxruntime`` (the graph exported with
tf2onnx; needs ``pip install onnxruntime tf2onnx``, taken from ``--extra-path``
when given). Writes reports/runtimes.json.

    python benchmarks/runtimes.py --stamps 30000 --extra-path /tmp/ortlib
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"}
RUNTIMES = ("tensorflow", "tensorflow-eigen", "tensorflow-xla", "onnxruntime")
RUNTIME_ENV = {"tensorflow-eigen": {"TF_ENABLE_ONEDNN_OPTS": "0"}}  # TensorFlow's own Eigen kernels instead of oneDNN


WORKER = r"""
import json, sys, time
import numpy as np
extra, runtime, estimator, stamps_path, batch, out = sys.argv[1:7]
if extra:
    sys.path.append(extra)
import tensorflow as tf
from legato.models.estimator import LoadedEstimator
model = LoadedEstimator(estimator).members[0][0]
stamps = np.load(stamps_path)
batch = int(batch)
if runtime.startswith("tensorflow"):
    fn = tf.function(lambda x: model(x, training=False), jit_compile=runtime == "tensorflow-xla", reduce_retracing=True)
    forward = lambda x: fn(x).numpy()
else:
    import tempfile, tf2onnx, onnxruntime as ort
    spec = [tf.TensorSpec((None,) + stamps.shape[1:], tf.float32, name="stamps")]
    path = tempfile.mktemp(suffix=".onnx")
    tf2onnx.convert.from_function(tf.function(lambda x: model(x, training=False)), input_signature=spec, opset=17, output_path=path)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    forward = lambda x: session.run(None, {name: x})[0]
run = lambda: np.concatenate([forward(stamps[i:i + batch]) for i in range(0, len(stamps), batch)])
forward(stamps[:batch]); forward(stamps[: batch // 2 + 1])  # warm-up (graph building, a partial batch)
rates = []
for _ in range(3):
    start = time.perf_counter(); outputs = run(); rates.append(len(stamps) / (time.perf_counter() - start))
np.save(out + ".npy", outputs)
json.dump({"stamps_per_second": round(max(rates), 1), "repeats": [round(r, 1) for r in rates]}, open(out, "w"))
"""


def main() -> None:
    import numpy as np

    from legato.io.stamps import read_stamp_set
    from legato.reports import machine_description

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--estimator", type=Path, default=Path("models/production_tracked"))
    parser.add_argument("--test", type=Path, default=Path("datasets/simulated/test"))
    parser.add_argument("--stamps", type=int, default=30000)
    parser.add_argument("--batch-size", type=int, default=256, help="legato predict's default batch")
    parser.add_argument("--runtime", action="append", choices=RUNTIMES, default=None)
    parser.add_argument("--extra-path", default="", help="a folder with onnxruntime and tf2onnx (pip install --target)")
    parser.add_argument("--isa", action="append", choices=("avx512", "avx2"), default=None)
    parser.add_argument("--out", type=Path, default=Path("reports/runtimes.json"))
    args = parser.parse_args()

    stamps, _, _ = read_stamp_set(args.test)
    stamps = np.resize(stamps, (args.stamps,) + stamps.shape[1:]).astype(np.float32)
    results: dict = {
        "cpu": machine_description(),
        "stamps": args.stamps,
        "batch_size": args.batch_size,
        "estimator": str(args.estimator),
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        stamps_path = Path(tmp) / "stamps.npy"
        np.save(stamps_path, stamps)
        reference = None
        for isa, env in (("avx512", {}), ("avx2", AVX2_ENV)):
            if args.isa and isa not in args.isa:
                continue
            for runtime in args.runtime or RUNTIMES:
                row = {"runtime": runtime, "isa": isa}
                if runtime == "onnxruntime" and isa == "avx2":
                    results["rows"].append(
                        row | {"stamps_per_second": None, "note": "MLAS has no instruction-set cap: needs an AVX2 machine"}
                    )
                    continue
                out = Path(tmp) / f"{runtime}-{isa}.json"
                command = [
                    sys.executable,
                    "-c",
                    WORKER,
                    args.extra_path,
                    runtime,
                    str(args.estimator),
                    str(stamps_path),
                    str(args.batch_size),
                    str(out),
                ]
                done = subprocess.run(
                    command,
                    env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **env, **RUNTIME_ENV.get(runtime, {})),
                    capture_output=True,
                    text=True,
                )
                if done.returncode != 0:
                    results["rows"].append(row | {"stamps_per_second": None, "error": done.stderr.strip().splitlines()[-1][:300]})
                    continue
                row |= json.loads(out.read_text())
                outputs = np.load(str(out) + ".npy")
                if reference is None:
                    reference = outputs
                row["max_abs_difference_vs_tensorflow_avx512"] = float(np.max(np.abs(outputs.astype(np.float64) - reference)))
                results["rows"].append(row)
                print(json.dumps(row), flush=True)
    results["command"] = "python benchmarks/runtimes.py " + " ".join(sys.argv[1:])
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
