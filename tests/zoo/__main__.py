"""``python -m tests.zoo DIR``: write the test zoo into DIR and list it."""

from __future__ import annotations

import sys

from . import build_zoo, read_index

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.zoo DIR")
    paths = build_zoo(sys.argv[1])
    index = read_index(sys.argv[1])
    for p in paths:
        e = index[p.name]
        print(f"{p.name:28s} {p.stat().st_size:>8d} B  {e['exporter']:10s} {e['form']}")
