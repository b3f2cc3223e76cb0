"""Which ONNX Runtime INT8 scheme to ship: U8S8, U8S8 with reduce_range, U8U8, U8U8 with
reduce_range, each against PyTorch FP32 on every window of a subset's test file.

    python experiments/int8_schemes.py --data-dir ../shared/data/CMAPSS [--subsets FD001 ...] \\
        [--out benchmarks/results/int8-schemes.json]

Per scheme: max and p99 |dRUL| over all test windows, the same on 256 random N(0, 1) windows
(what ``amnl export`` used to check), the last-window test RMSE and its change from FP32, and
windows/s at batch 256 (a rough figure: a few calls). The CPU model is recorded; saturation of
U8S8 happens only on x86 hosts without VNNI, so run it there too when one is at hand.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

SCHEMES = {"u8s8": {"weight": "QInt8"}, "u8s8-reduce": {"weight": "QInt8", "reduce_range": True},
           "u8u8": {"weight": "QUInt8"}, "u8u8-reduce": {"weight": "QUInt8", "reduce_range": True},
           # what amnl ships (amnl.export.quantize.quantize_onnx): U8U8 MatMuls, 7-bit LSTM
           "amnl": {}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=Path("../shared/data/CMAPSS"))
    ap.add_argument("--subsets", nargs="+", default=["FD001", "FD002", "FD003", "FD004"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=list(SCHEMES))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/int8-schemes.json"))
    args = ap.parse_args()

    import onnxruntime.quantization as oq

    from amnl.data.cmapss import load_subset
    from amnl.evaluate.metrics import rmse
    from amnl.export.onnx import export_onnx
    from amnl.export.quantize import QUANTIZE_OP_TYPES, quantize_onnx
    from amnl.inference.onnx_runtime import OnnxRuntime
    from amnl.inference.runtime import TorchRuntime, set_threads
    from amnl.profiling.machine import machine_info
    from amnl.rundir import bundled_dir, load_run

    logging.getLogger().disabled = True  # the quantiser's pre-processing hint
    set_threads(args.threads)
    rows = []
    for name in args.subsets:
        cfg, pre, model = load_run(bundled_dir(name))
        subset = load_subset(args.data_dir, name, train=False)
        x = pre.windows(subset.test).arrays()
        last = pre.windows(subset.test, last_only=True, rul_after_end=subset.rul)
        xr = np.random.default_rng(0).standard_normal((256, cfg.data.window, cfg.data.n_features),
                                                       dtype=np.float32)
        torch_rt = TorchRuntime(model, batch_size=256)
        ref, ref_last, ref_rnd = torch_rt(x)[0], torch_rt(last.arrays())[0], torch_rt(xr)[0]
        base_rmse = rmse(ref_last, last.rul)
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = export_onnx(model, Path(tmp) / "m.onnx", cfg.data.window)
            for scheme in args.schemes:
                kw = SCHEMES[scheme]
                out = Path(tmp) / f"{scheme}.onnx"
                if scheme == "amnl":
                    quantize_onnx(fp32, out)
                else:
                    oq.quantize_dynamic(str(fp32), str(out),
                                        op_types_to_quantize=list(QUANTIZE_OP_TYPES),
                                        weight_type=getattr(oq.QuantType, kw["weight"]),
                                        reduce_range=kw.get("reduce_range", False))
                rt = OnnxRuntime(out, threads=args.threads)
                d = np.abs(rt(x)[0] - ref)
                rt(x[:256])
                t0 = time.perf_counter()
                for _ in range(5):
                    rt(x[:256])
                row = {"subset": name, "scheme": scheme, "windows": len(x),
                       "rul_max": float(d.max()), "rul_p99": float(np.percentile(d, 99)),
                       "random_rul_max": float(np.abs(rt(xr)[0] - ref_rnd).max()),
                       "last_rmse": rmse(rt(last.arrays())[0], last.rul), "fp32_last_rmse": base_rmse,
                       "windows_per_s": 5 * 256 / (time.perf_counter() - t0)}
                row["last_rmse_change"] = row["last_rmse"] - base_rmse
                rows.append(row)
                print(f"{name} {scheme:12s} max {row['rul_max']:6.2f} p99 {row['rul_p99']:5.2f} "
                      f"random max {row['random_rul_max']:6.2f} RMSE {row['last_rmse']:.3f} "
                      f"({row['last_rmse_change']:+.3f}) {row['windows_per_s']:,.0f} windows/s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine_info("cpu", args.threads), "rows": rows},
                                   indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
