"""U-Net views of the one checkpoint format (``zarrseg.learn.checkpoint``).

``save_checkpoint`` / ``load_checkpoint`` keep the U-Net's vocabulary (``ModelConfig``, the
target kind, the training parameters) for export and tests; the file they write and read is
the common ``zarrseg-model`` format, so ``zarrseg predict`` treats a U-Net like any method.
Format-1 U-Net files (e.g. the shipped ``pretrained/ovule_boundaries_3d.pt``) still load.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...errors import ConfigError, InputError
from ...learn import checkpoint as ckpt
from ...normalize import Normalization
from ...params import from_dict
from .models import ModelConfig, UNet, build_model


@dataclass
class LoadedModel:
    model: UNet
    config: ModelConfig
    normalization: Normalization
    target: str = "boundaries"
    train_params: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    zarrseg_version: str = ""
    raw: dict = field(default_factory=dict)  # the whole checkpoint dict
    path: str = ""


def build_from_config(config: dict) -> UNet:
    """The registry's model builder: a U-Net from a checkpoint's model config."""
    return build_model(from_dict(ModelConfig, config, where="checkpoint.model_config"))


# ModelConfig fields that shape the weights (out_channels only shapes the output head)
ARCHITECTURE = ("name", "ndim", "in_channels", "f_maps", "depth", "norm", "num_groups", "layer_order", "pool_z")


def init_path(path: str | Path) -> Path:
    """A model folder (a training run's output) means its best.pt."""
    path = Path(path)
    return path / "best.pt" if path.is_dir() else path


def load_init(model: torch.nn.Module, path: str | Path, config: ModelConfig, where: str,
              methods: tuple[str, ...] | None = None) -> list[str]:
    """Start ``model`` (a U-Net, or any module with U-Net weight names) from a checkpoint's weights.

    Every tensor of the checkpoint's inference weights that ``model`` has under the same name
    is copied: a contrastive stage-1 checkpoint gives the encoder, a stage-2 or U-Net checkpoint
    the whole U-Net except an output head of another width. The U-Net architecture must be the
    same (``ARCHITECTURE``), so a mismatch is a clear error, not a silently skipped layer.
    ``methods``: the methods whose checkpoints are accepted (None: any). Returns the copied names.
    """
    path = init_path(path)
    payload = ckpt.read(path)
    if methods is not None and payload.get("method") not in methods:
        raise InputError(
            f"{where} must be a checkpoint of {' or '.join(methods)}, this one is of method "
            f"{payload.get('method')!r}", path)
    theirs = payload.get("model_config") or {}
    if "f_maps" not in theirs:  # a ViT (dino / finetune) has a depth too: comparing it named the wrong cause
        raise InputError(f"{where}: a {payload.get('method')!r} checkpoint holds no U-Net to start from "
                         "(a U-Net, contrastive_global or contrastive_local checkpoint does)", path)
    differ = [k for k in ARCHITECTURE if k in theirs and theirs[k] != getattr(config, k)]
    if differ:
        shown = ", ".join(f"{k} {theirs[k]!r} vs {getattr(config, k)!r}" for k in differ)
        raise ConfigError(f"{where}: the U-Net of {path} differs from this model ({shown})")
    own = model.state_dict()
    weights = {k: v for k, v in payload["state_dict"].items() if k in own and own[k].shape == v.shape}
    if not weights:
        raise InputError(f"{where}: the checkpoint holds no weights of this U-Net", path)
    model.load_state_dict(weights, strict=False)
    return sorted(weights)


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    config: ModelConfig,
    normalization: Normalization,
    target: str,
    train_params: dict,
    **extra: Any,
) -> None:
    """Write a U-Net in the common format (atomically: a crash never leaves a truncated file)."""
    from .method import model_io

    ckpt.save(
        path,
        method="unet",
        model_config=dataclasses.asdict(config),
        io=model_io(config, target, train_params.get("patch_shape")),
        module=model,
        normalization=normalization,
        params=train_params,
        **extra,
    )


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict of a U-Net, or a one-line ``InputError`` naming the file."""
    payload = ckpt.read(path)
    if payload.get("method") != "unet":
        raise InputError(f"not a U-Net checkpoint (method {payload.get('method')!r})", path)
    return payload


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the U-Net from a checkpoint, in eval mode on ``device``."""
    read_checkpoint(path)
    loaded = ckpt.load(path, device)
    norm = loaded.normalization or Normalization(method="meanstd")
    return LoadedModel(
        model=loaded.module,
        config=from_dict(ModelConfig, loaded.model_config, where="checkpoint.model_config"),
        normalization=norm,
        target=loaded.io.kind,
        train_params=loaded.params,
        metrics=loaded.metrics,
        zarrseg_version=loaded.zarrseg_version,
        raw=loaded.raw,
        path=str(path),
    )


def slim_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """A copy without the loop state: what prediction needs, a fraction of the size."""
    return ckpt.slim(src, dst)


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
