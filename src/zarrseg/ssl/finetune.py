"""Reconstruction fine-tuning of a DINO ViT (thesis §3.4).

The last ``trainable_blocks`` transformer blocks (two in the thesis) are trained together with
an up-sampling decoder that maps the patch-token map (H/p x W/p) back to the input (H x W):
log2(p) blocks of ConvTranspose (stride 2) -> 1x1 conv -> BatchNorm -> activation, then a 1x1
conv to three channels, with an L1 reconstruction loss on the normalised input. The decoder
is discarded afterwards; the adapted ViT is saved as ``checkpoint.pt`` for ``zarrseg features``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .. import ome
from ..errors import ConfigError
from ..params import to_dict
from .dino import over_budget, write_history
from .sampling import TileSampler
from .tiling import Preprocess
from .vit import ViTSpec, load_vit, patch_tokens, save_checkpoint, select_device

log = logging.getLogger(__name__)


@dataclass
class FinetuneParams:
    """Parameters of ``zarrseg finetune`` (config section ``finetune``)."""

    images: list[str] = field(default_factory=list)  # OME-Zarr training images
    vit: ViTSpec = field(default_factory=ViTSpec)  # used when the checkpoint does not carry an architecture
    preprocess: Preprocess = field(default_factory=Preprocess)
    weights: Literal["none", "hub"] = "none"
    checkpoint: str | None = None  # ViT to fine-tune (pretrain output, or a plain state dict)
    trainable_blocks: int = 2
    activation: Literal["relu", "gelu"] = "relu"
    sample_size: int = 320  # training tile side (pixels of the resized image)
    batch_size: int = 4
    steps: int = 2000
    lr: float = 1e-4
    weight_decay: float = 0.05
    max_minutes: float | None = None  # wall-time budget
    max_cpu_minutes: float | None = None  # CPU-time budget of the process (all threads)
    checkpoint_every: int = 500
    device: str = "auto"
    amp: bool = True
    num_threads: int = 0
    seed: int = 0

    def validate(self) -> None:
        if self.trainable_blocks < 0:
            raise ConfigError("finetune.trainable_blocks must be >= 0")
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError("finetune.steps and finetune.batch_size must be >= 1")


class UpBlock(nn.Sequential):
    """x2 up-sampling: ConvTranspose(stride 2) -> 1x1 conv -> BatchNorm -> activation (thesis Fig. 3.10)."""

    def __init__(self, c_in: int, c_out: int, activation: str = "relu"):
        super().__init__(
            nn.ConvTranspose2d(c_in, c_out, kernel_size=2, stride=2),
            nn.Conv2d(c_out, c_out, 1),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True) if activation == "relu" else nn.GELU(),
        )


class ReconstructionModel(nn.Module):
    """ViT -> patch-token map -> log2(p) UpBlocks -> 1x1 conv to 3 channels."""

    def __init__(self, vit: nn.Module, embed_dim: int, patch_size: int, activation: str = "relu"):
        super().__init__()
        n_up = int(round(math.log2(patch_size)))
        if 2**n_up != patch_size:
            raise ConfigError(f"finetune needs a power-of-two patch size, got {patch_size}")
        self.vit = vit
        chans = [embed_dim] + [max(16, embed_dim // 2 ** (i + 1)) for i in range(n_up)]
        self.decoder = nn.Sequential(
            *(UpBlock(chans[i], chans[i + 1], activation) for i in range(n_up)), nn.Conv2d(chans[-1], 3, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(patch_tokens(self.vit, x))


def freeze_but_last(vit: nn.Module, n_blocks: int) -> int:
    """Freeze the ViT except its last ``n_blocks`` blocks and final norm; return the trainable count."""
    for p in vit.parameters():
        p.requires_grad = False
    train = list(vit.blocks[len(vit.blocks) - n_blocks :]) if n_blocks else []
    train.append(vit.norm)
    for module in train:
        for p in module.parameters():
            p.requires_grad = True
    return sum(p.numel() for p in vit.parameters() if p.requires_grad)


def finetune(params: FinetuneParams, out_dir: str | Path) -> dict:
    """Fine-tune; write ``checkpoint.pt`` (ViT), ``decoder.pt``, ``history.csv``, ``params.yaml`` atomically."""
    import yaml

    if params.num_threads:
        torch.set_num_threads(params.num_threads)
    torch.manual_seed(params.seed)
    device = select_device(params.device)
    ckpt = params.checkpoint
    if ckpt is not None and Path(ckpt).is_dir():
        ckpt = str(Path(ckpt) / "checkpoint.pt")
    vit, spec, source = load_vit(params.vit, checkpoint=ckpt, weights=params.weights)
    if params.sample_size % spec.patch_size:
        raise ConfigError(
            f"finetune.sample_size {params.sample_size} must be a multiple of {spec.patch_size}"
        )
    sampler = TileSampler(params.images, params.preprocess, params.sample_size, seed=params.seed)
    n_train = freeze_but_last(vit, min(params.trainable_blocks, len(vit.blocks)))
    model = ReconstructionModel(vit, spec.embed_dim, spec.patch_size, params.activation).to(device)
    model.train()
    for i, blk in enumerate(vit.blocks):  # frozen blocks stay deterministic (no dropout / drop-path)
        blk.train(i >= len(vit.blocks) - params.trainable_blocks)
    log.info(
        "finetune: ViT from %s, %d trainable ViT weights, %d images, device %s",
        source,
        n_train,
        len(sampler.sources),
        device,
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(trainable, lr=params.lr, weight_decay=params.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        optim, max_lr=params.lr, total_steps=params.steps, pct_start=0.05
    )
    use_amp = params.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    history: list[dict] = []
    t0, c0 = time.perf_counter(), time.process_time()
    with ome.atomic_output(out_dir) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "params.yaml").write_text(yaml.safe_dump(to_dict(params), sort_keys=False))
        for step in range(params.steps):
            x = sampler.batch(params.batch_size)
            if step % 2:
                x = x.flip(-1)
            x = torch.rot90(x, step % 4, dims=(-2, -1)).to(device)
            with torch.autocast(device.type, enabled=use_amp):
                loss = F.l1_loss(model(x).float(), x)
            optim.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optim)
            scaler.update()
            sched.step()
            elapsed = time.perf_counter() - t0
            history.append(
                {
                    "step": step,
                    "loss": loss.item(),
                    "seconds": elapsed,
                    "cpu_seconds": time.process_time() - c0,
                }
            )
            if step % 10 == 0:
                log.info("finetune step %d/%d L1 %.4f (%.0f s)", step, params.steps, loss.item(), elapsed)
            last = over_budget(params.max_minutes, params.max_cpu_minutes, elapsed, time.process_time() - c0)
            if (step + 1) % params.checkpoint_every == 0 or last or step + 1 == params.steps:
                save_checkpoint(
                    tmp / "checkpoint.pt", vit, spec, steps=step + 1, method="finetune-l1", init=source
                )
                torch.save(
                    {k: v.detach().cpu() for k, v in model.decoder.state_dict().items()}, tmp / "decoder.pt"
                )
                write_history(tmp, history)
            if last:
                log.warning("finetune: time budget used up after %.1f min at step %d", elapsed / 60, step + 1)
                break
    return {
        "steps": len(history),
        "first_loss": history[0]["loss"],
        "last_loss": history[-1]["loss"],
        "seconds": time.perf_counter() - t0,
    }
