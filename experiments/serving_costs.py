"""What the service's figures rest on (a one-off study, quoted in docs/serving.md):

    python experiments/serving_costs.py [--out benchmarks/results/serving-costs.json]

1. How much a prediction depends on the other windows of its batch: FP32 and INT8 ONNX
   Runtime on 256 FD001 test windows, batch 1 against batch 64 (max |dRUL|; INT8 quantises its
   activations per batch).
2. The runtime alone at batch 1 and batch 64, one thread (windows/s, median of 5 runs).
3. The serving process's memory, step by step, each in a fresh process: Python, the web
   stack, the INT8 model, after batches of 64, and ONNX Runtime's arena off.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

RSS_CODE = r'''
import re, sys, json
from pathlib import Path
def rss(): return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024 / 1e6
out = {"python": rss()}
import fastapi, uvicorn, sqlalchemy, prometheus_client, pydantic, jinja2
out["web stack"] = rss()
import numpy as np, onnxruntime as ort
from amnl.inference.onnx_runtime import session_options
so = session_options(1); so.enable_cpu_mem_arena = sys.argv[2] == "arena"
s = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
out["INT8 model"] = rss()
x = np.zeros((64, 30, 29), np.float32)
for _ in range(5): s.run(None, {"x": x})
out["after batches of 64"] = rss()
print(json.dumps(out))
'''


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", type=Path, default=Path("../shared/data/CMAPSS"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/serving-costs.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from serve_load import runtime_throughput

    from amnl.config import InferenceConfig
    from amnl.data.cmapss import load_subset
    from amnl.export.onnx import export_run
    from amnl.inference.predictor import Predictor
    from amnl.profiling.machine import describe, machine_info
    from amnl.rundir import bundled_dir

    folder = Path(tempfile.mkdtemp(prefix="amnl-serving-costs-"))
    for prec, name in (("fp32", "model.onnx"), ("int8", "model_int8.onnx")):
        export_run(bundled_dir("FD001"), folder / name, int8=prec == "int8")
    result = {"machine": machine_info(), "batch_dependence": {}, "throughput": {}, "rss_mb": {}}
    test = load_subset(args.data_dir, "FD001", train=False).test
    for prec in ("fp32", "int8"):
        p = Predictor.load(folder, InferenceConfig(runtime="onnx", precision=prec, threads=1))
        w = p.preprocessor.windows(test, first_end=0).arrays()[:256]
        one = np.concatenate([p(w[i:i + 1])[0] for i in range(256)])
        b64 = np.concatenate([p(w[i:i + 64])[0] for i in range(0, 256, 64)])
        result["batch_dependence"][prec] = float(np.abs(one - b64).max())
    for batch in (1, 64):
        result["throughput"][f"int8_batch{batch}"] = runtime_throughput(folder, "int8", batch, 1)
    for arena in ("arena", "no-arena"):
        done = subprocess.run([sys.executable, "-c", RSS_CODE, str(folder / "model_int8.onnx"),
                               arena], capture_output=True, text=True, check=True)
        result["rss_mb"][arena] = json.loads(done.stdout)
    print(describe(result["machine"]))
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
