"""Clustering runtime and quality of SPOCO embeddings: HDBSCAN, mean-shift, consistency, affinity.

A reduced form of the spoco_clustering grid (thesis Table 3.7) that reuses embeddings already
predicted (e.g. by a spoco_sparsity run: results/<exp>/<sample>/predict/<cell>/boundaries.ome.zarr)
instead of training models again. Each method runs as ``zarrseg cluster`` in its own subprocess
(with a wall-clock limit: HDBSCAN and mean-shift grow fast with the pixel count), then
``zarrseg evaluate`` scores it against the ground truth. Printed per method: the clustering's
own seconds (``clustering_s``, as the thesis times it), SBD and |DiC|.

    python benchmarks/spoco_clustering_speed.py EMB.ome.zarr GT.ome.zarr [--methods ...] [--timeout 900]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

METHODS = ["affinity", "hdbscan", "mean_shift", "consistency"]


def run_method(emb: str, gt: str, method: str, work: Path, timeout: float, extra: list[str]) -> dict:
    out = work / f"{method}.ome.zarr"
    sets = ["--set", f"method={method}", "--set", "background=largest", *extra]
    t0 = time.perf_counter()
    try:
        subprocess.run([sys.executable, "-m", "zarrseg", "cluster", emb, "-o", str(out), *sets],
                       check=True, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"method": method, "clustering_s": f"> {timeout:.0f} (stopped)", "sbd": "–", "abs_dic": "–"}
    wall = time.perf_counter() - t0
    metrics = work / f"{method}.parquet"
    subprocess.run([sys.executable, "-m", "zarrseg", "evaluate", str(out), "--gt", gt, "-o", str(metrics)],
                   check=True, capture_output=True, text=True)
    table = pd.read_parquet(metrics).set_index("metric")["value"]
    return {"method": method, "clustering_s": float(table.get("clustering_s", float("nan"))),
            "process_s": round(wall, 1), "sbd": float(table["sbd"]), "abs_dic": float(table["abs_dic"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("embeddings")
    parser.add_argument("ground_truth")
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per method")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="extra cluster KEY=VALUE")
    args = parser.parse_args(argv)
    extra = [x for kv in args.sets for x in ("--set", kv)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="spoco_clustering_") as tmp:
        for method in args.methods:
            rows.append(run_method(args.embeddings, args.ground_truth, method, Path(tmp), args.timeout, extra))
            print(json.dumps(rows[-1]), flush=True)
    print("| method | t [s] | SBD | abs DiC |\n|---|---|---|---|")
    for r in rows:
        cells = [r["clustering_s"], r["sbd"], r["abs_dic"]]
        print("| " + r["method"] + " | " + " | ".join(f"{c:.3f}" if isinstance(c, float) else str(c) for c in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
