"""Export a trained checkpoint as a BioImage.IO-style model package (TorchScript + state dict + rdf.yaml).

The package follows the model description format 0.5 (``rdf.yaml``): weights in two formats
(``torchscript``, usable without zarrseg, and ``pytorch_state_dict`` rebuilt by
``zarrseg.methods.unet.models.build_unet``), input/output axes with the sizes the network accepts
(multiples of ``2**(depth-1)``), pre-/postprocessing that mirror zarrseg's normalisation and
sigmoid, and a test input/output pair as ``.npy``. Everything is written offline; when the
``bioimageio.spec`` package is installed the description is also validated with it.

One difference is documented in the package: zarrseg normalises with statistics of the whole
volume, BioImage.IO consumers with those of each tile (``zero_mean_unit_variance`` /
``scale_range`` per sample), which agree on tiles large enough to be representative.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import logging
import typing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile
import torch
import yaml

from ... import __version__, ome
from ...errors import ConfigError
from ...runs import file_sha256
from .checkpoint import LoadedModel, export_torchscript, load_checkpoint

log = logging.getLogger(__name__)

FORMAT_VERSION = "0.5.3"
EPS = 1e-6  # the eps of BioImage.IO's normalisation operators
DEFAULT_CITE = [
    {
        "text": "Wolny et al. 2020, Accurate and versatile 3D segmentation of plant tissues (PlantSeg)",
        "doi": "10.7554/eLife.57613",
    },
    {
        "text": "Ronneberger et al. 2015, U-Net: convolutional networks for biomedical image segmentation",
        "doi": "10.1007/978-3-319-24574-4_28",
    },
]


@dataclass
class ExportOptions:
    """Descriptive fields of the package (``zarrseg export`` flags)."""

    name: str | None = None  # default: "zarrseg <target> U-Net (<ndim>D)"
    description: str | None = None
    authors: list[str] = field(default_factory=list)  # default: ["zarrseg user"]
    license: str = "MIT"  # SPDX identifier
    tags: list[str] = field(default_factory=list)
    test_shape: list[int] | None = None  # spatial shape of the test tensor; default: training patch
    seed: int = 0  # of the random test input


def _axes(ndim: int) -> str:
    return "zyx"[-ndim:]


def _preprocessing(loaded: LoadedModel, axes: str) -> list[dict]:
    norm = loaded.normalization
    if norm.method == "meanstd":
        return [{"id": "zero_mean_unit_variance", "kwargs": {"axes": list(axes), "eps": EPS}}]
    if norm.method == "percentile":
        kwargs = {"axes": list(axes), "min_percentile": norm.lower, "max_percentile": norm.upper, "eps": EPS}
        return [{"id": "scale_range", "kwargs": kwargs}]
    return []


def _preprocess(x: np.ndarray, loaded: LoadedModel) -> np.ndarray:
    """What the declared preprocessing computes (per sample, over the spatial axes)."""
    norm = loaded.normalization
    spatial = tuple(range(2, x.ndim))
    if norm.method == "meanstd":
        mean, std = x.mean(axis=spatial, keepdims=True), x.std(axis=spatial, keepdims=True)
        return ((x - mean) / (std + EPS)).astype(np.float32)
    if norm.method == "percentile":
        lo = np.percentile(x, norm.lower, axis=spatial, keepdims=True)
        hi = np.percentile(x, norm.upper, axis=spatial, keepdims=True)
        return ((x - lo) / (hi - lo + EPS)).astype(np.float32)
    return x.astype(np.float32)


def _channel_names(loaded: LoadedModel) -> list[str]:
    n = loaded.config.out_channels
    return [loaded.target] if n == 1 else [f"{loaded.target}_{i}" for i in range(n)]


def _documentation(loaded: LoadedModel, opts: ExportOptions, checkpoint: Path) -> str:
    cfg = dataclasses.asdict(loaded.config)
    metrics = {k: v for k, v in loaded.metrics.items() if isinstance(v, (int, float))}
    lines = [
        f"# {opts.name}",
        "",
        opts.description or "",
        "",
        f"Trained with `zarrseg train` (zarrseg {loaded.zarrseg_version or 'unknown'}), exported from "
        f"`{checkpoint.name}` with zarrseg {__version__}.",
        "",
        "## Model",
        "",
        *[f"- {k}: {v}" for k, v in cfg.items()],
        f"- target: {loaded.target} (sigmoid probabilities; boundaries are high on membranes)",
        "",
        "## Input",
        "",
        f"One channel, {loaded.config.ndim}D, spatial sizes multiples of {list(loaded.config.divisor)}. "
        f"zarrseg normalises with `{loaded.normalization.method}` statistics of the whole volume; the "
        "declared preprocessing computes them per tile, which agrees for representative tiles.",
        "",
    ]
    voxel = loaded.raw.get("voxel_size")
    lines += [
        "## Validation",
        "",
        f"Trained at {voxel} µm per voxel ({axes_text(loaded.config.ndim)}); `zarrseg predict` rescales other "
        "images to it." if voxel else "The training voxel size was not recorded.",
        "",
        *([f"Last validation during training: {', '.join(f'{k} {v:.4g}' for k, v in metrics.items())}."] if metrics else []),
        "",
    ]
    return "\n".join(lines)


def axes_text(ndim: int) -> str:
    return ", ".join(_axes(ndim))


def _validate_with_bioimageio(rdf: Path) -> None:
    """Format validation by ``bioimageio.spec`` (files, hashes, axes, pre-/postprocessing).

    ``valid-format`` is the best status the spec library gives on its own; ``passed`` additionally
    needs bioimageio.core's test run (the test tensors through the weights), which the test suite
    does with zarrseg's own loader instead.
    """
    try:
        from bioimageio.spec import load_description
    except ImportError:
        log.info("export: bioimageio.spec not installed; skipping its validation")
        return
    summary = load_description(str(rdf)).validation_summary
    if summary.status == "failed":
        errors = [f"{'.'.join(map(str, e.loc))}: {e.msg}" for d in summary.details for e in d.errors]
        log.warning("export: bioimageio.spec validation failed for %s: %s", rdf, "; ".join(errors[:3]))
    else:
        log.info("export: bioimageio.spec validation: %s", summary.status)


def check_license(license_id: str) -> None:
    """An SPDX identifier the BioImage.IO spec accepts (its own list, when the spec library is
    installed): a typo would otherwise export a package that fails the spec's validation."""
    try:
        from bioimageio.spec._internal._generated_spdx_license_literals import LicenseId
    except ImportError:  # the list moved or the library is absent: the spec's validation still warns
        return
    known = set(typing.get_args(LicenseId))
    if known and license_id not in known:
        same_case = {k.lower(): k for k in known}.get(license_id.lower())
        hint = [same_case] if same_case else difflib.get_close_matches(license_id, sorted(known), n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"--license {license_id!r} is not an SPDX license identifier{extra}, e.g. MIT, "
                          "BSD-3-Clause, Apache-2.0, CC-BY-4.0")


def export_bioimageio(checkpoint: str | Path, out_dir: str | Path, opts: ExportOptions | None = None) -> Path:
    """Write the package folder ``out_dir`` atomically; return the path of its ``rdf.yaml``."""
    opts = dataclasses.replace(opts or ExportOptions())
    check_license(opts.license)
    checkpoint = Path(checkpoint)
    loaded = load_checkpoint(checkpoint)  # InputError for a missing / foreign / corrupt file
    cfg = loaded.config
    axes = _axes(cfg.ndim)
    div = list(cfg.divisor)
    shape = list(opts.test_shape or loaded.train_params.get("patch_shape") or [4 * d for d in div])
    if len(shape) != cfg.ndim or any(s <= 0 or s % d for s, d in zip(shape, div, strict=True)):
        raise ConfigError(f"export: test shape {shape} must have {cfg.ndim} positive multiples of {div}")
    opts.name = opts.name or f"zarrseg {loaded.target} U-Net ({cfg.ndim}D)"
    opts.description = opts.description or (
        f"{cfg.ndim}D {cfg.name} predicting {loaded.target} from one-channel microscopy, trained with zarrseg."
    )
    rng = np.random.default_rng(opts.seed)
    test_input = rng.normal(100.0, 20.0, size=(1, cfg.in_channels, *shape)).astype(np.float32)
    with torch.no_grad():
        logits = loaded.model(torch.from_numpy(_preprocess(test_input, loaded)))
        test_output = torch.sigmoid(logits).numpy().astype(np.float32)

    out_dir = Path(out_dir)
    with ome.atomic_output(out_dir) as tmp:
        tmp.mkdir(parents=True)
        files = {
            "torchscript": "weights_torchscript.pt",
            "state_dict": "weights.pt",
            "input": "test_input.npy",
            "output": "test_output.npy",
            "sample_input": "sample_input.tif",
            "sample_output": "sample_output.tif",
            "doc": "README.md",
        }
        export_torchscript(checkpoint, tmp / files["torchscript"], shape)
        torch.save(loaded.model.state_dict(), tmp / files["state_dict"])
        np.save(tmp / files["input"], test_input)
        np.save(tmp / files["output"], test_output)
        # for people (viewers): the first channel's spatial planes, never read as RGB
        tifffile.imwrite(tmp / files["sample_input"], test_input[0, 0], photometric="minisblack")
        tifffile.imwrite(tmp / files["sample_output"], test_output[0, 0], photometric="minisblack")
        (tmp / files["doc"]).write_text(_documentation(loaded, opts, checkpoint))
        sha = {k: file_sha256(tmp / v) for k, v in files.items()}
        torch_version = torch.__version__.split("+")[0]
        voxel = loaded.raw.get("voxel_size")  # the training images' µm per voxel: predict rescales to it
        scale = [{"scale": float(v), "unit": "micrometer"} for v in voxel[-cfg.ndim :]] if voxel else [{}] * cfg.ndim
        space_in = [
            {"type": "space", "id": a, "size": {"min": d, "step": d}, **sc}
            for a, d, sc in zip(axes, div, scale, strict=True)
        ]
        space_out = [
            {"type": "space", "id": a, "size": {"tensor_id": "raw", "axis_id": a}, **sc}
            for a, sc in zip(axes, scale, strict=True)
        ]
        rdf = {
            "type": "model",
            "format_version": FORMAT_VERSION,
            "name": opts.name,
            "description": opts.description,
            "authors": [{"name": a} for a in (opts.authors or ["zarrseg user"])],
            "cite": DEFAULT_CITE,
            "license": opts.license,
            "documentation": files["doc"],
            "tags": list(
                dict.fromkeys([f"unet{cfg.ndim}d", "pytorch", "zarrseg", loaded.target, *opts.tags])
            ),
            "timestamp": datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat(),
            "inputs": [
                {
                    "id": "raw",
                    "description": "raw intensities, one channel",
                    "axes": [{"type": "batch"}, {"type": "channel", "channel_names": ["raw"]}, *space_in],
                    "test_tensor": {"source": files["input"], "sha256": sha["input"]},
                    "sample_tensor": {"source": files["sample_input"], "sha256": sha["sample_input"]},
                    "data": {"type": "float32"},
                    "preprocessing": _preprocessing(loaded, axes),
                }
            ],
            "outputs": [
                {
                    "id": loaded.target,
                    "description": f"{loaded.target} probabilities",
                    "axes": [
                        {"type": "batch"},
                        {"type": "channel", "channel_names": _channel_names(loaded)},
                        *space_out,
                    ],
                    "test_tensor": {"source": files["output"], "sha256": sha["output"]},
                    "sample_tensor": {"source": files["sample_output"], "sha256": sha["sample_output"]},
                    "data": {"type": "float32", "range": [0.0, 1.0]},
                    "postprocessing": [{"id": "sigmoid"}],
                }
            ],
            "weights": {
                "pytorch_state_dict": {
                    "source": files["state_dict"],
                    "sha256": sha["state_dict"],
                    "architecture": {
                        "callable": "build_unet",
                        "import_from": "zarrseg.methods.unet.models",
                        "kwargs": dataclasses.asdict(cfg),
                    },
                    "pytorch_version": torch_version,
                },
                "torchscript": {
                    "source": files["torchscript"],
                    "sha256": sha["torchscript"],
                    "pytorch_version": torch_version,
                    "parent": "pytorch_state_dict",
                },
            },
            "config": {
                "zarrseg": {
                    "version": __version__,
                    "checkpoint": str(checkpoint),
                    "checkpoint_sha256": file_sha256(checkpoint),
                    "normalization": dataclasses.asdict(loaded.normalization),
                    "target": loaded.target,
                    "patch_shape": loaded.train_params.get("patch_shape"),
                }
            },
        }
        (tmp / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    _validate_with_bioimageio(out_dir / "rdf.yaml")
    log.info("export: %s -> %s", checkpoint, out_dir)
    return out_dir / "rdf.yaml"
