"""One checkpoint format for every learning method, and readers for the older ones.

A checkpoint is a plain ``torch.save`` dict, loadable with ``weights_only=True`` (no pickled
classes). It carries everything inference needs — method name, model config, the output
description (``ModelIO``: kind, channels, activation, dimensionality), normalisation, the
method's parameters and the zarrseg version — next to the weights of the module inference
runs (``state_dict``). ``last.pt`` additionally holds the loop state (``loop``: optimiser,
scheduler, scaler, RNG states, every trained module, step, method state) for exact resume;
``best.pt`` does not.

Older files still load: ``zarrseg-unet`` U-Net checkpoints (format 1, e.g. the shipped
``ovule_boundaries_3d.pt``) and ``zarrseg-vit`` ViT checkpoints are converted on reading.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from .. import __version__
from ..errors import InputError
from ..normalize import Normalization
from ..params import from_dict

FORMAT = "zarrseg-model"
FORMAT_VERSION = 2
RESUME_KEYS = ("loop",)


@dataclass
class ModelIO:
    """What a model takes and returns, as inference needs to know it."""

    kind: str = "boundaries"  # meaning of the output: boundaries, foreground, affinities, embeddings, ...
    channels: int = 1  # output channels
    activation: Literal["sigmoid", "softmax", "identity"] = "sigmoid"  # applied by inference to the logits
    ndim: int = 2  # spatial dimensions of the model input (a 2D model runs slice by slice over 3D)
    in_channels: int = 1
    divisor: list[int] = field(default_factory=lambda: [1, 1])  # tile shapes must be multiples of this
    tile: list[int] | None = None  # default tile shape (the training patch)
    halo: list[int] | None = None  # output voxels at each tile side the model declares unreliable (margin >= halo)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    module = getattr(module, "module", module)  # DDP / DataParallel
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def save(
    path: str | Path,
    *,
    method: str,
    model_config: dict,
    io: ModelIO,
    module: torch.nn.Module | None = None,
    state_dict: dict | None = None,
    normalization: Normalization | dict | None = None,
    params: dict | None = None,
    **extra: Any,
) -> Path:
    """Write atomically (temp file + rename): a crash never leaves a truncated checkpoint."""
    path = Path(path)
    if isinstance(normalization, Normalization):
        normalization = dataclasses.asdict(normalization)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "zarrseg_version": __version__,
        "method": method,
        "model_config": model_config,
        "io": io.to_dict(),
        "normalization": normalization,
        "params": params or {},
        "state_dict": state_dict if state_dict is not None else _state(module),
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def read(path: str | Path) -> dict:
    """The checkpoint dict in the current format, or a one-line ``InputError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError("is a folder, not a checkpoint file" if path.is_dir() else "checkpoint does not exist", path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for truncated/foreign files
        # its first line only: torch appends paragraphs of advice (weights_only=False) that do not
        # apply to a damaged file
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), "").split(". ")[0]
        raise InputError(f"not a readable checkpoint, damaged or not written by zarrseg "
                         f"({type(err).__name__}: {first[:200]})", path) from err
    if not isinstance(payload, dict):
        raise InputError(f"checkpoint must hold a dict, got {type(payload).__name__}", path)
    if payload.get("format") == FORMAT:
        if payload.get("format_version", 0) > FORMAT_VERSION:
            raise InputError(
                f"checkpoint format {payload['format_version']} is newer than this zarrseg reads", path
            )
        return payload
    if payload.get("format") == "zarrseg-unet" and "state_dict" in payload:
        return _from_unet_v1(payload)
    if payload.get("kind") == "zarrseg-vit":
        return _from_vit(payload)
    raise InputError("not a zarrseg checkpoint (written by 'zarrseg train')", path)


def _from_unet_v1(p: dict) -> dict:
    cfg = p["model_config"]
    target = p.get("target", "boundaries")
    depth, ndim = int(cfg.get("depth", 4)), int(cfg.get("ndim", 3))
    f = 2 ** (depth - 1)
    divisor = [1, f, f] if ndim == 3 and not cfg.get("pool_z", True) else [f] * ndim
    params = p.get("train_params", {})
    io = ModelIO(
        kind=target,
        channels=int(cfg.get("out_channels", 1)),
        activation="sigmoid",
        ndim=ndim,
        in_channels=int(cfg.get("in_channels", 1)),
        divisor=divisor,
        tile=params.get("patch_shape"),
    )
    skip = {"format", "format_version", "model_config", "target", "train_params", "state_dict", "normalization"}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "zarrseg_version": p.get("zarrseg_version", ""),
        "method": "unet",
        "model_config": cfg,
        "io": io.to_dict(),
        "normalization": p.get("normalization"),
        "params": params,
        "state_dict": p["state_dict"],
        **{k: v for k, v in p.items() if k not in skip},
    }


def _from_vit(p: dict) -> dict:
    spec = p["spec"]
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "zarrseg_version": p.get("zarrseg_version", ""),
        "method": p.get("method", "dino") if p.get("method") in ("dino", "finetune") else "dino",
        "model_config": spec,
        "io": vit_io(spec).to_dict(),
        "normalization": None,
        "params": {},
        "state_dict": p["model"],
        **{k: v for k, v in p.items() if k not in ("kind", "spec", "model", "method")},
    }


def vit_io(spec: dict) -> ModelIO:
    """A ViT's output: patch tokens (features), one token per patch of the input tile."""
    p = int(spec.get("patch_size", 8))
    return ModelIO(
        kind="features",
        channels=int(spec.get("embed_dim", 384)),
        activation="identity",
        ndim=2,
        in_channels=3,
        divisor=[p, p],
        tile=[int(spec.get("img_size", 320))] * 2,
    )


@dataclass
class Loaded:
    """A checkpoint's model rebuilt (eval mode) with everything inference needs."""

    module: torch.nn.Module
    method: str
    model_config: dict
    io: ModelIO
    normalization: Normalization | None
    params: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    zarrseg_version: str = ""
    voxel_size: list[float] | None = None  # µm per voxel of the training images, along the model's axes
    path: str = ""
    raw: dict = field(default_factory=dict, repr=False)
    # replaces ``normalization`` where a model declares its own input preprocessing (BioImage.IO
    # packages): a callable ``(x, volume stats, channel) -> x`` (``predict.preprocess.ChainPrep``)
    preprocessing: Any = None


def model_io(payload: dict) -> ModelIO:
    return from_dict(ModelIO, payload["io"], where="checkpoint.io")


def load(path: str | Path, device: str | torch.device = "cpu") -> Loaded:
    """Rebuild the inference module of any registered method from its checkpoint."""
    from .registry import get_method

    payload = read(path)
    spec = get_method(payload["method"], where=str(path))
    try:
        module = spec.model_builder()(payload["model_config"])
        missing, unexpected = module.load_state_dict(payload["state_dict"], strict=False)
        if missing:
            raise RuntimeError(f"{len(missing)} missing weights, e.g. {missing[0]!r}")
        io = model_io(payload)
        norm = payload.get("normalization")
        normalization = from_dict(Normalization, norm, where="checkpoint.normalization") if norm else None
    except InputError:
        raise
    except Exception as err:
        raise InputError(
            f"checkpoint does not match its model config ({' '.join(str(err).split())[:200]})", path
        ) from err
    module.to(device).eval()
    return Loaded(
        module=module,
        method=payload["method"],
        model_config=payload["model_config"],
        io=io,
        normalization=normalization,
        params=payload.get("params", {}),
        metrics=payload.get("metrics", {}),
        zarrseg_version=payload.get("zarrseg_version", ""),
        voxel_size=payload.get("voxel_size"),
        path=str(path),
        raw=payload,
    )


def slim(src: str | Path, dst: str | Path) -> Path:
    """A copy without the loop state: what inference needs, a fraction of the size."""
    payload = read(src)
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    torch.save({k: v for k, v in payload.items() if k not in RESUME_KEYS}, tmp)
    os.replace(tmp, dst)
    return dst
