"""How far apart two C-MAPSS training files are: rows with identical settings and sensors.

    python experiments/pool_overlap.py FD001 FD003 [--data-dir ../shared/data/CMAPSS]

A check for pooled training (``data.extra_train``): an engine of one file copied into the other
would let a pooled run train on its own validation engines.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from amnl.data.cmapss import load_subset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("subsets", nargs=2)
    ap.add_argument("--data-dir", type=Path, default=Path("../shared/data/CMAPSS"))
    args = ap.parse_args()
    a, b = (load_subset(args.data_dir, name, test=False).train for name in args.subsets)
    seen = {row.tobytes() for row in np.ascontiguousarray(a.values[:, 2:])}
    shared = sum(row.tobytes() in seen for row in np.ascontiguousarray(b.values[:, 2:]))
    print(f"{args.subsets[1]} rows identical to a {args.subsets[0]} row (settings and 21 sensors): "
          f"{shared} of {len(b)}")


if __name__ == "__main__":
    main()
