"""The inference form against the training form, on every test window of the bundled models.

For each bundled model (FD001-FD004) and every window of its test file: the largest RUL and
probability differences between the network's eval-mode inference form (time-last folded
convolutions, last-step attention; what every runtime runs since issue #21) and its layers as
training runs them (full self-attention), in torch FP32 and in ONNX Runtime FP32 (the export of
the inference form) against the same reference. The unit test (``tests/model/test_network.py``)
checks a sample of these windows against 1e-4 cycles; this prints them all::

    python experiments/inference_form_parity.py --data-dir ../shared/data/CMAPSS --threads 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=Path("../shared/data/CMAPSS"))
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1]
                   / "benchmarks" / "results" / "inference-form-parity.json")
    args = p.parse_args()
    import torch

    from amnl.data.cmapss import load_subset
    from amnl.export.onnx import export_onnx
    from amnl.inference.onnx_runtime import OnnxRuntime
    from amnl.inference.runtime import TorchRuntime
    from amnl.profiling.machine import describe, machine_info
    from amnl.rundir import bundled_dir, load_run

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="amnl-form-") as tmp:
        for name in ("FD001", "FD002", "FD003", "FD004"):
            cfg, pre, model = load_run(bundled_dir(name))
            x = pre.windows(load_subset(args.data_dir, name, train=False).test).arrays()
            fast = TorchRuntime(model)(x)
            onnx_file = export_onnx(model, Path(tmp) / f"{name}.onnx", cfg.data.window)
            exported = OnnxRuntime(onnx_file, threads=args.threads)(x)
            model.inference_form = False
            reference = TorchRuntime(model)(x)
            row = {"model": name, "windows": len(x)}
            for label, (rul, prob) in (("torch", fast), ("onnx", exported)):
                row[f"{label}_rul_max"] = float(np.abs(rul - reference[0]).max())
                row[f"{label}_prob_max"] = float(np.abs(prob - reference[1]).max())
            rows.append(row)
            print(json.dumps(row))
    machine = machine_info("cpu", args.threads or None)
    print(f"{describe(machine)}")
    print("| model | windows | torch: max abs dRUL (cycles) | torch: max abs dP | ONNX FP32: max abs dRUL | ONNX FP32: max abs dP |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['windows']:,} | {r['torch_rul_max']:.1e} | {r['torch_prob_max']:.1e} "
              f"| {r['onnx_rul_max']:.1e} | {r['onnx_prob_max']:.1e} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
