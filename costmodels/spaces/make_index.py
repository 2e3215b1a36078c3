"""Regenerate ``data/nb201_index.npy`` from a NAS-Bench-201 latency table.

Usage: ``python -m costmodels.spaces.make_index TABLE.csv [OUT.npy]``. The table
must list all 15,625 cells with their standard ``arch_index``.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from costmodels.spaces.nb201 import NUM_ARCHS, _code, parse_arch


def build_index(table: str) -> np.ndarray:
    codes = np.full(NUM_ARCHS, 65535, dtype=np.uint16)
    with open(table, newline="") as fh:
        for row in csv.DictReader(fh):
            codes[int(row["arch_index"])] = _code(parse_arch(row["arch_str"]))
    if len(set(codes.tolist())) != NUM_ARCHS or (codes == 65535).any():
        raise SystemExit(f"{table}: does not list each of the {NUM_ARCHS} cells exactly once")
    return codes


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    out = argv[1] if len(argv) > 1 else str(Path(__file__).parent / "data" / "nb201_index.npy")
    np.save(out, build_index(argv[0]), allow_pickle=False)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
