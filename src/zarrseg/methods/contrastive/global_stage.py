"""Stage 1, global unsupervised contrastive learning (``contrastive_global``, Zwijghuizen §3.4.1).

SimCLR on crops: two augmented views of every crop of a batch pass the U-Net encoder and the
MLP head; NT-Xent (Eq. 3.1, temperature 0.5) pulls the two views of a crop together and pushes
the other crops away. Encoder *and* head are optimised (the reference code optimises only the
encoder and leaves the head at its random initialisation). ``best.pt`` holds encoder + head;
stage 2 and the U-Net load its encoder (``encoders.*``) by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...errors import ConfigError
from ...learn.loop import Export, Parts
from ...learn.params import LoopParams
from ..unet.models import ModelConfig, count_parameters
from .augment import ViewAugment, make_view
from .common import CropMethod, CropStageParams, pretrain_loop
from .losses import nt_xent
from .models import GlobalModel


@dataclass
class GlobalParams(CropStageParams):
    """Stage 1 (config section ``contrastive_global``); defaults: thesis Table 4.1 (GPU size)."""

    SECTION = "contrastive_global"

    model: ModelConfig = field(default_factory=lambda: ModelConfig(ndim=2, f_maps=64, depth=4))  # the U-Net
    projection_dim: int = 256  # output of the MLP head (GAP -> FC -> ReLU -> FC)
    temperature: float = 0.5  # NT-Xent temperature
    batch_size: int = 50  # crops per step (two views each)
    epochs: int | None = 50  # passes over the used crops (null: loop.steps steps)
    # stage 1 adds a translation or zoom before brightness / blur / noise
    augment: ViewAugment = field(default_factory=lambda: ViewAugment(translate=0.1, zoom=0.3))
    # steps, checkpoint cadence, budgets, device, AMP, seed (epochs set the length; steps is a cap)
    loop: LoopParams = field(default_factory=pretrain_loop)

    def validate(self) -> None:
        super().validate()
        if self.model.ndim != 2:
            raise ConfigError("contrastive_global.model.ndim must be 2 (crops are 2D)")
        if self.batch_size < 2:
            raise ConfigError("contrastive_global.batch_size must be >= 2 (the other crops are the negatives)")


class GlobalMethod(CropMethod):
    """NT-Xent between two views of every crop of a batch."""

    def build(self) -> Parts:
        p = self.params
        self.open_crops()
        self.model = self.ctx.ddp(GlobalModel(p.model, p.projection_dim))
        optimizer = torch.optim.Adam(self.model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
        return Parts({"model": self.model}, optimizer)

    def describe(self) -> str:
        return f"{super().describe()[:-1]}, {count_parameters(self.model)} parameters)"

    def step(self, batch, step: int) -> dict[str, torch.Tensor]:
        image, _mask = batch
        g = self.ctx.generator(step, salt=3)
        views = torch.cat([make_view(image, self.params.augment, g), make_view(image, self.params.augment, g)])
        z1, z2 = self.model(views).chunk(2)
        return {"loss": nt_xent(z1, z2, self.params.temperature)}

    def export(self) -> Export:
        model = self.model.module if hasattr(self.model, "module") else self.model
        return Export(
            module=self.model,
            model_config=model.model_config(),
            io=self.model_io(self.params.model, "embedding", self.params.projection_dim),
            normalization=self.normalization(),
        )
