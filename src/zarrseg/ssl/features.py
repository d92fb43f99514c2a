"""ViT patch features of an OME-Zarr image, written blockwise into a Zarr feature volume.

The image is resized so its sides are multiples of the tile size, cut into tiles (320 px by
default), and each tile goes through the ViT independently (as in the thesis); the
last-layer patch tokens of tile (ty, tx) fill the token box (ty*T/p .. , tx*T/p ..) of the
feature volume. Blocks are groups of whole tiles, so a blockwise run writes exactly what a
whole-image run computes, and huge images stream through a bounded amount of memory.

Layout of ``FEATURES.zarr`` (a plain Zarr v2 group, not an image):
  features  (C, [Z,] H/p, W/p)  last-layer patch tokens (float16 by default), one chunk per tile
  colour    (n_colour, [Z,] H/p, W/p) float32 mean of the [0, 1]-scaled intensity of each patch
  attrs["zarrseg_features"]: image path and geometry, tile/patch size, model and weights.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
import zarr

from .. import ome, runs
from ..blocks import Block, BlockGrid
from ..errors import ConfigError, InputError
from ..learn.device import resolve_device
from ..parallel import DaskParams, map_blocks
from .tiling import ImageSource, Preprocess, from_tiles, to_tiles
from .vit import ViTSpec, cls_attention, load_vit, patch_tokens

log = logging.getLogger(__name__)

ATTR = "zarrseg_features"


@dataclass
class FeatureParams:
    """Parameters of ``zarrseg features`` (config section ``features``)."""

    vit: ViTSpec = field(default_factory=ViTSpec)
    preprocess: Preprocess = field(default_factory=Preprocess)
    weights: Literal["none", "hub"] = "none"  # 'hub': download timm's DINO ViT-S/8 weights (needs network)
    checkpoint: str | None = None  # local weights (zarrseg checkpoint, or a plain state dict)
    dtype: Literal["float16", "float32"] = "float16"
    tiles_per_block: int = 4  # block side in tiles (a block is tiles_per_block^2 tiles of one slice)
    batch_size: int = 8  # tiles per forward pass
    device: str = "auto"  # auto: CUDA when present (with AMP), else CPU
    amp: bool = True
    attention_tiles: int = 0  # write CLS attention PNGs (one per head) for the first N tiles
    dask: DaskParams = field(default_factory=lambda: DaskParams(n_workers=1))  # torch threads inside

    def validate(self) -> None:
        if self.preprocess.tile_size % self.vit.patch_size:
            raise ConfigError(
                f"features: tile_size {self.preprocess.tile_size} must be a multiple of "
                f"the patch size {self.vit.patch_size}"
            )
        if self.tiles_per_block < 1 or self.batch_size < 1:
            raise ConfigError("features: tiles_per_block and batch_size must be >= 1")


_MODELS: dict[tuple, tuple[torch.nn.Module, ViTSpec, str]] = {}


def get_model(params: FeatureParams) -> tuple[torch.nn.Module, ViTSpec, str]:
    """The ViT for these parameters, loaded once per process (blocks share it)."""
    key = (params.checkpoint, params.weights, tuple(asdict(params.vit).items()), params.device)
    if key not in _MODELS:
        model, spec, source = load_vit(
            params.vit, checkpoint=_resolve_checkpoint(params.checkpoint), weights=params.weights
        )
        _MODELS[key] = (model.to(resolve_device(params.device)), spec, source)
    return _MODELS[key]


_SOURCES: dict[tuple, ImageSource] = {}


def get_source(image: str | Path, prep: Preprocess) -> ImageSource:
    """The ImageSource of ``image``, opened once per process (its statistics need a pass over a sample)."""
    key = (str(image), json.dumps(asdict(prep)))
    if key not in _SOURCES:
        _SOURCES[key] = ImageSource(image, prep)
    return _SOURCES[key]


def _resolve_checkpoint(checkpoint: str | None) -> str | None:
    if checkpoint is not None and Path(checkpoint).is_dir():  # a dino/finetune model folder
        return str(Path(checkpoint) / "best.pt")
    return checkpoint


@torch.no_grad()
def embed_tiles(model: torch.nn.Module, tiles: np.ndarray, batch_size: int, amp: bool = True) -> np.ndarray:
    """(n, 3, T, T) normalised tiles -> (n, C, T/p, T/p) float32 patch tokens."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(tiles), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(tiles[i : i + batch_size])).to(device)
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            out.append(patch_tokens(model, x).float().cpu().numpy())
    return np.concatenate(out)


def patch_mean(x: np.ndarray, patch: int) -> np.ndarray:
    """(C, H, W) -> (C, H/p, W/p) mean over non-overlapping p x p patches."""
    c, h, w = x.shape
    return x.reshape(c, h // patch, patch, w // patch, patch).mean(axis=(2, 4))


class _FeatureBlock:
    """Computes and writes the features of one block of tiles (picklable for process schedulers)."""

    def __init__(self, params: FeatureParams, image: str, out: str):
        self.params, self.image, self.out = params, image, out

    def __call__(self, block: Block) -> dict:
        model, spec, _ = get_model(self.params)
        src = get_source(self.image, self.params.preprocess)
        group = zarr.open_group(self.out, mode="r+")
        feats, colour = group["features"], group["colour"]
        p, t = spec.patch_size, self.params.preprocess.tile_size
        tok = t // p
        z = block.inner[0].start
        ty0, tx0 = block.inner[1].start // tok, block.inner[2].start // tok
        nty, ntx = -(-block.shape[1] // tok), -(-block.shape[2] // tok)
        raw = src.read_resized(z, (slice(ty0 * t, (ty0 + nty) * t), slice(tx0 * t, (tx0 + ntx) * t)))
        tokens = embed_tiles(model, to_tiles(src.normalise(raw), t), self.params.batch_size, self.params.amp)
        fmap = from_tiles(tokens, (nty * tok, ntx * tok))
        index = (slice(None), *block.inner) if src.is_3d else (slice(None), *block.inner[1:])
        feats[index] = fmap.astype(feats.dtype)[:, None] if src.is_3d else fmap.astype(feats.dtype)
        cmap = patch_mean(raw, p)
        colour[index] = cmap[:, None] if src.is_3d else cmap
        return {"tiles": np.int64(nty * ntx)}


def extract_features(
    image: str | Path,
    out: str | Path,
    params: FeatureParams | None = None,
    attention_dir: str | Path | None = None,
) -> Path:
    """Write the feature volume of ``image`` to ``out`` (atomically, resumable); return ``out``."""
    params = params or FeatureParams()
    params.checkpoint = _resolve_checkpoint(params.checkpoint)
    src = get_source(image, params.preprocess)  # validates the input before any output exists
    model, spec, source = get_model(params)
    p, t = spec.patch_size, params.preprocess.tile_size
    if t % p:
        raise ConfigError(f"tile_size {t} is not a multiple of the checkpoint's patch size {p}")
    tok = t // p
    grid_yx = (src.resized_yx[0] // p, src.resized_yx[1] // p)
    vol_shape = (src.n_slices, *grid_yx)
    spatial = vol_shape if src.is_3d else grid_yx
    chunk_sp = (1, tok, tok) if src.is_3d else (tok, tok)
    meta = {
        "image": str(Path(image).resolve()),
        "image_shape_yx": list(src.shape_yx),
        "resized_yx": list(src.resized_yx),
        "n_slices": src.n_slices,
        "is_3d": src.is_3d,
        "patch_size": p,
        "tile_size": t,
        "weights": source,
        "vit": asdict(spec),
        "preprocess": asdict(params.preprocess),
        "image_axes": src.image.axes,
        "image_scale": list(src.image.scale),
        "n_colour": src.n_colour,
    }
    meta = json.loads(json.dumps(meta))
    t0 = time.perf_counter()
    with ome.atomic_output(out, resume=True) as tmp:
        done = tmp / ".done"
        group = zarr.open_group(str(tmp), mode="a", zarr_format=2)
        if group.attrs.get(ATTR) != meta or not done.exists():
            group = zarr.open_group(str(tmp), mode="w", zarr_format=2)
            ome.create_array(
                group, "features", (spec.embed_dim, *spatial), params.dtype, (spec.embed_dim, *chunk_sp)
            )
            ome.create_array(group, "colour", (src.n_colour, *spatial), "float32", (src.n_colour, *chunk_sp))
            group.attrs.update({ATTR: meta, "zarrseg": ome.provenance(stage="features")})
        grid = BlockGrid(vol_shape, (1, tok * params.tiles_per_block, tok * params.tiles_per_block))
        summaries = map_blocks(
            _FeatureBlock(params, str(image), str(tmp)),
            grid,
            name="features",
            dask_params=params.dask,
            done_dir=done,
        )
        if attention_dir is not None and params.attention_tiles:
            write_attention_pngs(src, model, attention_dir, params.attention_tiles)
        runs.remove(done)
    n_tiles = int(sum(s["tiles"] for s in summaries))
    dt = time.perf_counter() - t0
    log.info(
        "features: %d tiles of %d px in %.1f s (%.2f tiles/s), weights: %s",
        n_tiles,
        t,
        dt,
        n_tiles / dt,
        source,
    )
    return Path(out)


def open_features(path: str | Path) -> tuple[zarr.Group, dict]:
    """Open a feature volume written by ``extract_features``; InputError if it is not one."""
    path = Path(path)
    if not path.exists():
        raise InputError("does not exist", path)
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as err:
        raise InputError(f"cannot be opened as Zarr ({err})", path) from err
    meta = group.attrs.get(ATTR)
    if meta is None or "features" not in group:
        raise InputError("not a feature volume of 'zarrseg features' (no 'zarrseg_features' metadata)", path)
    return group, dict(meta)


def write_attention_pngs(
    src: ImageSource, model: torch.nn.Module, folder: str | Path, n_tiles: int
) -> list[Path]:
    """CLS attention of the last block, one PNG per head, for the first ``n_tiles`` tiles (+ the tile itself).

    Files: ``<folder>/z{z}_y{ty}_x{tx}_tile.png`` and ``..._head{h}.png`` at tile resolution.
    """
    import imageio.v3 as iio

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    t = src.prep.tile_size
    gy, gx = src.resized_yx[0] // t, src.resized_yx[1] // t
    written = []
    device = next(model.parameters()).device
    for k in range(min(n_tiles, src.n_slices * gy * gx)):
        z, rem = divmod(k, gy * gx)
        ty, tx = divmod(rem, gx)
        raw = src.read_resized(z, (slice(ty * t, (ty + 1) * t), slice(tx * t, (tx + 1) * t)))
        x = torch.from_numpy(src.normalise(raw)[None].astype(np.float32)).to(device)
        with torch.no_grad():
            attn = cls_attention(model, x)
            attn = F.interpolate(attn, size=(t, t), mode="nearest")[0].float().cpu().numpy()
        stem = f"z{z}_y{ty}_x{tx}"
        tile_img = (np.clip(raw.mean(0) if raw.shape[0] != 3 else raw.transpose(1, 2, 0), 0, 1) * 255).astype(
            np.uint8
        )
        iio.imwrite(folder / f"{stem}_tile.png", tile_img)
        written.append(folder / f"{stem}_tile.png")
        for h, a in enumerate(attn):
            a = (a - a.min()) / max(float(a.max() - a.min()), 1e-12)
            iio.imwrite(folder / f"{stem}_head{h}.png", (a * 255).astype(np.uint8))
            written.append(folder / f"{stem}_head{h}.png")
    log.info("features: %d attention PNGs in %s", len(written), folder)
    return written
