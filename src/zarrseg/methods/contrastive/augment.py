"""View augmentations of the contrastive stages (Zwijghuizen §3.4.1-3.4.2), batched in torch.

Stage 1 makes each view with a random translation *or* zoom first, then brightness, Gaussian
blur and Gaussian *or* salt-and-pepper noise in a random order; stage 2 uses the last three
only (translation and zoom would move labelled pixels, and foreground is sparse). All random
numbers come from the step's generator, so a resumed run draws the same views.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .params import ViewAugment  # noqa: F401


def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def geometric(x: torch.Tensor, p: ViewAugment, g: torch.Generator) -> torch.Tensor:
    """A random translation or zoom of every view (reflection at the borders)."""
    n = x.shape[0]
    use_zoom = torch.rand(n, generator=g) < 0.5 if p.translate > 0 and p.zoom > 0 else torch.full((n,), p.zoom > 0)
    scale = torch.where(use_zoom, _uniform(g, n, 1.0 / (1.0 + p.zoom), 1.0), torch.ones(n))
    # zoom: a window anywhere inside the crop; translation: shift by up to translate x side
    room = torch.where(use_zoom, 1.0 - scale, torch.full((n,), 2.0 * p.translate))
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * room[:, None]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = scale, scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def brightness(x: torch.Tensor, p: ViewAugment, g: torch.Generator) -> torch.Tensor:
    return x + _uniform(g, x.shape[0], -p.brightness, p.brightness).to(x)[:, None, None, None]


def blur(x: torch.Tensor, p: ViewAugment, g: torch.Generator) -> torch.Tensor:
    """Separable Gaussian blur, one sigma per view (grouped convolution: one pass for the batch)."""
    n, c = x.shape[:2]
    sigma = _uniform(g, n, 0.1, max(p.blur_sigma, 0.1))
    radius = max(1, math.ceil(3 * float(sigma.max())))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (t[None] / sigma[:, None]) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).to(x).repeat_interleave(c, 0)  # (n c, k)
    flat = F.pad(x.reshape(1, n * c, *x.shape[2:]), (radius,) * 4, mode="reflect")
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=n * c)
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=n * c)
    return flat.reshape(x.shape)


def noise(x: torch.Tensor, p: ViewAugment, g: torch.Generator) -> torch.Tensor:
    """Gaussian noise or salt-and-pepper noise (each view one of the two, at a random strength)."""
    n = x.shape[0]
    gaussian = (torch.rand(n, generator=g) < 0.5).to(x.device)
    std = _uniform(g, n, 0.0, p.noise_std).to(x)[:, None, None, None]
    out_gauss = x + std * torch.randn(x.shape, generator=g).to(x)
    amount = _uniform(g, n, 0.0, p.salt_pepper)[:, None, None, None]
    u = torch.rand(x.shape, generator=g)
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    salted = torch.where((u < amount / 2).to(x.device), lo, x)
    salted = torch.where(((u >= amount / 2) & (u < amount)).to(x.device), hi, salted)
    return torch.where(gaussian[:, None, None, None], out_gauss, salted)


def make_view(x: torch.Tensor, p: ViewAugment, g: torch.Generator) -> torch.Tensor:
    """One augmented view of every crop of ``x`` (B, C, H, W)."""
    if p.translate > 0 or p.zoom > 0:
        x = geometric(x, p, g)
    for k in torch.randperm(3, generator=g).tolist():
        chosen = (torch.rand(x.shape[0], generator=g) < p.probability).to(x.device)[:, None, None, None]
        changed = (brightness, blur, noise)[k](x, p, g)
        x = torch.where(chosen, changed, x)
    return x
