"""The ``finetune`` method: reconstruction fine-tuning of a DINO ViT (Zöngür thesis §3.4).

The last ``trainable_blocks`` transformer blocks (two in the thesis) are trained together with
an up-sampling decoder that maps the patch-token map (H/p x W/p) back to the input (H x W):
log2(p) blocks of ConvTranspose (stride 2) -> 1x1 conv -> BatchNorm -> activation, then a 1x1
conv to three channels, with an L1 reconstruction loss on the normalised input. The decoder
stays in ``last.pt`` (for resume); ``best.pt`` holds the adapted ViT for ``zarrseg features``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from itertools import count
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ...learn.checkpoint import vit_io
from ...learn.loop import Export, Method, Parts
from ...ssl.sampling import TileSampler
from ...ssl.vit import load_vit, patch_tokens
from .params import FinetuneParams

log = logging.getLogger(__name__)



def one_cycle(optimizer, lr: float, total: int):
    """One-cycle learning rate over ``total`` steps: a 5 % warm-up (at least 1.5 steps: OneCycleLR's
    warm-up ends at pct * total - 1, and one ending on the step it starts divided by zero, so 20
    steps crashed), then cosine annealing; a constant rate for runs too short for both phases."""
    if total < 3:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _step: 1.0)
    pct = min(0.5, max(0.05, 1.5 / total))
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total, pct_start=pct)

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


def vit_checkpoint(path: str | None) -> str | None:
    """A model folder (a dino run's output) means its best.pt."""
    if path is not None and Path(path).is_dir():
        return str(Path(path) / "best.pt")
    return path


class FinetuneMethod(Method):
    """L1 reconstruction of random tiles through the last ViT blocks and an up-sampling decoder."""

    select_best = False  # the final weights are the fine-tuned model

    def build(self) -> Parts:
        p = self.params
        vit, self.spec, self.source = load_vit(p.vit, checkpoint=vit_checkpoint(p.checkpoint), weights=p.weights)
        if p.sample_size % self.spec.patch_size:
            raise ConfigError(f"finetune.sample_size {p.sample_size} must be a multiple of {self.spec.patch_size}")
        self.sampler = TileSampler(p.images, p.preprocess, p.sample_size, seed=p.loop.seed)
        self.blocks = min(p.trainable_blocks, len(vit.blocks))
        self.n_trainable = freeze_but_last(vit, self.blocks)
        self.vit = vit
        self.model = self.ctx.ddp(ReconstructionModel(vit, self.spec.embed_dim, self.spec.patch_size, p.activation))
        trainable = [q for q in self.model.parameters() if q.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=p.lr, weight_decay=p.weight_decay)
        scheduler = one_cycle(optimizer, p.lr, self.total_steps())
        return Parts({"model": self.model}, optimizer, scheduler)

    def train_mode(self) -> None:
        self.model.train()
        for i, blk in enumerate(self.vit.blocks):  # frozen blocks stay deterministic (no dropout / drop-path)
            blk.train(i >= len(self.vit.blocks) - self.blocks)

    def describe(self) -> str:
        return f"(ViT from {self.source}, {self.n_trainable} trainable ViT weights, {len(self.sampler.sources)} images)"

    def batches(self, start: int):
        p, ctx = self.params, self.ctx
        for step in count(start):
            x = self.sampler.batch(p.batch_size, np.random.default_rng([p.loop.seed, step, ctx.rank]))
            if step % 2:
                x = x.flip(-1)
            yield torch.rot90(x, step % 4, dims=(-2, -1)).to(ctx.device)

    def step(self, batch, step: int) -> dict[str, torch.Tensor]:
        return {"loss": F.l1_loss(self.model(batch).float(), batch)}

    def export(self) -> Export:
        spec = dataclasses.asdict(self.spec)
        return Export(module=self.vit, model_config=spec, io=vit_io(spec), extra={"init": self.source})


def finetune(params: FinetuneParams, out_dir: str | Path, resume: bool | str = False) -> dict:
    """Fine-tune into ``out_dir`` (``best.pt``: the adapted ViT; ``last.pt`` also holds the decoder)."""
    from ...learn.loop import train

    return train("finetune", params, out_dir, resume)
