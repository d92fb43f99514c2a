"""The ``wnet`` method's hooks: Eq. 9 on whole training images, reconstruction on images or patches.

Every step (one mini-batch of the paper's epochs) runs the encoder on each whole training image
(the segmentation losses always see whole images, §2.1) and adds, with the betas of Eq. 9:

* reconstruction: of each whole image ("Image"), of a batch of augmented patches of every size
  ("Patch", mean over the sizes), or nothing ("NoRec": the decoder is never used);
* the segmentation losses the type uses, on pixels ("Dense": soft N-cut with a bounded radius,
  similarity, continuity) or on the superpixel graph ("Sparse": Eq. 5-7), averaged over images.

Superpixels, their graph and the N-cut affinities depend on the image only and are computed
once in ``build``. The patches of step ``s`` are drawn from the generator (seed, s), so a
killed run resumes exactly. The exported model is the encoder (softmax over K channels).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import numpy as np
import torch

from ...errors import ConfigError
from ...learn.checkpoint import ModelIO
from ...learn.loop import Export, Method, Parts
from ...params import to_dict
from ...ssl.superpixels import superpixel_graph, superpixels
from . import losses as L
from .data import TrainingImage, check_patch_sizes, load_images, pad_to, per_step, sample_patches
from .model import WNet
from .params import WNetParams

log = logging.getLogger(__name__)

TERMS = ("rec", "cut", "sim", "con")


@dataclass
class ImageTerms:
    """One training image on the device, with what its segmentation losses need."""

    x: torch.Tensor  # (C, H, W)
    padded: torch.Tensor  # (C, H', W'): multiples of the U-Net's divisor
    ncut: L.NCutWeights | None = None  # dense N-cut affinities
    labels: torch.Tensor | None = None  # sparse: superpixel id per pixel, flat
    sizes: torch.Tensor | None = None
    weights: torch.Tensor | None = None  # sparse N-cut affinities (N, N)
    degree: torch.Tensor | None = None
    adjacency: torch.Tensor | None = None  # Eq. 8 (N, N), rows sum to 1
    n_superpixels: int = 0


def image_terms(item: TrainingImage, params: WNetParams, divisor: int, device: torch.device) -> ImageTerms:
    """The per-image tensors of the losses in force (built once; the image never changes)."""
    x = torch.from_numpy(item.x).to(device)
    out = ImageTerms(x=x, padded=pad_to(x, divisor))
    weights = params.weights()
    if params.graph == "dense":
        if weights["cut"]:
            nc = params.ncut
            out.ncut = L.NCutWeights(x, nc.radius, nc.sigma_colour, nc.sigma_space)
        return out
    if not (weights["cut"] or weights["sim"] or weights["con"]):
        return out
    labels = superpixels(np.clip(item.x, 0, 1), params.superpixels, where=item.name)
    graph = superpixel_graph(np.clip(item.x, 0, 1), labels)
    dist = graph.distances()
    out.n_superpixels = graph.n
    out.labels = torch.from_numpy(labels.ravel()).to(device)
    out.sizes = torch.from_numpy(graph.sizes).float().to(device)
    if weights["cut"]:
        w, d = L.ncut_graph(graph.edges, dist, graph.n, params.ncut.sigma_colour)
        out.weights, out.degree = w.to(device), d.to(device)
    if weights["con"]:
        out.adjacency = L.continuity_adjacency(graph.edges, dist, graph.n, params.tau).to(device)
    return out


class WNetMethod(Method):
    """A W-Net trained on one or a few whole images with the losses of Leng et al. (Eq. 9)."""

    select_best = False  # the paper trains a fixed number of epochs: best.pt = the final weights

    def build(self) -> Parts:
        p, ctx = self.params, self.ctx
        if ctx.world > 1:
            raise ConfigError("wnet trains on one image at a time on one device: set wnet.loop.multi_gpu: false")
        self.images = load_images(p)
        self.in_channels = int(self.images[0].x.shape[0])
        self.weights = p.weights()
        if p.reconstruction == "patch" and self.weights["rec"]:
            check_patch_sizes(self.images, p.patches.sizes)
        self.model = WNet(self.in_channels, p.model).to(ctx.device)
        self.divisor = 2 ** (p.model.depth - 1)
        self.terms = [image_terms(item, p, self.divisor, ctx.device) for item in self.images]
        self.patch_counts = per_step(p.patches.counts, p.batches_per_epoch)
        optimizer = torch.optim.Adam(self.model.parameters(), lr=p.lr)
        return Parts({"model": self.model}, optimizer)

    def total_steps(self) -> int:
        return self.params.steps

    def describe(self) -> str:
        p = self.params
        n_sp = [t.n_superpixels for t in self.terms if t.n_superpixels]
        graph = f", {min(n_sp)}-{max(n_sp)} superpixels" if n_sp else ""
        betas = ", ".join(f"beta_{k} {v:g}" for k, v in self.weights.items() if v)
        return (
            f"({p.model_type}, K={p.model.n_classes}, {len(self.images)} image(s) of {self.in_channels} "
            f"channel(s){graph}; {betas})"
        )

    def batches(self, start: int):
        """Per step: the augmented patches of every size (empty unless reconstruction is "patch")."""
        p, ctx = self.params, self.ctx
        for step in count(start):
            if p.reconstruction != "patch" or not self.weights["rec"]:
                yield []
                continue
            rng = np.random.default_rng([p.loop.seed, step, ctx.rank])
            yield [
                sample_patches(self.images, size, n, rng, p.patches.foreground).to(ctx.device)
                for size, n in zip(p.patches.sizes, self.patch_counts, strict=True)
            ]

    def step(self, batch: list[torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        p, wts = self.params, self.weights
        zero = torch.zeros((), device=self.ctx.device)
        sums = dict.fromkeys(TERMS, zero)
        decode_image = p.reconstruction == "image" and wts["rec"] > 0
        n_labels = zero
        for i, t in enumerate(self.terms):
            h, w = t.x.shape[-2:]
            if decode_image:
                z, rec = self.model(t.padded[None])
                sums["rec"] = sums["rec"] + L.reconstruction(rec[0, :, :h, :w], t.x)
            else:
                z = self.model.encoder(t.padded[None])
            # the losses in float32, outside autocast (sparse products have no half-precision kernels)
            with torch.autocast(self.ctx.device.type, enabled=False):
                z = z[0, :, :h, :w].float()
                f = torch.softmax(z, dim=0)
                for name, value in self._segmentation(t, z, f).items():
                    sums[name] = sums[name] + value
            if i == 0:
                n_labels = torch.tensor(float(z.detach().argmax(0).unique().numel()))
        n = len(self.terms)
        sums = {k: v / n for k, v in sums.items()}
        if batch:  # patch reconstruction: mean over the patch sizes
            rec = sum(L.reconstruction(self.model(x)[1], x) for x in batch) / len(batch)
            sums["rec"] = rec
        loss = sum(wts[k] * sums[k] for k in TERMS if wts[k])
        out = {"loss": loss, **{k: sums[k].detach() for k in TERMS if wts[k]}}
        out["n_labels"] = n_labels
        return out

    def _segmentation(self, t: ImageTerms, z: torch.Tensor, f: torch.Tensor) -> dict[str, torch.Tensor]:
        """The segmentation terms in force for one image (dense: on pixels; sparse: on superpixels)."""
        wts, out = self.weights, {}
        if self.params.graph == "dense":
            if wts["cut"]:
                out["cut"] = L.soft_ncut(f, t.ncut)
            if wts["sim"]:
                out["sim"] = L.similarity(z)
            if wts["con"]:
                out["con"] = L.continuity(f)
            return out
        if not (wts["cut"] or wts["sim"] or wts["con"]):
            return out
        f_hat = L.superpixel_means(f, t.labels, t.sizes)
        if wts["cut"]:
            out["cut"] = L.sparse_ncut(f_hat, t.weights, t.degree)
        if wts["sim"]:
            out["sim"] = L.sparse_similarity(f_hat)
        if wts["con"]:
            out["con"] = L.sparse_continuity(f_hat, t.adjacency)
        return out

    def export(self) -> Export:
        p = self.params
        h, w = self.terms[0].padded.shape[-2:]
        io = ModelIO(
            kind="soft_segmentation",
            channels=p.model.n_classes,
            activation="softmax",
            ndim=2,
            in_channels=self.in_channels,
            divisor=[self.divisor, self.divisor],
            tile=[int(h), int(w)],
        )
        return Export(
            module=self.calibrated_encoder(),
            model_config=self.model.encoder_dict(),
            io=io,
            normalization=p.normalization,
            params=to_dict(p),
            # the model reads every channel of its images: predict refuses images with another count
            extra={"input_channels": "all", "model_type": p.model_type},
        )


    @torch.no_grad()
    def calibrated_encoder(self) -> torch.nn.Module:
        """A copy of the encoder whose BatchNorm statistics are those of the whole training images.

        During training the encoder normalises each whole image with its own statistics (the
        segmentation losses see those); the running averages also mix in the patch batches and
        lag behind after few steps. Inference on whole images should see what the losses saw,
        so the exported copy gets the images' mean statistics (cumulative average, one pass in
        training mode). The trained module itself is untouched (resume stays exact).
        """
        encoder = copy.deepcopy(self.model.encoder)
        norms = [m for m in encoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return encoder
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the passes below
        encoder.train()
        for t in self.terms:
            encoder(t.padded[None])
        for m in norms:
            m.momentum = 0.1
        return encoder.eval()


def train(params: WNetParams, out_dir: str | Path, resume: bool | str = False) -> dict:
    """Train a W-Net (``zarrseg train --method wnet``)."""
    from ...learn.loop import train as train_method

    return train_method("wnet", params, out_dir, resume)
