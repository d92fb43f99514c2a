"""DINO's pieces (Caron et al. 2021): projection head, multi-crop wrapper, loss, schedules, views.

A student and a teacher ViT, each with a projection head, see different crops of the same tile
(two large *global* crops, several small *local* crops); the student learns to match the
teacher's centred and sharpened output distribution on the global crops, and the teacher is an
exponential moving average of the student. timm provides the ViT; the DINO recipe itself
exists in no installed library, hence this module.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class DINOHead(nn.Module):
    """MLP -> L2-normalised bottleneck -> weight-normalised prototypes (as in DINO)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = nn.utils.parametrizations.weight_norm(
            nn.Linear(bottleneck_dim, out_dim, bias=False)
        )
        g = self.last_layer.parametrizations.weight.original0
        g.data.fill_(1.0)
        g.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


class MultiCrop(nn.Module):
    """Backbone + head applied to crops of different sizes (one forward per size)."""

    def __init__(self, backbone: nn.Module, head: DINOHead):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, crops: list[torch.Tensor]) -> torch.Tensor:
        out, i = [], 0
        while i < len(crops):  # consecutive crops of equal size share one forward
            j = i
            while j < len(crops) and crops[j].shape[-1] == crops[i].shape[-1]:
                j += 1
            out.append(
                self.backbone.forward_head(
                    self.backbone.forward_features(torch.cat(crops[i:j])), pre_logits=True
                )
            )
            i = j
        return self.head(torch.cat(out))


class DINOLoss(nn.Module):
    """Cross-entropy of student crops against the centred, sharpened teacher on the other global crops."""

    def __init__(self, out_dim: int, n_crops: int, student_temp: float, center_momentum: float):
        super().__init__()
        self.n_crops, self.student_temp, self.center_momentum = n_crops, student_temp, center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        s = (student / self.student_temp).chunk(self.n_crops)
        t = F.softmax((teacher - self.center) / teacher_temp, dim=-1).detach().chunk(2)
        total, n = 0.0, 0
        for iq, q in enumerate(t):
            for v in range(self.n_crops):
                if v == iq:
                    continue
                total = total + torch.sum(-q * F.log_softmax(s[v], dim=-1), dim=-1).mean()
                n += 1
        self.update_center(teacher)
        return total / n

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        self.center.mul_(self.center_momentum).add_(
            teacher.mean(0, keepdim=True), alpha=1 - self.center_momentum
        )


def cosine(
    step: int, total: int, start: float, end: float, warmup: int = 0, warmup_start: float = 0.0
) -> float:
    """Linear warm-up then cosine decay from ``start`` to ``end`` (DINO's schedules)."""
    if step < warmup:
        return warmup_start + (start - warmup_start) * step / max(1, warmup)
    t = (step - warmup) / max(1, total - warmup)
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * min(1.0, t)))


class Augment:
    """Multi-crop augmentation of normalised (3, H, W) tiles for microscopy (no colour jitter).

    Crops come from torchvision; flips and 90-degree rotations (microscopy has no 'up'),
    brightness/contrast jitter and blur make the views differ in what does not matter.
    """

    def __init__(self, p, seed: int = 0):
        from torchvision.transforms import v2

        self.v2 = v2
        self.p = p  # the method's parameters (crop sizes and scales, number of local crops)
        self.gen = torch.Generator().manual_seed(seed)
        self.global_crop = v2.RandomResizedCrop(p.global_crop_size, scale=p.global_scale, antialias=True)
        self.local_crop = v2.RandomResizedCrop(p.local_crop_size, scale=p.local_scale, antialias=True)
        self.blur = v2.GaussianBlur(kernel_size=9, sigma=(0.1, 2.0))

    def _rand(self) -> float:
        return float(torch.rand(1, generator=self.gen))

    def _view(self, x: torch.Tensor, crop, blur_p: float) -> torch.Tensor:
        x = crop(x)
        if self._rand() < 0.5:
            x = x.flip(-1)
        x = torch.rot90(x, int(self._rand() * 4), dims=(-2, -1))
        x = x * (0.6 + 0.8 * self._rand()) + (self._rand() - 0.5) * 0.8
        if self._rand() < blur_p:
            x = self.blur(x)
        return x

    def __call__(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Views of every tile; ``generator`` (a step's own) replaces the augmenter's for exact resume."""
        if generator is not None:
            self.gen = generator
        views: list[list[torch.Tensor]] = [[] for _ in range(2 + self.p.n_local_crops)]
        for x in batch:
            views[0].append(self._view(x, self.global_crop, 1.0))
            views[1].append(self._view(x, self.global_crop, 0.1))
            for k in range(self.p.n_local_crops):
                views[2 + k].append(self._view(x, self.local_crop, 0.5))
        return [torch.stack(v) for v in views]


def param_groups(model: nn.Module) -> list[dict]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if name.endswith(".bias") or param.ndim == 1 else decay).append(param)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
