"""Leng et al. Table 1 on the 100 BSDS300 test images: set-up and the reduced protocol for 2 CPU cores.

Steps:

  sheet     TIFF copies of the 100 images (RGB) and of their human segmentations (one channel per
            annotator) in work/bsds300/, the files config/samples_bsds300.tsv names. Run once,
            before the workflow (experiment bsds300_table1) or the reduced protocol.
  reduced   the reduced protocol. Every job is the command line a rule of the workflow would run
            (``zarrseg.cli.main`` in this process's workers, with the parameters the workflow's
            ``Plan`` gives that cell of config/experiments/bsds300_table1.yaml, sized by
            config/bsds300_reduced.yaml); Snakemake itself is left out because its ~3,000 short
            jobs would spend more time starting Python than working. It runs
              - every baseline cell (K-means on pixels / superpixels, spectral on superpixels,
                k = 2..10) on all 100 images;
              - the nine W-Net rows on --wnet-images images (the first --selection of them are
                the experiment's selection images, which choose the fixed beta) with the betas
                --betas and the seeds --seeds;
            then ``zarrseg table``: WORK/summary.md (every cell) and WORK/selection.md (Table 1:
            the per-image oracle and the fixed-beta columns, for the mean and the best annotator).
  table     only the last step of ``reduced``: the table of the jobs (same options) that have finished.

Finished jobs are skipped when the step runs again (their metrics.parquet exists).

    python benchmarks/bsds300_table1.py sheet
    flock /tmp/zarrseg-heavy.lock python benchmarks/bsds300_table1.py reduced --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ZARRSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
BSDS = SHARED / "bsds300_test"
EXPERIMENT = "bsds300_table1"

# W-Net images of the reduced protocol after the selection images: every 10th image of the sorted
# ids from the 5th, skipping the selection images (a fixed rule, not a choice by results)
WNET_STRIDE, WNET_START = 10, 4


def write_sheet(out: Path) -> None:
    """work/bsds300/<id>.tif (RGB) and <id>_gt.ome.tif (annotators as channels) for every image."""
    import imageio.v3 as iio
    import scipy.io
    import tifffile

    out.mkdir(parents=True, exist_ok=True)
    for jpg in sorted((BSDS / "images").glob("*.jpg")):
        image, gt = out / f"{jpg.stem}.tif", out / f"{jpg.stem}_gt.ome.tif"
        if not image.exists():
            tifffile.imwrite(image, iio.imread(jpg), photometric="rgb")
        if not gt.exists():
            cells = scipy.io.loadmat(BSDS / "groundTruth" / f"{jpg.stem}.mat")["groundTruth"][0]
            segs = np.stack([c["Segmentation"][0, 0] for c in cells]).astype(np.uint16)
            tifffile.imwrite(gt, segs, ome=True, metadata={"axes": "CYX"})
    print(f"wrote {len(list(out.glob('*_gt.ome.tif')))} images and ground truths to {out}")


# --- the reduced protocol ---------------------------------------------------------------------------
def load_plan(work: Path, config_file: Path):
    import yaml

    from zarrseg.params import deep_update
    from zarrseg.workflow import Plan, discover_samples, experiment_for

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    deep_update(config, yaml.safe_load(config_file.read_text()))
    config["experiment"] = EXPERIMENT
    experiment = experiment_for(config, REPO)
    samples = discover_samples(config, REPO, experiment)
    return Plan(config, experiment, samples, str(work)), config


def wnet_images(plan, args) -> list[str]:
    """The W-Net rows' images: --selection selection images, then every 10th id from the 5th."""
    names = plan.experiment_samples()
    selection = plan.experiment.fixed["table.selection"]["samples"]
    others = [s for s in names[WNET_START::WNET_STRIDE] if s not in selection]
    return selection[: args.selection] + others[: max(0, args.wnet_images - args.selection)]


def baseline_images(plan, args) -> list[str]:
    """The W-Net images (rows compare on the same images), then the first --baseline-images sorted ids."""
    wnet = wnet_images(plan, args)
    return wnet + [s for s in plan.experiment_samples()[: args.baseline_images] if s not in wnet]


def reduced_jobs(plan, args) -> list[tuple[str, str]]:
    """(sample, cell) of the reduced protocol: W-Net jobs first (they are the long ones).
    --rows limits both to the named rows (a partial run; the table then has those rows only)."""
    def wanted(values: dict) -> bool:
        return not args.rows or values.get("grid.row") in args.rows

    wnet_samples, base_samples = wnet_images(plan, args), baseline_images(plan, args)
    jobs = []
    for cell, values in plan.cells.items():
        if values.get("grid.model") == "wnet" and wanted(values):
            if values["wnet.beta"] in args.betas and values["wnet.loop.seed"] in args.seeds:
                jobs += [(s, cell) for s in wnet_samples]
    baselines = [c for c, values in plan.cells.items() if values.get("grid.model") != "wnet" and wanted(values)]
    jobs += [(s, cell) for s in base_samples for cell in baselines]  # image by image: a cut run leaves whole images
    return jobs


def commands(plan, sample: str, cell: str) -> list[list[str]]:
    """The command lines the workflow's rules run for one (sample, cell), in order (rules/*.smk)."""
    from zarrseg.workflow import params_json, with_workers

    values = plan.values(cell)

    def stage(name: str, **extra) -> str:
        params = plan.resolve(plan.stage_params(name, values), values, sample)
        params.update(extra)
        return params_json(with_workers(params, 1))

    cmds = []
    labels = plan.labels_path(sample, cell)
    source = plan.cluster_source(sample, cell)
    if source == plan.prediction_path(sample, cell):
        for method in plan.all_models(values):
            mcell = plan.model_id(method, values, sample)
            out = str(Path(plan.model_path(method, values, sample)).parent)
            cmds.append(["train", "--method", method, "-o", out, "--resume", "auto",
                         "--params", params_json(plan.model_params(method, mcell))])
        cmds.append(["predict", plan.image_input(sample), "-o", source,
                     "--params", stage("predict", channel=plan.samples[sample].channel)])
        source_arg = source
    else:
        source_arg = plan.image_input(sample)
    cmds.append(["cluster", source_arg, "--image", plan.image_input(sample), "-o", labels,
                 "--params", params_json(with_workers(plan.cluster_params(cell), 1))])
    meta = {"experiment": plan.exp, "sample": sample, "cell": cell, "method": plan.row_label(cell),
            "params": params_json(values)}
    cmds.append(["evaluate", labels, "--gt", plan.ground_truth_path(sample), "-o", metrics_path(plan, sample, cell),
                 *[a for k, v in meta.items() for a in ("--meta", f"{k}={v}")], "--params", stage("evaluate")])
    return cmds


def metrics_path(plan, sample: str, cell: str) -> str:
    return f"{plan.results}/{plan.exp}/{sample}/{cell}/metrics.parquet"


_PLAN = None


def _init_worker(work: str, config_file: str) -> None:
    global _PLAN
    _PLAN, _ = load_plan(Path(work), Path(config_file))


def run_job(job: tuple[str, str]) -> tuple[str, str, float, str]:
    """Run one (sample, cell) like Snakemake would; keep nothing but the labels and metrics."""
    import shutil

    from zarrseg.cli import main

    sample, cell = job
    t0 = time.perf_counter()
    for cmd in commands(_PLAN, sample, cell):
        out = Path(cmd[cmd.index("-o") + 1])
        if out.exists():
            continue
        code = main([*cmd, "-v"] if cmd[0] == "train" else cmd)
        if code:
            return sample, cell, time.perf_counter() - t0, f"{cmd[0]} failed ({code})"
    prediction = _PLAN.prediction_path(sample, cell)
    if Path(prediction).exists():  # K float channels: large, and not needed once the labels exist
        shutil.rmtree(prediction)
    return sample, cell, time.perf_counter() - t0, "ok"


def ingest_all(plan) -> None:
    from zarrseg.cli import main

    for sample in plan.experiment_samples():
        s = plan.samples[sample]
        for source, out, extra in ((s.image, plan.image_path(sample), []),
                                   (s.ground_truth, plan.ground_truth_path(sample), ["--labels"])):
            if not Path(out).exists() and main(["ingest", source, "-o", out, *extra]) != 0:
                raise SystemExit(f"ingest of {source} failed")


def reduced(args) -> None:
    import multiprocessing as mp

    from zarrseg.cli import main

    os.environ["OMP_NUM_THREADS"] = "1"  # one thread per worker: the workers share the cores
    os.environ.setdefault("ZARRSEG_NO_PROGRESS", "1")
    work, config_file = args.work.resolve(), args.config.resolve()
    os.chdir(REPO)  # the sample sheet's paths are relative to the repository
    plan, config = load_plan(work, config_file)
    t0 = time.perf_counter()
    ingest_all(plan)
    jobs = [j for j in reduced_jobs(plan, args) if not Path(metrics_path(plan, *j)).exists()]
    if args.step == "table":  # tabulate what the jobs of these options have finished, run nothing
        print(f"{len(jobs)} jobs of these options not run (left out of the table)", flush=True)
        jobs = []
    print(f"{len(jobs)} jobs to run with {args.workers} worker(s)", flush=True)
    log = work / "reduced_jobs.tsv"
    with mp.get_context("spawn").Pool(args.workers, _init_worker, (str(work), str(config_file))) as pool, \
            open(log, "a") as out:
        for i, (sample, cell, seconds, status) in enumerate(pool.imap_unordered(run_job, jobs), start=1):
            out.write(f"{sample}\t{cell}\t{seconds:.1f}\t{status}\n")
            out.flush()
            if status != "ok" or i % 100 == 0 or "beta-" in cell:
                print(f"[{i}/{len(jobs)} {time.perf_counter() - t0:.0f} s] {sample} {cell}: {status} "
                      f"({seconds:.1f} s)", flush=True)
    tables = [metrics_path(plan, s, c) for s, c in reduced_jobs(plan, args) if Path(metrics_path(plan, s, c)).exists()]
    table = plan.stage_params("table", plan.experiment.fixed)
    code = main(["table", *tables, "-o", str(work / EXPERIMENT), "--params", json.dumps(table)])
    print(f"reduced protocol: {len(tables)} cells scored in {time.perf_counter() - t0:.0f} s; table exit {code}")
    print((work / EXPERIMENT / "selection.md").read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["sheet", "reduced", "table"])
    parser.add_argument("--work", type=Path, default=REPO / "work" / "bsds300_reduced", help="results folder")
    parser.add_argument("--config", type=Path, default=REPO / "config" / "bsds300_reduced.yaml")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--wnet-images", type=int, default=4, help="images of the W-Net rows (selection ones first)")
    parser.add_argument("--selection", type=int, default=2, help="of them: selection images (choose the fixed beta)")
    parser.add_argument("--betas", type=float, nargs="+", default=[1.0, 0.1, 0.01])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--baseline-images", type=int, default=100,
                        help="baseline rows: the W-Net images, then the first N sorted image ids (all: 100)")
    parser.add_argument("--rows", nargs="+", default=None, help="only these rows (default: all twelve)")
    args = parser.parse_args(argv)
    if args.step == "sheet":
        write_sheet(REPO / "work" / "bsds300")
    else:
        reduced(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
