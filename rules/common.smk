# Shared by every rule file: samples, the experiment grid, paths and parameter helpers.
# Logic lives in zarrseg.workflow (Plan) and zarrseg.experiments (unit-tested without Snakemake);
# no rule names a grid row or a learning method.

import json
import os
import re
import shlex
import sys
from pathlib import Path

from zarrseg.workflow import Plan, discover_samples, experiment_for, params_json, stage_params, with_workers, write_lines

R = config["results_dir"]

# Rules run the library from this checkout, also inside --sdm conda environments (envs/*.yaml
# hold the dependencies, the code comes from src/ on PYTHONPATH). Third-party learning methods
# named in the config (methods: [...]) are registered in every job through ZARRSEG_METHODS.
ZARRSEG = "python -m zarrseg"
# `.venv/bin/snakemake` run without activating the venv: a job's `python` is the interpreter that
# runs Snakemake (its folder first on PATH, inherited by every job); a --sdm conda environment,
# activated inside each job, still puts its own python first.
_BIN = str(Path(sys.executable).parent)
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")
SRC = str(Path(workflow.basedir).parent / "src")
METHOD_MODULES = ",".join(config.get("methods") or [])
shell.prefix(
    f"export PYTHONPATH={SRC}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
    + (f"export ZARRSEG_METHODS={METHOD_MODULES}; " if METHOD_MODULES else "")
)
CPU_ENV = "../envs/cpu.yaml"
GPU_ENV = "../envs/gpu.yaml"
EXPERIMENT = experiment_for(config)
SAMPLES = discover_samples(config, experiment=EXPERIMENT)
EXP = EXPERIMENT.name
PLAN = Plan(config, EXPERIMENT, SAMPLES, R)
CELLS = PLAN.cells  # cell id -> {"stage.key": value}
EXP_SAMPLES = PLAN.experiment_samples()
for _name in EXP_SAMPLES:
    if _name not in SAMPLES:
        raise ValueError(f"experiment {EXP!r} names sample {_name!r}, which is not in the sample sheet / input folder")
CLUSTERED = PLAN.clustered_cells()  # cells whose labels come from the cluster rule, not segment

wildcard_constraints:
    sample="|".join(map(re.escape, SAMPLES)) if SAMPLES else "NOSAMPLE",
    cell="[A-Za-z0-9_.+-]+",
    pcell="[A-Za-z0-9_.+-]+",
    mcell="[A-Za-z0-9_.+-]+",
    method="[A-Za-z0-9_]+",


def cell_values(cell):
    return PLAN.values(cell)


def stage_json(stage, cell=None, values=None, sample=None, **extra):
    """Canonical JSON of one stage's parameters for a grid cell (passed to the CLI as --params);
    ``sample`` picks the model of that sample where a model is trained per sample."""
    values = PLAN.values(cell) if cell is not None else (values or {})
    params = PLAN.resolve(PLAN.stage_params(stage, values), values, sample)
    params.update(extra)
    return params_json(params)


def log_path(stage, *parts):
    return str(Path(R, "logs", EXP, stage, *parts)) + ".log"


def bench_path(stage, *parts):
    return str(Path(R, "benchmarks", EXP, stage, *parts)) + ".tsv"


# ---- paths --------------------------------------------------------------------------------------
image_path = PLAN.image_path
image_input = PLAN.image_input
ground_truth_path = PLAN.ground_truth_path
labels_path = PLAN.labels_path


def given_boundaries_path(sample):
    return f"{R}/ingest/{sample}/given_boundaries.ome.zarr"


def boundaries_path(sample, cell):
    """The boundary map segmentation of ``cell`` starts from: given by the sample sheet, or predicted."""
    if SAMPLES[sample].boundaries:
        return given_boundaries_path(sample)
    return PLAN.prediction_path(sample, cell)


def metrics_path(sample, cell):
    return f"{R}/{EXP}/{sample}/{cell}/metrics.parquet"


def final_targets():
    """Metrics and summary tables when every sample has ground truth, else the label images."""
    with_gt = [s for s in EXP_SAMPLES if SAMPLES[s].ground_truth]
    targets = [labels_path(s, c) for s in EXP_SAMPLES for c in CELLS if not SAMPLES[s].ground_truth]
    if with_gt:
        targets += [f"{R}/{EXP}/summary.md", f"{R}/{EXP}/metrics.parquet"]
    return targets + summary_targets()  # rules/describe.smk: segment counts and sizes, no ground truth needed


def source_file(value):
    """The file behind a sample-sheet entry ("file.h5:dataset" -> "file.h5"), for Snakemake's input."""
    return value.split(".h5:")[0] + ".h5" if ".h5:" in value else value


def blockwise_json(stage, threads, cell=None, values=None, sample=None, **extra):
    """Stage parameters of a blockwise job, with the job's threads as Dask workers."""
    return params_json(
        with_workers(json.loads(stage_json(stage, cell=cell, values=values, sample=sample, **extra)), threads)
    )
