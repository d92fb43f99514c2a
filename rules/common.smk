# Shared by every rule file: samples, the experiment grid, paths and parameter helpers.
# Logic lives in zarrseg.workflow / zarrseg.experiments (unit-tested without Snakemake).

import json
import re
from pathlib import Path

from zarrseg.experiments import cell_for
from zarrseg.params import load_params
from zarrseg.segment.params import SegmentParams
from zarrseg.workflow import discover_samples, experiment_for, params_json, stage_params, staged_scene

R = config["results_dir"]

# Rules run the library from this checkout, also inside --sdm conda environments (envs/*.yaml
# hold the dependencies, the code comes from src/ on PYTHONPATH).
ZARRSEG = "python -m zarrseg"
SRC = str(Path(workflow.basedir).parent / "src")
shell.prefix(f"export PYTHONPATH={SRC}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; ")
CPU_ENV = "../envs/cpu.yaml"
GPU_ENV = "../envs/gpu.yaml"
EXPERIMENT = experiment_for(config)
SAMPLES = discover_samples(config, experiment=EXPERIMENT)
EXP = EXPERIMENT.name
CELLS = EXPERIMENT.cells()  # cell id -> {"stage.key": value}
EXP_SAMPLES = [s for s in (EXPERIMENT.samples or list(SAMPLES))]
for _name in EXP_SAMPLES:
    if _name not in SAMPLES:
        raise ValueError(f"experiment {EXP!r} names sample {_name!r}, which is not in the sample sheet / input folder")

# Stages whose outputs a grid cell shares with other cells when only later stages' keys differ.
PREDICT_STAGES = ("train", "predict")

wildcard_constraints:
    sample="|".join(map(re.escape, SAMPLES)) if SAMPLES else "NOSAMPLE",
    cell="[A-Za-z0-9_.+-]+",
    pcell="[A-Za-z0-9_.+-]+",


def cell_values(cell):
    return {**{k: v for k, v in EXPERIMENT.fixed.items()}, **CELLS[cell]}


def predict_cell(cell):
    """The sub-cell the boundary map of ``cell`` depends on (shared by cells that vary only later stages)."""
    return cell_for(cell_values(cell), PREDICT_STAGES)


PCELLS = {predict_cell(c): {k: v for k, v in cell_values(c).items() if k.split(".", 1)[0] in PREDICT_STAGES}
          for c in CELLS}


def stage_json(stage, cell=None, pcell=None, **extra):
    """Canonical JSON of one stage's parameters for a grid cell (passed to the CLI as --params)."""
    values = cell_values(cell) if cell is not None else PCELLS.get(pcell, {})
    params = stage_params(config, stage, values)
    params.update(extra)
    return params_json(params)


def log_path(stage, *parts):
    return str(Path(R, "logs", EXP, stage, *parts)) + ".log"


def bench_path(stage, *parts):
    return str(Path(R, "benchmarks", EXP, stage, *parts)) + ".tsv"


# ---- paths --------------------------------------------------------------------------------------
def image_path(sample):
    return f"{R}/ingest/{sample}/image.ome.zarr"


def ground_truth_path(sample):
    return f"{R}/ingest/{sample}/ground_truth.ome.zarr"


def given_boundaries_path(sample):
    return f"{R}/ingest/{sample}/given_boundaries.ome.zarr"


def boundaries_path(sample, cell):
    """The boundary map segmentation of ``cell`` starts from: given by the sample sheet, or predicted."""
    if SAMPLES[sample].boundaries:
        return given_boundaries_path(sample)
    return f"{R}/{EXP}/{sample}/predict/{predict_cell(cell)}/boundaries.ome.zarr"


def labels_path(sample, cell):
    return f"{R}/{EXP}/{sample}/{cell}/labels.ome.zarr"


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
