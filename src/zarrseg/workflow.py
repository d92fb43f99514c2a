"""What the Snakemake workflow needs from the library: sample discovery and per-cell stage parameters.

Kept here (not in the .smk files) so it is unit-tested without Snakemake.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import ConfigError
from .experiments import Experiment, load_experiment, stage_overrides
from .params import deep_update

IMAGE_PATTERNS = ("*.czi", "*.tif", "*.tiff", "*.ome.tif", "*.ome.tiff")
SAMPLE_COLUMNS = ("sample", "image", "ground_truth", "boundaries", "scene", "channel")
STORAGE_STAGES = ("ingest", "predict", "segment")  # stages whose parameters take storage.chunks/compression
DASK_STAGES = ("predict", "segment", "evaluate")  # stages whose parameters take the dask section


@dataclass
class Sample:
    name: str
    image: str
    ground_truth: str | None = None
    boundaries: str | None = None  # a pre-computed boundary map replaces the predict stage
    scene: int = 0
    channel: int = 0


def _resolve(value: Any, base: Path) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)) or str(value).strip() in ("", "-", "NA"):
        return None
    text = str(value).strip()
    path_part, sep, dataset = text.partition(".h5:")  # HDF5 inputs are "file.h5:dataset"
    path = Path(path_part + (".h5" if sep else ""))
    if not path.is_absolute():
        path = base / path
    return str(path) + (":" + dataset if sep else "")


def _existing_file(value: str) -> Path:
    return Path(value.split(".h5:")[0] + ".h5") if ".h5:" in value else Path(value)


def read_sample_sheet(path: str | Path, base: Path) -> list[Sample]:
    """Samples from a TSV with columns sample, image, [ground_truth], [boundaries], [scene], [channel]."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("sample sheet does not exist", path)
    table = pd.read_csv(path, sep="\t", dtype=str, comment="#")
    missing = {"sample", "image"} - set(table.columns)
    if missing:
        raise ConfigError(f"sample sheet lacks column(s) {sorted(missing)}", path)
    unknown = set(table.columns) - set(SAMPLE_COLUMNS)
    if unknown:
        raise ConfigError(f"sample sheet has unknown column(s) {sorted(unknown)}; known: {list(SAMPLE_COLUMNS)}",
                          path)
    samples = []
    for row in table.to_dict("records"):
        name = str(row["sample"]).strip()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ConfigError(f"sample name {name!r} must be letters, digits, '_', '-', '.'", path)
        sample = Sample(
            name=name, image=_resolve(row["image"], base), ground_truth=_resolve(row.get("ground_truth"), base),
            boundaries=_resolve(row.get("boundaries"), base),
            scene=int(row.get("scene") or 0) if not pd.isna(row.get("scene")) else 0,
            channel=int(row.get("channel") or 0) if not pd.isna(row.get("channel")) else 0,
        )
        for value in (sample.image, sample.ground_truth, sample.boundaries):
            if value is not None and not _existing_file(value).exists():
                raise ConfigError(f"sample {name!r}: input {value} does not exist", path)
        samples.append(sample)
    return samples


def discover_folder(folder: str | Path, gt_suffix: str = "_labels") -> list[Sample]:
    """Every CZI/TIFF in ``folder`` is a sample; ``<stem><gt_suffix>.<ext>`` beside it is its ground truth."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError("input folder does not exist", folder)
    files = sorted({p for pattern in IMAGE_PATTERNS for p in folder.glob(pattern)})
    stems = {_stem(p): p for p in files}
    samples = []
    for stem, path in stems.items():
        if gt_suffix and stem.endswith(gt_suffix) and stem[: -len(gt_suffix)] in stems:
            continue  # a ground-truth file, not a sample
        gt = stems.get(stem + gt_suffix) if gt_suffix else None
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", stem)
        samples.append(Sample(name=name, image=str(path), ground_truth=str(gt) if gt else None))
    return samples


def _stem(path: Path) -> str:
    name = path.name
    for ext in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".czi"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def discover_samples(config: dict, base: str | Path = ".", experiment: Experiment | None = None) -> dict[str, Sample]:
    """All samples of the config (sample sheet first, then the input folder); names must be unique.

    An experiment with a sample sheet of its own (``sheet:``) uses only that sheet.
    """
    base = Path(base)
    conf = {"sheet": experiment.sheet} if experiment is not None and experiment.sheet else config.get("samples", {})
    samples: list[Sample] = []
    if conf.get("sheet"):
        samples += read_sample_sheet(base / conf["sheet"], base)
    if conf.get("input_dir"):
        samples += discover_folder(base / conf["input_dir"], conf.get("ground_truth_suffix", "_labels"))
    out: dict[str, Sample] = {}
    for s in samples:
        if s.name in out:
            raise ConfigError(f"sample name {s.name!r} appears twice (sample sheet and/or input folder)")
        out[s.name] = s
    if not out:
        raise ConfigError("no samples: set samples.sheet or samples.input_dir in the config")
    return out


def experiment_for(config: dict, base: str | Path = ".") -> Experiment:
    name = config.get("experiment", "default")
    return load_experiment(Path(base) / "config" / "experiments" / f"{name}.yaml")


def stage_params(config: dict, stage: str, cell_values: dict[str, Any] | None = None) -> dict:
    """Parameters of ``stage`` for one grid cell: config section, storage keys, then the cell's values."""
    params = copy.deepcopy(config.get(stage) or {})
    if stage in STORAGE_STAGES:
        for key in ("chunks", "compression"):
            if key in config.get("storage", {}):
                params.setdefault(key, copy.deepcopy(config["storage"][key]))
    if stage in DASK_STAGES and "dask" in config:
        params.setdefault("dask", copy.deepcopy(config["dask"]))
    return deep_update(params, stage_overrides(cell_values or {}, stage))


def params_json(params: dict) -> str:
    """Canonical JSON (sorted keys) so Snakemake's params-change detection is stable."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"))
