"""A paper estimate of AMNL on a Raspberry Pi 4 (4x Cortex-A72), from FLOPs and published peaks.

Nothing here is measured on a Pi: no Pi was at hand. The estimate rests on

* the FLOPs of one window of the network's inference form (``amnl.profiling.flops``, the graph
  every runtime runs: 139.9 MFLOP at window 30 with 29 inputs, 96 % of it the BiLSTM);
* the Pi 4 Model B's published clock, 1.5 GHz (BCM2711; boards sold since 2020 run 1.8 GHz),
  and the Cortex-A72's 128-bit NEON unit: one 4-lane FP32 fused multiply-add a cycle, i.e.
  8 FP32 FLOP per cycle and core, 48 GFLOP/s for the 4 cores at 1.5 GHz;
* ARMv8.0: the A72 has no 8-bit dot-product instructions (SDOT/UDOT are ARMv8.2), so INT8
  matrix products go through widening 8 -> 16-bit multiplies: at best about twice the FP32
  rate (16 MACs a cycle in theory), which the second INT8 row assumes;
* the efficiency ONNX Runtime reached on the x86 host of ``amnl bench`` (``--efficiency``,
  the fraction of the measured matrix-multiply peak at batch 256: 74 % FP32, 16 % INT8 there;
  the INT8 fraction is held against a VNNI + AMX peak, so it is a low guess for a NEON one);
* batch-1 latency: the BiLSTM's 60 sequential steps (2 layers x 30; the two directions on two
  cores) each stream their recurrent weights; FP32 weights of the 4 recurrent matrices (4 MB)
  do not fit the A72's 1 MB shared L2, INT8 ones (1 MB) just about do. The latency row is the
  compute time on 2 cores at the same efficiency, plus, for FP32, the recurrent weights read
  from DRAM once per step at ``--dram-gbps``.

    python experiments/pi4_estimate.py [--ghz 1.5] [--fp32-efficiency 0.74] [--int8-efficiency 0.16]
"""

from __future__ import annotations

import argparse
import json

from amnl.config import ModelConfig
from amnl.profiling.flops import flops_per_window

CORES = 4
FP32_FLOP_PER_CYCLE = 8  # one 4-lane FMA a cycle and core
INT8_OVER_FP32 = 2.0  # widening multiplies without SDOT: at best twice the FP32 MAC rate


def estimate(ghz: float, fp32_eff: float, int8_eff: float, dram_gbps: float,
             window: int = 30, features: int = 29) -> dict:
    cfg = ModelConfig(in_features=features)
    flops = flops_per_window(cfg, window)
    peak_fp32 = CORES * ghz * 1e9 * FP32_FLOP_PER_CYCLE
    rows = {}
    for name, peak, eff in (("fp32", peak_fp32, fp32_eff),
                            ("int8", peak_fp32 * INT8_OVER_FP32, int8_eff),
                            ("int8 at the FP32 efficiency", peak_fp32 * INT8_OVER_FP32, fp32_eff)):
        throughput = peak * eff / flops["total"]
        compute_b1 = flops["total"] / (peak / 2 * eff)  # 2 cores: the two LSTM directions
        recurrent = cfg.lstm_layers * 2 * cfg.lstm_hidden * 4 * cfg.lstm_hidden  # weights
        bytes_per_step = recurrent * (4 if name == "fp32" else 1) / (2 * cfg.lstm_layers)
        dram = (window * cfg.lstm_layers * bytes_per_step * 2 / (dram_gbps * 1e9)
                if name == "fp32" else 0.0)  # INT8: fits the 1 MB L2
        rows[name] = {"peak_gflops": peak / 1e9, "efficiency": eff,
                      "windows_per_s_batch256": throughput,
                      "batch1_ms": (compute_b1 + dram) * 1e3}
    return {"mflop_per_window": flops["total"] / 1e6, "ghz": ghz, "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ghz", type=float, default=1.5)
    p.add_argument("--fp32-efficiency", type=float, default=0.74)
    p.add_argument("--int8-efficiency", type=float, default=0.16)
    p.add_argument("--dram-gbps", type=float, default=4.0,
                   help="sustained DRAM bandwidth of one stream (LPDDR4-3200, 32-bit)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    r = estimate(args.ghz, args.fp32_efficiency, args.int8_efficiency, args.dram_gbps)
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(f"Raspberry Pi 4 (paper): {r['mflop_per_window']:.1f} MFLOP a window, {args.ghz} GHz, "
          f"{CORES} cores")
    print("| precision | peak GFLOP/s (GOP/s) | efficiency | windows/s at batch 256 | batch-1 ms |")
    print("|---|---:|---:|---:|---:|")
    for name, row in r["rows"].items():
        print(f"| {name} | {row['peak_gflops']:.0f} | {row['efficiency']:.0%} | "
              f"{row['windows_per_s_batch256']:,.0f} | {row['batch1_ms']:.1f} |")


if __name__ == "__main__":
    main()
