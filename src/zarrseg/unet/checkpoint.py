"""Checkpoints that carry everything prediction needs: weights, model config, normalisation.

A checkpoint is a plain ``torch.save`` dict loadable with ``weights_only=True`` (no pickled
classes): the model config, the training parameters, the normalisation method, the target
kind and the zarrseg version travel with the weights, so ``zarrseg predict --checkpoint``
needs nothing else. Optimizer/scheduler/RNG states are included for ``zarrseg train --resume``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..errors import InputError
from ..normalize import Normalization
from ..params import from_dict
from .models import ModelConfig, UNet, build_model

log = logging.getLogger(__name__)

FORMAT = "zarrseg-unet"
FORMAT_VERSION = 1


@dataclass
class LoadedModel:
    model: UNet
    config: ModelConfig
    normalization: Normalization
    target: str = "boundaries"
    train_params: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    zarrseg_version: str = ""
    raw: dict = field(default_factory=dict)  # the whole checkpoint dict (resume)
    path: str = ""


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    config: ModelConfig,
    normalization: Normalization,
    target: str,
    train_params: dict,
    **extra: Any,
) -> None:
    """Write atomically (temp file + rename): a crash never leaves a truncated best.pt."""
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "zarrseg_version": __version__,
        "model_config": dataclasses.asdict(config),
        "normalization": dataclasses.asdict(normalization),
        "target": target,
        "train_params": train_params,
        "state_dict": state,
        **extra,
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)  # DDP / DataParallel


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict, or a one-line ``InputError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError("checkpoint does not exist", path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for truncated/foreign files
        raise InputError(f"not a readable checkpoint ({type(err).__name__}: {err})", path) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or "state_dict" not in payload:
        raise InputError("not a zarrseg U-Net checkpoint (written by 'zarrseg train')", path)
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise InputError(
            f"checkpoint format {payload['format_version']} is newer than this zarrseg reads", path
        )
    return payload


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the model from a checkpoint, in eval mode on ``device``."""
    payload = read_checkpoint(path)
    try:
        config = from_dict(ModelConfig, payload["model_config"], where="checkpoint.model_config")
        normalization = from_dict(Normalization, payload["normalization"], where="checkpoint.normalization")
        model = build_model(config)
        model.load_state_dict(payload["state_dict"])
    except Exception as err:
        raise InputError(
            f"checkpoint does not match its model config ({' '.join(str(err).split())[:200]})", path
        ) from err
    model.to(device).eval()
    return LoadedModel(
        model=model,
        config=config,
        normalization=normalization,
        target=payload.get("target", "boundaries"),
        train_params=payload.get("train_params", {}),
        metrics=payload.get("metrics", {}),
        zarrseg_version=payload.get("zarrseg_version", ""),
        raw=payload,
        path=str(path),
    )


RESUME_KEYS = ("optimizer", "scheduler", "scaler", "torch_rng")


def slim_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """A copy without the optimizer/scheduler/RNG state: what prediction needs, a third of the size."""
    payload = read_checkpoint(src)
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    torch.save({k: v for k, v in payload.items() if k not in RESUME_KEYS}, tmp)
    os.replace(tmp, dst)
    return dst


def export_torchscript(
    checkpoint: str | Path, out: str | Path, example_shape: list[int] | None = None
) -> Path:
    """TorchScript export (image in, logits out) for use outside zarrseg, e.g. a BioImage.IO package.

    Traced on an example tile (the training patch shape by default); the traced graph works for
    any tile shape that is a multiple of the model's divisor.
    """
    loaded = load_checkpoint(checkpoint)
    shape = example_shape or loaded.train_params.get("patch_shape") or [d * 4 for d in loaded.config.divisor]
    example = torch.zeros(1, loaded.config.in_channels, *shape)
    with torch.no_grad(), warnings.catch_warnings():
        # torch marks jit as deprecated in favour of torch.export, but TorchScript is what
        # BioImage.IO consumers load; the GroupNorm batch-size check is a constant in the trace
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        scripted = torch.jit.trace(loaded.model, example)
        out = Path(out)
        scripted.save(str(out))
    return out
