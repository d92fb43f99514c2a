"""Stage 1, global unsupervised contrastive learning (``contrastive_global``, Zwijghuizen §3.4.1).

SimCLR on crops: two augmented views of every crop of a batch pass the U-Net encoder and the
MLP head; NT-Xent (Eq. 3.1, temperature 0.5) pulls the two views of a crop together and pushes
the other crops away. Encoder *and* head are optimised (the reference code optimises only the
encoder and leaves the head at its random initialisation). ``best.pt`` holds encoder + head;
stage 2 and the U-Net load its encoder (``encoders.*``) by name.
"""

from __future__ import annotations

import torch

from ...learn.loop import Export, Parts
from ..unet.models import count_parameters
from .augment import make_view
from .common import CropMethod
from .losses import nt_xent
from .models import GlobalModel


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
