"""Leng et al. Table 1, the three baseline rows on all 100 BSDS300 test images, image by image in one process.

``bsds300_table1.py reduced`` runs every (image, k) cell as the workflow's cluster + evaluate jobs:
one label OME-Zarr and one SLIC per job, 2,700 jobs for the three rows. This script computes the
same cells per image instead: SLIC once, then every k of the three rows, each label image scored
in memory against every annotator with the evaluate stage's own functions (``Contingency`` and
``score_table``, ``combine_annotators``). The clustering is the cluster stage's: ``ClusterParams``
of each cell from the experiment's ``Plan`` (config/experiments/bsds300_table1.yaml), the image read
by ``ImageSource`` with the cell's preprocess, ``Embedding`` + ``Clusterer`` for K-means,
``superpixel_colours`` + ``fit_labels`` for the superpixel rows. One difference: K-means on pixels
is fitted on the pixels in row-major order (the workflow: in 256 x 256 blocks; the same set of
pixels, since max_fit_samples exceeds the 154,401 of an image).

Output (WORK/baselines/): scores.csv (sample, row, k, annotator, metrics, seconds; written after
every image, and a rerun skips the images it holds) and summary.md:
per row and annotator aggregate (mean, best), the per-image oracle over k (the paper's selection
rule, Table 1 caption) and the best fixed k, each as the mean over the images.

    python benchmarks/bsds300_table1.py sheet          # once
    flock /tmp/zarrseg-heavy.lock python benchmarks/bsds300_baselines.py --workers 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bsds300_table1 as table1  # noqa: E402

ROWS = ["Kmeans-Pixel", "Kmeans-Superpixel", "Spectral-Superpixel"]
PAPER = {"Kmeans-Pixel": 0.31, "Kmeans-Superpixel": 0.33, "Spectral-Superpixel": 0.39}  # Table 1, V-measure
METRICS = ["rand_index", "ami", "fmi", "homogeneity", "completeness", "v_measure"]

_PLAN = None
_OVERRIDES: dict = {}


def baseline_cells(plan, rows: list[str]) -> dict[str, list[tuple[int, str]]]:
    """Per row: (k, cell) of the experiment's baseline grid, k ascending."""
    out: dict[str, list[tuple[int, str]]] = {r: [] for r in rows}
    for cell, values in plan.cells.items():
        if values.get("grid.row") in out:
            out[values["grid.row"]].append((int(values["cluster.n_clusters"]), cell))
    return {r: sorted(c) for r, c in out.items()}


def cell_params(plan, cell: str):
    from zarrseg.params import load_params
    from zarrseg.ssl.cluster import ClusterParams

    params = load_params(ClusterParams, plan.cluster_params(cell), _OVERRIDES, where="cluster")
    params.validate()
    if params.method == "auto":  # what ``zarrseg cluster`` makes of it for colours
        params.method = "kmeans"
    return params


def labels_of(src, params, cache: dict) -> np.ndarray:
    """(H, W) labels of one baseline cell, as ``zarrseg cluster`` computes them for a 2D image."""
    from zarrseg.ssl.cluster import Clusterer, Embedding
    from zarrseg.ssl.superpixel_cluster import fit_labels, superpixel_colours

    h, w = src.shape_yx
    if params.superpixels is None:
        if params.colour_patch != 1:
            raise SystemExit("only pixel (colour_patch 1) and superpixel baselines are scored here")
        x = src.read_raw(0, slice(0, h), slice(0, w)).reshape(len(src.channels), -1).T
        embed = Embedding(params).fit(None, x)
        return Clusterer(params).fit(embed(None, x)).predict(embed(None, x)).reshape(h, w)
    key = repr(params.superpixels)
    if key not in cache:  # one SLIC per image for every k of both superpixel rows
        cache[key] = superpixel_colours(src, 0, params)
    segments, colour = cache[key]
    embed = Embedding(params).fit(None, colour)
    c = embed(None, colour)
    per_node = fit_labels(c, params, segments) if params.method == "spectral" else Clusterer(params).fit(c).predict(c)
    return per_node[segments]


def image_scores(job: tuple[str, list[str]]) -> list[dict]:
    """Every baseline cell of one image, scored against each annotator, their mean and the best."""
    from zarrseg import ome
    from zarrseg.evaluation import combine_annotators
    from zarrseg.evaluation.contingency import Contingency
    from zarrseg.evaluation.score import EvaluateParams, score_table
    from zarrseg.ssl.tiling import ImageSource

    sample, rows = job
    plan = _PLAN
    gts = np.asarray(ome.open_image(plan.ground_truth_path(sample)).data[...])
    gts = gts.reshape(-1, *gts.shape[-2:])
    evaluate = EvaluateParams(kind="clustering", metrics=METRICS)
    out, cache, sources = [], {}, {}
    for row, cells in baseline_cells(plan, rows).items():
        for k, cell in cells:
            params = cell_params(plan, cell)
            prep = repr(params.preprocess)
            if prep not in sources:
                sources[prep] = ImageSource(plan.image_input(sample), params.preprocess)
            t0 = time.perf_counter()
            labels = labels_of(sources[prep], params, cache).astype(np.uint32)
            seconds = time.perf_counter() - t0
            per = [score_table(Contingency.from_arrays(labels, g.astype(np.uint32)), evaluate) for g in gts]
            for annotator, scores in combine_annotators(per).items():
                out.append({"sample": sample, "row": row, "k": k, "annotator": annotator,
                            "seconds": seconds, **{m: scores[m] for m in METRICS}})
    return out


def _init(work: str, config: str, overrides: dict) -> None:
    global _PLAN, _OVERRIDES
    os.environ["OMP_NUM_THREADS"] = "1"
    _PLAN, _ = table1.load_plan(Path(work), Path(config))
    _OVERRIDES = overrides


def summary(frame, n_images: int) -> str:
    """Markdown: per row and aggregate, the per-image oracle over k and the best fixed k (image means)."""
    lines = [f"Baselines on {n_images} BSDS300 test images (paper: Leng et al. Table 1, V-measure)", "",
             "| row | annotator | oracle V | paper | diff | oracle homo / comp | best fixed k | fixed V | s/image |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in frame["row"].unique():
        for agg in ("mean", "best"):
            f = frame[(frame["row"] == row) & (frame["annotator"] == agg)]
            oracle = f.loc[f.groupby("sample")["v_measure"].idxmax()]
            per_k = f.groupby("k")["v_measure"].mean()
            seconds = f.groupby("sample")["seconds"].sum().mean()
            v = oracle["v_measure"].mean()
            lines.append(
                f"| {row} | {agg} | {v:.3f} (sd {oracle['v_measure'].std():.3f}) | {PAPER[row]:.2f} | "
                f"{v - PAPER[row]:+.3f} | {oracle['homogeneity'].mean():.3f} / {oracle['completeness'].mean():.3f} | "
                f"{int(per_k.idxmax())} | {per_k.max():.3f} | {seconds:.1f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import multiprocessing as mp

    import pandas as pd
    import yaml

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=table1.REPO / "work" / "bsds300_reduced")
    parser.add_argument("--config", type=Path, default=table1.REPO / "config" / "bsds300_reduced.yaml")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--images", type=int, default=100, help="the first N sorted image ids")
    parser.add_argument("--rows", nargs="+", default=ROWS, choices=ROWS)
    parser.add_argument("--cluster", default="{}", help="YAML/JSON overrides of every cell's cluster params, "
                        "e.g. '{spectral_affinity: rbf}'")
    parser.add_argument("--name", default="baselines", help="output folder under WORK")
    parser.add_argument("--summary-only", action="store_true", help="summarise the images scores.csv holds, run none")
    args = parser.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ.setdefault("ZARRSEG_NO_PROGRESS", "1")
    work, config = args.work.resolve(), args.config.resolve()
    os.chdir(table1.REPO)  # the sample sheet's paths are relative to the repository
    overrides = yaml.safe_load(args.cluster) or {}
    plan, _ = table1.load_plan(work, config)
    table1.ingest_all(plan)
    samples = plan.experiment_samples()[: args.images]
    out = work / args.name
    out.mkdir(parents=True, exist_ok=True)
    t0, rows = time.perf_counter(), []
    done = out / "scores.csv"
    if done.exists():  # resume: the images a cut run finished are kept, not recomputed
        rows = pd.read_csv(done, dtype={"annotator": str}).to_dict("records")
    jobs = [(s, args.rows) for s in samples if s not in {r["sample"] for r in rows}]
    if args.summary_only:
        samples, jobs = [s for s in samples if s not in {j[0] for j in jobs}], []
    if args.workers == 1 or not jobs:  # in this process (no pool to start)
        _init(str(work), str(config), overrides)
        results = map(image_scores, jobs)
    else:
        pool = mp.get_context("spawn").Pool(args.workers, _init, (str(work), str(config), overrides))
        results = pool.imap_unordered(image_scores, jobs)
    for i, scores in enumerate(results, 1):
        rows += scores
        pd.DataFrame(rows).to_csv(done, index=False)
        print(f"[{i}/{len(jobs)} {time.perf_counter() - t0:.0f} s] {scores[0]['sample']}", flush=True)
    frame = pd.DataFrame(rows)
    frame = frame[frame["sample"].isin(samples)].sort_values(["sample", "row", "k", "annotator"])
    text = summary(frame, len(samples)) + f"\noverrides: {overrides or 'none'}; {time.perf_counter() - t0:.0f} s wall\n"
    (out / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
