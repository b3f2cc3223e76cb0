"""Peak memory and step time of one AMNL training step, with and without gradient checkpointing
(BiLSTM and attention recomputed in backward) and bf16 (and, on CUDA, fp16) mixed precision.

    benchmarks/quiet.sh .venv/bin/python benchmarks/train_memory.py [--batch 256] [--repeats 3]

Writes ``benchmarks/results/train_memory_<device>_t<threads>.json``. The step is the trainer's (autocast
forward, AMNL loss, backward, clipping, AdamW); see
:func:`amnl.profiling.train_step.measure_training_step` for what each column counts (MB = 10^6
bytes).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import torch

from amnl.config import MB
from amnl.inference.runtime import set_threads
from amnl.model.factory import create_model
from amnl.profiling.machine import machine_info
from amnl.profiling.train_step import measure_training_step

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True))
CUDA_ONLY = (("fp16", False), ("fp16", True))  # fp16 autocast is a GPU option


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256, help="TrainConfig's default batch size.")
    ap.add_argument("--window", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    set_threads(args.threads)
    torch.manual_seed(0)
    model = create_model("base")
    rows = []
    print(f"one training step, batch {args.batch}, window {args.window}, {args.device}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'precision':<9} {'ckpt':>4} {'peak MB':>8} {'weights':>8} {'AdamW':>7} "
          f"{'saved':>7} {'transient':>9} {'step ms':>8}")
    variants = VARIANTS + (CUDA_ONLY if args.device.startswith("cuda") else ())
    for precision, ckpt in variants:
        r = measure_training_step(model, batch=args.batch, window=args.window,
                                  precision=precision, grad_checkpoint=ckpt, device=args.device,
                                  repeats=args.repeats)
        rows.append(asdict(r))
        print(f"{precision:<9} {'yes' if ckpt else 'no':>4} {r.peak / MB:8.1f} "
              f"{r.weights / MB:8.1f} {r.optimizer_state / MB:7.1f} "
              f"{r.saved_activations / MB:7.1f} {r.transient / MB:9.1f} {r.step_ms:8.0f}",
              flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"train_memory_{args.device}_t{torch.get_num_threads()}.json"
    out.write_text(json.dumps({"machine": machine_info(args.device), "batch": args.batch,
                               "window": args.window, "repeats": args.repeats, "rows": rows},
                              indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
