"""What the Snakemake workflow needs from the library: sample discovery and per-cell stage parameters.

Kept here (not in the .smk files) so it is unit-tested without Snakemake.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import ConfigError, ZarrsegError
from .experiments import Experiment, is_seed, load_experiment, stage_overrides
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
    # '#' starts a comment only at the start of a line: 'well#12.tif' is a file name
    lines = [line for line in path.read_text().splitlines(keepends=True) if not line.lstrip().startswith("#")]
    table = pd.read_csv(io.StringIO("".join(lines)), sep="\t", dtype=str)
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
            raise ConfigError(f"sample name {name!r} must start with a letter or digit and hold only letters, "
                              "digits, '_', '-', '.'", path)
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
    stems: dict[str, list[Path]] = {}
    for path in image_files(folder):  # a.tif and a.czi are two acquisitions (whose names then clash)
        stems.setdefault(_stem(path), []).append(path)
    pairs = []
    for stem, paths in stems.items():
        if gt_suffix and stem.endswith(gt_suffix) and stem[: -len(gt_suffix)] in stems:
            continue  # a ground-truth file, not a sample
        gts = stems.get(stem + gt_suffix, []) if gt_suffix else []
        pairs += [(path, gts[0] if gts else None) for path in paths]
    return pairs


def discover_folder(folder: str | Path, gt_suffix: str = "_labels", params: IngestParams | None = None) -> list[Sample]:
    """Every image in ``folder`` gives one sample per scene; ``<stem><gt_suffix>.<ext>`` beside it is its ground truth."""
    samples: dict[str, Sample] = {}
    for path, gt in folder_acquisitions(folder, gt_suffix):
        for sample in acquisition_samples(path, str(gt) if gt else None, scene_labels(path, params)):
            if sample.name in samples:
                raise ConfigError(f"sample name {sample.name!r} of {path.name} is already that of "
                                  f"{Path(samples[sample.name].image).name}; rename one of the files", folder)
            samples[sample.name] = sample
    return list(samples.values())


def _stem(path: Path) -> str:
    name = path.name
    for ext in IMAGE_SUFFIXES:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def sample_name(path: Path) -> str:
    """The sample name of a file: its name without the image extension, accents dropped (ä -> a),
    other characters as '_', and an 's' in front when it would not start with a letter or digit
    (the sample sheet's rule: '_scan 2.tif' -> 's_scan_2')."""
    ascii_name = unicodedata.normalize("NFKD", _stem(path)).encode("ascii", "ignore").decode()
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", ascii_name) or "s"
    return name if name[0].isalnum() else f"s{name}"


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


# ---- the jobs of an experiment ----------------------------------------------------------------
# Rules ask a ``Plan`` what a grid cell needs; they never name a grid row or a learning method.
# Pseudo-stage keys a grid cell may set besides stage parameters:
#   grid.row           its label in summary tables (default: the segment partitioner)
#   grid.model         the learning method whose model, trained for this cell, the cell uses: its
#                      checkpoint becomes predict.checkpoint (methods with dense output) or
#                      features.checkpoint (ViTs), unless the cell sets those itself
#   grid.labels        segment | cluster | threshold | argmax: how the labels are made (default: the
#                      model's post-processing in the method registry, else segment)
#   grid.ground_truth  as_is | foreground: score against the binary foreground of the ground truth
# Any parameter may reference a model trained in the workflow as "model:<method>" (e.g.
# finetune.checkpoint: model:dino); predict.checkpoint "train" is the former name of "model:unet".
# The config key ``models`` ({method: checkpoint file}) supplies a method's model instead of
# training it (e.g. a downloaded DINO ViT): every reference to that method then means the file.
# Any parameter may reference the experiment's crop store (the crops stage) as "crops:<path inside
# it>" (e.g. train.train: [{image: crops:finetune/image, labels: crops:finetune/mask}]); methods
# that learn from crops (registry data "crops") get the store as their `crops` parameter.
# A method section's `samples: ["{sample}"]` makes one model per scored sample, trained on that
# sample alone (single-image methods such as the W-Net); its model id ends in "+<sample>".

GRID = "grid"
MODEL_REF = "model:"
CROPS_REF = "crops:"
SAMPLE_REF = "{sample}"
LABEL_ROUTES = ("segment", "cluster", "threshold", "argmax")
PIXEL_ROUTES = ("threshold", "argmax")  # labels from each voxel of the prediction (cluster rule)
CROPS_STAGE = "crops"


def model_refs(params: Any) -> list[str]:
    """Methods whose trained models a parameter tree references (``"model:<method>"``), in order."""
    found: list[str] = []
    if isinstance(params, dict):
        for value in params.values():
            found += model_refs(value)
    elif isinstance(params, list):
        for value in params:
            found += model_refs(value)
    elif isinstance(params, str) and params.startswith(MODEL_REF):
        found.append(params[len(MODEL_REF):])
    return list(dict.fromkeys(found))


def crop_refs(params: Any) -> bool:
    """Whether a parameter tree references the crop store (``"crops:..."``)."""
    if isinstance(params, dict):
        return any(crop_refs(v) for v in params.values())
    if isinstance(params, list):
        return any(crop_refs(v) for v in params)
    return isinstance(params, str) and params.startswith(CROPS_REF)


TRAIN_RESOURCES = {"mem_mb": 16000, "runtime": 720}  # a training job's defaults (minutes for runtime)


class Plan:
    """What every job of an experiment needs: parameters, sub-cell ids, model paths, inputs.

    Cells that differ only in later stages share the outputs of earlier ones: the id of a
    stage's output (``subcell``) keeps only the grid keys that stage depends on, including the
    keys of the models it uses (and of the models those start from).
    """

    def __init__(self, config: dict, experiment: Experiment, samples: dict[str, Sample], results: str):
        from .learn.registry import get_method, load_modules

        load_modules(config.get("methods") or [])
        self.config, self.experiment, self.samples, self.results = config, experiment, samples, results
        self.given: dict[str, str] = dict(config.get("models") or {})  # method -> checkpoint file
        self.exp = experiment.name
        self.cells = experiment.cells()
        self._method = get_method
        self.models: dict[tuple[str, str], dict] = {}  # (method, model id) -> values of a cell using it
        self.model_sample: dict[tuple[str, str], str | None] = {}  # (method, model id) -> its sample
        self.subcells: dict[tuple[str, str], dict] = {}  # (stage, sub-cell id) -> values
        # Memos: rules ask the same questions for every job of a big grid (values are not mutated)
        self._values: dict[str, dict] = {}
        self._memo: dict[tuple, Any] = {}
        for cell in self.cells:
            values = self.values(cell)
            for stage in ("predict", "features"):
                self.subcells.setdefault((stage, self.subcell(stage, values)), values)
            for method in self.all_models(values):
                per_sample = self.per_sample(method, values)
                # sample patterns that match nothing fail before any job
                self.training_samples(method, values, self.experiment_samples()[0] if per_sample else None)
                for sample in self.experiment_samples() if per_sample else [None]:
                    key = (method, self.model_id(method, values, sample))
                    self.models.setdefault(key, values)
                    self.model_sample.setdefault(key, sample)
                if self.uses_crops(self.section(method), values):
                    self.subcells.setdefault((CROPS_STAGE, self.subcell(CROPS_STAGE, values)), values)
        for stage, ccell in list(self.subcells):
            if stage == CROPS_STAGE:
                self.crops_params(ccell)  # split patterns: every sample in one split, each pattern matching
        for cell in self.cells:
            self.labels_route(cell)
            if self._clusters_in_ground_truth(cell):  # a sample without ground truth fails before any job
                for sample in self.experiment_samples():
                    self.cluster_foreground(sample, cell)

    def _cached(self, name: str, values: dict[str, Any], *args: Any, compute) -> Any:
        key = (name, id(values), *args)
        if key not in self._memo or self._memo[key][0] is not values:
            self._memo[key] = (values, compute())
        return self._memo[key][1]

    # --- values of a cell ------------------------------------------------------------------------
    def values(self, cell: str) -> dict[str, Any]:
        """The cell's flat ``stage.key`` values: fixed keys, grid values, and what grid.model implies
        (one dict per cell, shared: do not modify it)."""
        if cell not in self._values:
            self._values[cell] = self._cell_values(cell)
        return self._values[cell]

    def _cell_values(self, cell: str) -> dict[str, Any]:
        values = {**self.experiment.fixed, **self.cells[cell]}
        method = values.get(f"{GRID}.model")
        if method:
            spec = self._method(method, where=f"experiment {self.exp}")
            if spec.inference == "none":
                raise ConfigError(f"experiment {self.exp}: grid.model {method!r} is a pretraining stage whose model "
                                  "gives no map to segment; use a method it initialises (e.g. contrastive_local, or "
                                  f"train.init: model:{method})")
            stage = "features" if spec.inference == "features" else "predict"
            values.setdefault(f"{stage}.checkpoint", MODEL_REF + method)
            if stage == "predict":
                values.setdefault("predict.method", "model")
        if values.get("predict.checkpoint") == "train":  # the former name of model:unet
            values["predict.checkpoint"] = MODEL_REF + "unet"
        return values

    def stage_params(self, stage: str, values: dict[str, Any]) -> dict:
        return stage_params(self.config, stage, values)

    def section(self, method: str) -> str:
        return self._method(method).config_section

    def depends(self, stage: str, values: dict[str, Any]) -> set[str]:
        """Stages (config sections) whose keys decide ``stage``'s output for these values."""
        out = {stage}
        for method in model_refs(self.stage_params(stage, values)):
            if method not in self.given:
                out |= self.depends(self.section(method), values)
        if self.uses_crops(stage, values):
            out.add(CROPS_STAGE)
        return out

    def uses_crops(self, stage: str, values: dict[str, Any]) -> bool:
        """Whether a stage (a method's section) learns from the crop store."""
        from .learn.registry import method_for_section

        spec = method_for_section(stage)
        return (spec is not None and spec.data == "crops") or crop_refs(self.stage_params(stage, values))

    def uses_model(self, values: dict[str, Any]) -> bool:
        return self.stage_params("predict", values).get("method", "intensity") in ("model", "unet")

    def stage_gpu(self, stage: str, values: dict[str, Any]) -> int:
        """GPUs a ``predict`` or ``features`` job requests: one when it runs a network on a device
        other than the CPU (``<stage>.device: cpu`` asks for none, so a CPU-only partition takes it)."""
        if stage == "predict" and not self.uses_model(values):
            return 0
        return 0 if self.stage_params(stage, values).get("device", "auto") == "cpu" else 1

    def subcell(self, stage: str, values: dict[str, Any]) -> str:
        """Id of ``stage``'s output for these values: the grid keys of the stages it depends on."""
        return self._cached("subcell", values, stage, compute=lambda: self._subcell(stage, values))

    def _subcell(self, stage: str, values: dict[str, Any]) -> str:
        from .experiments import cell_id

        stages = self.depends(stage, values)
        keys = {k: v for k, v in values.items() if k.split(".", 1)[0] in stages}
        if self._sample_fallback(stages, values):
            keys.setdefault("train.samples", values.get("train.samples"))
        return cell_id(keys)

    def _sample_fallback(self, stages: set[str], values: dict[str, Any]) -> bool:
        """Whether a model among ``stages`` learns from train.samples (it names no samples itself)."""
        from .learn.registry import method_for_section

        if "train.samples" not in values:
            return False
        return any(
            method_for_section(stage) is not None and not self.stage_params(stage, values).get("samples")
            for stage in stages - {"train"}
        )

    # --- models ----------------------------------------------------------------------------------
    def all_models(self, values: dict[str, Any]) -> list[str]:
        """Every model the cell's stages need, the ones they start from first."""
        wanted: list[str] = []
        todo = [m for stage in ("predict", "features") for m in model_refs(self.stage_params(stage, values))]
        while todo:
            method = todo.pop(0)
            if method in wanted or method in self.given:
                continue
            todo += model_refs(self.stage_params(self.section(method), values))
            wanted.append(method)
        return list(reversed(wanted))

    def _sample_patterns(self, method: str, values: dict[str, Any]) -> tuple[list[str], list[str]]:
        """A model's training and validation sample patterns (its section's, else train.samples)."""
        params = self.stage_params(self.section(method), values)
        patterns = params.get("samples") or self.stage_params("train", values).get("samples") or []
        return list(patterns), list(params.get("val_samples") or [])

    def per_sample(self, method: str, values: dict[str, Any]) -> bool:
        """Whether the model is trained once per scored sample: its sample patterns name "{sample}",
        or a model it starts from is trained per sample."""
        return self._cached("per_sample", values, method, compute=lambda: self._per_sample(method, values))

    def _per_sample(self, method: str, values: dict[str, Any]) -> bool:
        train, val = self._sample_patterns(method, values)
        if any(SAMPLE_REF in p for p in train + val):
            return True
        refs = model_refs(self.stage_params(self.section(method), values))
        return any(self.per_sample(m, values) for m in refs if m not in self.given)

    def model_id(self, method: str, values: dict[str, Any], sample: str | None = None) -> str:
        base = self.subcell(self.section(method), values)
        if not self.per_sample(method, values):
            return base
        if sample is None:
            raise ConfigError(f"the {method} model is trained per sample ({SAMPLE_REF}): a sample is needed")
        return f"{base}+{sample}"

    def model_path(self, method: str, values: dict[str, Any], sample: str | None = None) -> str:
        if method in self.given:
            return self.given[method]
        return f"{self.results}/{self.exp}/models/{method}/{self.model_id(method, values, sample)}/best.pt"

    def resolve(self, params: Any, values: dict[str, Any], sample: str | None = None) -> Any:
        """``params`` with every ``model:<method>`` replaced by that model's checkpoint path (the
        model of ``sample`` for models trained per sample)."""
        if isinstance(params, dict):
            return {k: self.resolve(v, values, sample) for k, v in params.items()}
        if isinstance(params, list):
            return [self.resolve(v, values, sample) for v in params]
        if isinstance(params, str) and params.startswith(MODEL_REF):
            return self.model_path(params[len(MODEL_REF):], values, sample)
        if isinstance(params, str) and params.startswith(CROPS_REF):
            inside = params[len(CROPS_REF):].strip("/")
            return self.crops_path(values) + (f"/{inside}" if inside else "")
        return params

    def checkpoints(self, stage: str, values: dict[str, Any], sample: str | None = None) -> list[str]:
        """Checkpoint files a stage's parameters reference (Snakemake inputs)."""
        return [self.model_path(m, values, sample) for m in model_refs(self.stage_params(stage, values))]

    def training_samples(
        self, method: str, values: dict[str, Any], sample: str | None = None
    ) -> tuple[list[str], list[str], str | None]:
        """(training samples, validation samples, roi) of a model, from its section's workflow keys
        ("{sample}" in a pattern stands for ``sample``, the sample a per-sample model is for)."""
        spec = self._method(method)
        params = self.stage_params(spec.config_section, values)
        if spec.data == "crops":  # the crop store says which samples it holds
            return [], [], None
        patterns, val_patterns = self._sample_patterns(method, values)
        if sample is not None:
            patterns = [p.replace(SAMPLE_REF, sample) for p in patterns]
            val_patterns = [p.replace(SAMPLE_REF, sample) for p in val_patterns]
        labelled = spec.data == "labelled"
        if patterns:
            names = self.match_samples(patterns, labelled)
        else:
            names = [s for s in self.experiment_samples() if self.samples[s].ground_truth or not labelled]
        val = self.match_samples(val_patterns, labelled)
        return names, val, params.get("roi")

    def match_samples(self, patterns: list[str], labelled: bool = False, where: str = "train.samples") -> list[str]:
        """Sample names matching any of the shell ``patterns`` (sheet order); with ground truth when
        ``labelled``. A pattern matching nothing is an error, not a silent empty set."""
        from fnmatch import fnmatchcase

        names: list[str] = []
        for pattern in patterns:
            found = [s for s in self.samples if fnmatchcase(s, pattern)]
            if not found:
                raise ConfigError(f"{where} entry {pattern!r} matches no sample of the sample sheet")
            names += found
        names = list(dict.fromkeys(names))
        return [s for s in names if self.samples[s].ground_truth] if labelled else names

    def experiment_samples(self) -> list[str]:
        """The samples the experiment scores: its ``samples`` (names or shell patterns), else all."""
        if not self.experiment.samples:
            return list(self.samples)
        return self.match_samples(self.experiment.samples, where=f"experiment {self.exp}: samples")

    # --- the crop store ----------------------------------------------------------------------------
    def crops_path(self, values: dict[str, Any]) -> str:
        return f"{self.results}/{self.exp}/crops/{self.subcell(CROPS_STAGE, values)}"

    def crops_params(self, ccell: str) -> dict:
        """``zarrseg crops`` parameters of a crop store: the section, its `split` patterns resolved
        into one source per sample (each sample in exactly one split)."""
        values = self.subcells[(CROPS_STAGE, ccell)]
        params = self.stage_params(CROPS_STAGE, values)
        split = params.pop("split", None) or {}
        if not split and not params.get("images"):
            raise ConfigError("crops.split: name the samples of each split (pretrain / finetune / test)")
        owner: dict[str, str] = {}
        images = []
        for name, patterns in split.items():
            for sample in self.match_samples(list(patterns), where=f"crops.split.{name}"):
                if sample in owner:
                    raise ConfigError(f"crops.split: sample {sample!r} is in both {owner[sample]!r} and {name!r}")
                owner[sample] = name
                gt = self.samples[sample].ground_truth
                images.append({"image": self.image_input(sample), "split": name, "name": sample,
                               "labels": self.ground_truth_path(sample) if gt else None,
                               "channel": self.samples[sample].channel})
        params.setdefault("images", images)
        return params

    def crops_inputs(self, ccell: str) -> list[str]:
        """Staged images and ground truths a crop store reads (Snakemake inputs)."""
        out = []
        for item in self.crops_params(ccell)["images"]:
            sample = item.get("name")
            if sample in self.samples:
                out.append(self.image_path(sample))
                if item.get("labels"):
                    out.append(self.ground_truth_path(sample))
        return out

    def model_params(self, method: str, model_id: str) -> dict:
        """The parameters ``zarrseg train --method`` gets: the section, its training data, resolved references."""
        values, sample = self.models[(method, model_id)], self.model_sample[(method, model_id)]
        spec = self._method(method)
        params = self.resolve(self.stage_params(spec.config_section, values), values, sample)
        for key in ("samples", "val_samples", "roi", "resources"):
            params.pop(key, None)
        names, val, roi = self.training_samples(method, values, sample)
        if spec.data == "labelled":
            params.setdefault("train", [self.train_item(s, roi) for s in names])
            params.setdefault("val", [self.train_item(s, None) for s in val])
        elif spec.data == "crops":
            params.setdefault("crops", self.crops_path(values))
        else:
            params.setdefault("images", [self.image_input(s) for s in names])
        return params

    def model_resources(self, method: str, model_id: str) -> dict[str, int]:
        """What the training job of a model requests: the train rule's defaults, no GPU for a
        method set to train on the CPU (``loop.device: cpu``), then the section's ``resources``."""
        values = self.models[(method, model_id)]

        def compute() -> dict[str, int]:  # asked once per resource of every training job
            params = self.stage_params(self._method(method).config_section, values)
            device = (params.get("loop") or {}).get("device", "auto")
            return {**TRAIN_RESOURCES, "gpu": 0 if device == "cpu" else 1, **(params.get("resources") or {})}

        return self._cached("resources", values, method, compute=compute)

    def model_inputs(self, method: str, model_id: str) -> list[str]:
        values, sample = self.models[(method, model_id)], self.model_sample[(method, model_id)]
        spec = self._method(method)
        params = self.stage_params(spec.config_section, values)
        inputs = self.checkpoints(spec.config_section, values, sample)
        if self.uses_crops(spec.config_section, values):
            inputs.append(self.crops_path(values))
        if "train" in params or "images" in params or spec.data == "crops":  # nothing more to build
            return inputs
        names, val, _roi = self.training_samples(method, values, sample)
        names = list(dict.fromkeys([*names, *val]))
        inputs += [self.image_path(s) for s in names]
        if spec.data == "labelled":
            inputs += [self.ground_truth_path(s) for s in names]
        return inputs

    def train_item(self, sample: str, roi: str | None) -> dict:
        item = {"image": self.image_input(sample), "labels": self.ground_truth_path(sample),
                "channel": self.samples[sample].channel}
        if roi:
            item["roi"] = roi
        return item

    # --- paths -----------------------------------------------------------------------------------
    def image_path(self, sample: str) -> str:
        return f"{self.results}/ingest/{sample}/image.ome.zarr"

    def image_input(self, sample: str) -> str:
        """The image a stage opens: the sample's staged scene."""
        return staged_scene(self.image_path(sample), self.samples[sample].scene)

    def ground_truth_path(self, sample: str) -> str:
        return f"{self.results}/ingest/{sample}/ground_truth.ome.zarr"

    def prediction_path(self, sample: str, cell: str) -> str:
        pcell = self.subcell("predict", self.values(cell))
        return f"{self.results}/{self.exp}/{sample}/predict/{pcell}/boundaries.ome.zarr"

    def features_path(self, sample: str, cell: str) -> str:
        fcell = self.subcell("features", self.values(cell))
        return f"{self.results}/{self.exp}/{sample}/features/{fcell}/features.zarr"

    def labels_path(self, sample: str, cell: str) -> str:
        return f"{self.results}/{self.exp}/{sample}/{cell}/labels.ome.zarr"

    # --- how a cell's labels are made ------------------------------------------------------------
    def model_of(self, values: dict[str, Any]) -> str | None:
        if values.get(f"{GRID}.model"):
            return values[f"{GRID}.model"]
        refs = model_refs(self.stage_params("predict", values)) if self.uses_model(values) else []
        return refs[0] if refs else None

    def labels_route(self, cell: str) -> str:
        values = self.values(cell)
        return self._cached("labels_route", values, compute=lambda: self._labels_route(cell, values))

    def _labels_route(self, cell: str, values: dict[str, Any]) -> str:
        route = values.get(f"{GRID}.labels")
        if route is None:
            method = self.model_of(values)
            route = self._method(method).postprocess if method else "segment"
        if route not in LABEL_ROUTES:
            raise ConfigError(f"grid.labels of cell {cell!r} must be one of {list(LABEL_ROUTES)}, got {route!r}")
        return route

    def cluster_source(self, sample: str, cell: str) -> str:
        """What the cluster rule reads: the prediction, the features of the cell's ViT, or the image."""
        values = self.values(cell)
        if self.labels_route(cell) in PIXEL_ROUTES:
            return self.prediction_path(sample, cell)
        method = self.model_of(values)
        if method and self._method(method).inference == "features":
            return self.features_path(sample, cell)
        if method or self.uses_model(values):
            return self.prediction_path(sample, cell)
        if self.stage_params("features", values).get("checkpoint") or \
                self.stage_params("features", values).get("weights") == "hub":
            return self.features_path(sample, cell)
        return self.image_path(sample)

    def cluster_params(self, cell: str) -> dict:
        params = self.stage_params("cluster", self.values(cell))
        if self.labels_route(cell) in PIXEL_ROUTES:
            params["method"] = self.labels_route(cell)
        return params

    def cluster_foreground(self, sample: str, cell: str) -> str | None:
        """The sample's ingested ground truth when the cell clusters inside its foreground
        (``cluster.foreground: ground_truth``), else None."""
        if not self._clusters_in_ground_truth(cell):
            return None
        if not self.samples[sample].ground_truth:
            raise ConfigError(f"cluster.foreground: ground_truth, but sample {sample!r} has no ground truth "
                              f"(experiment {self.exp})")
        return self.ground_truth_path(sample)

    def _clusters_in_ground_truth(self, cell: str) -> bool:
        return self.stage_params("cluster", self.values(cell)).get("foreground", "none") == "ground_truth"

    def row_label(self, cell: str) -> str:
        values = self.values(cell)
        if f"{GRID}.row" in values:
            return str(values[f"{GRID}.row"])
        from .params import load_params
        from .segment.params import SegmentParams

        return load_params(SegmentParams, self.stage_params("segment", values), where="segment").partitioner

    def panel_cells(self, cells: list[str]) -> list[tuple[str, str]]:
        """(cell, title) of the side-by-side figures: one panel per grid row and setting (its first
        seed: seeds repeat a setting), titled by the row and, where a row has several panels, the
        values that tell them apart (e.g. ``g0.2_l0.2, loss.name: ssim_dice``)."""
        chosen: dict[str, str] = {}
        for cell in cells:
            values = self.values(cell)
            if f"{GRID}.row" in values:
                setting = {k: v for k, v in values.items() if not is_seed(k)}
                chosen.setdefault(json.dumps(setting, sort_keys=True, default=str), cell)
        by_row: dict[str, list[str]] = {}
        for cell in chosen.values():
            by_row.setdefault(self.row_label(cell), []).append(cell)
        titles = {}
        for row, row_cells in by_row.items():
            keys = list(dict.fromkeys(k for c in row_cells for k in self.values(c) if not is_seed(k)))
            differ = [k for k in keys if len({json.dumps(self.values(c).get(k), default=str) for c in row_cells}) > 1]
            names = {k: k.split(".", 1)[-1] for k in differ}
            for cell in row_cells:
                shown = [f"{names[k]}: {self.values(cell).get(k, '–')}" for k in differ]
                titles[cell] = ", ".join([row, *shown])
        return [(cell, titles[cell]) for cell in chosen.values()]

    def scores_foreground(self, cell: str) -> bool:
        return self.values(cell).get(f"{GRID}.ground_truth", "as_is") == "foreground"

    def clustered_cells(self) -> list[str]:
        return [c for c in self.cells if self.labels_route(c) != "segment"]


def with_workers(params: dict, threads: int) -> dict:
    """A blockwise stage uses exactly the cores Snakemake gave its job (unless dask.n_workers is set)."""
    params = copy.deepcopy(params)
    dask = params.setdefault("dask", {})
    if not dask.get("n_workers"):
        dask["n_workers"] = threads
    return params


def write_lines(path: str | Path, items) -> Path:
    """``items`` one per line into ``path`` (atomically): argument files (``zarrseg table @FILE``)
    for lists that would not fit in one command line."""
    from .runs import atomic_write_bytes

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, "".join(f"{item}\n" for item in items).encode())
