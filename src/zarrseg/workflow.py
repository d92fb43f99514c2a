"""What the Snakemake workflow needs from the library: sample discovery and per-cell stage parameters.

Kept here (not in the .smk files) so it is unit-tested without Snakemake.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import ConfigError, ZarrsegError
from .experiments import Experiment, load_experiment, stage_overrides
from .ingest.params import IngestParams
from .params import deep_update, load_params

log = logging.getLogger(__name__)

# file name endings of images in an input folder, matched case-insensitively (A1.CZI, x.TIF)
IMAGE_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".czi", ".png", ".jpeg", ".jpg")
MULTI_SCENE_SUFFIXES = (".czi", ".tif", ".tiff")  # formats whose files can hold several scenes
DEFAULT_SHEET = "config/samples.tsv"  # config.yaml's sheet: not read when only input_dir is set
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
        missing = [v for v in (sample.image, sample.ground_truth, sample.boundaries)
                   if v is not None and not _existing_file(v).exists()]
        if missing:  # one missing file must not stop the other samples
            log.warning("%s: sample %r skipped: input %s does not exist", path, name, missing[0])
            continue
        samples.append(sample)
    return samples


def image_files(folder: str | Path) -> list[Path]:
    """The image files of ``folder`` (extensions in any case), sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))


def folder_acquisitions(folder: str | Path, gt_suffix: str = "_labels") -> list[tuple[Path, Path | None]]:
    """(image, ground truth or None) for every image in ``folder``; ``<stem><gt_suffix>.<ext>`` beside
    an image is its ground truth, not an acquisition of its own."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError("input folder does not exist", folder)
    stems = {_stem(p): p for p in image_files(folder)}
    pairs = []
    for stem, path in stems.items():
        if gt_suffix and stem.endswith(gt_suffix) and stem[: -len(gt_suffix)] in stems:
            continue  # a ground-truth file, not a sample
        pairs.append((path, stems.get(stem + gt_suffix) if gt_suffix else None))
    return pairs


def discover_folder(folder: str | Path, gt_suffix: str = "_labels", params: IngestParams | None = None) -> list[Sample]:
    """Every image in ``folder`` gives one sample per scene; ``<stem><gt_suffix>.<ext>`` beside it is its ground truth."""
    return [sample for path, gt in folder_acquisitions(folder, gt_suffix)
            for sample in acquisition_samples(path, str(gt) if gt else None, scene_labels(path, params))]


def _stem(path: Path) -> str:
    name = path.name
    for ext in IMAGE_SUFFIXES:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def sample_name(path: Path) -> str:
    """The sample name of a file: its name without the image extension, other characters as '_'."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", _stem(path))


def acquisition_samples(path: Path, ground_truth: str | None, labels: list[str]) -> list[Sample]:
    """One sample per scene (or position) of an acquisition, named ``<file>_<scene label>``.

    ``labels``: from ``scene_labels``. A single-scene file is one sample named after the file;
    so is a file that cannot be opened (still being written, corrupt): its ingest job then fails
    with the reason.
    """
    name = sample_name(path)
    if len(labels) <= 1:
        return [Sample(name=name, image=str(path), ground_truth=ground_truth)]
    if ground_truth:
        log.warning("%s: ground truth %s not used: the acquisition has %d scenes (one ground truth per "
                    "scene is given through a sample sheet)", path, ground_truth, len(labels))
    return [Sample(name=f"{name}_{label}", image=str(path), scene=k) for k, label in enumerate(labels)]


def read_scene_names(path: Path, params: IngestParams | None = None) -> list[str]:
    """Names of the scenes of an image file; opening it is also its structural check (raises InputError)."""
    if not path.name.lower().endswith(MULTI_SCENE_SUFFIXES):
        return [path.stem]  # PNG / JPEG: one 2D image, checked when ingested
    from .ingest import open_source

    with open_source(path, None, params or IngestParams()) as src:
        return [s.name for s in src.scenes]


def scene_labels(path: Path, params: IngestParams | None = None, names: list[str] | None = None) -> list[str]:
    """Sample-name suffix of every scene: its name from the file, else its index (empty: unreadable)."""
    if names is None:
        try:
            names = read_scene_names(path, params)
        except (ZarrsegError, OSError):
            return []
    labels = [re.sub(r"[^A-Za-z0-9_.-]", "_", n.strip()) for n in names]
    generic = [not label or re.fullmatch(r"(scene|series)_\d+", label) for label in labels]
    if any(generic) or len(set(labels)) < len(labels):  # unnamed or ambiguous: indices for all
        return [str(k) for k in range(len(names))]
    return labels


def discover_samples(config: dict, base: str | Path = ".", experiment: Experiment | None = None) -> dict[str, Sample]:
    """All samples of the config (sample sheet first, then the input folder); names must be unique.

    An experiment with a sample sheet of its own (``sheet:``) uses only that sheet.
    """
    base = Path(base)
    conf = {"sheet": experiment.sheet} if experiment is not None and experiment.sheet else config.get("samples", {})
    sheet = sheet_setting(conf)
    samples: list[Sample] = []
    if sheet:
        samples += read_sample_sheet(base / sheet, base)
    if _setting(conf.get("input_dir")):
        params = load_params(IngestParams, stage_params(config, "ingest"), where="ingest")
        samples += discover_folder(base / conf["input_dir"], conf.get("ground_truth_suffix", "_labels"), params)
    out: dict[str, Sample] = {}
    for s in samples:
        if s.name in out:
            raise ConfigError(f"sample name {s.name!r} appears twice (sample sheet and/or input folder)")
        out[s.name] = s
    if not out:
        raise ConfigError("no samples: set samples.sheet or samples.input_dir in the config")
    return out


def sheet_setting(conf: dict) -> str | None:
    """The sample sheet to read: off for null (also "null"/"none"/"" from ``--config``), and the
    default sheet is not read when an input folder is set (name a sheet to combine both)."""
    sheet = _setting(conf.get("sheet"))
    if sheet and _setting(conf.get("input_dir")) and sheet == DEFAULT_SHEET:
        log.info("samples.input_dir is set: the default sample sheet %s is not read", DEFAULT_SHEET)
        return None
    return sheet


def _setting(value: Any) -> str | None:
    """A path setting; None also for the strings Snakemake's ``--config`` makes of null."""
    if value is None or str(value).strip().lower() in ("", "null", "none", "~"):
        return None
    return str(value)


def staged_scene(image: str, scene: int) -> str:
    """The path a stage opens for ``scene`` of a sample's staged image (the one helper rules use).

    The ingest rule stages exactly the sample's scene (``ingest --scene``), so the staged image
    is a plain NGFF image at its root whatever the scene: the path is ``image`` itself.
    """
    return image


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
