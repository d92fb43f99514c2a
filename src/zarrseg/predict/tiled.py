"""Tiled model inference over Zarr with weighted blending, accumulated per output block.

Any registered method's dense model goes through here: the checkpoint's ``ModelIO`` says how
many channels the model takes and returns and which activation turns its logits into the
output (sigmoid boundaries / foreground / affinities, softmax soft cluster assignments,
identity embeddings).

Tiles lie on one global grid (stride = tile * (1 - overlap), the last tile flush with the
volume end), so the blended value of a voxel is the same whichever output block computes
it: blocks are independent, there are no seams between them, and memory is bounded by the
block size, never the volume. Each tile's prediction is weighted by a separable Gaussian or
cosine window whose outer ``margin`` (where zero padding corrupts a convolution's output) gets
zero weight, except on sides that touch the volume border, where whole-image prediction
sees the same padding. Hence, for a shift-equivariant model (BatchNorm in eval mode, no norm)
whose receptive field fits inside the margin, tiled prediction equals whole-image prediction.

When the image's voxel size differs from the model's (``rescale``), the tile plan lies on the
model's grid: each output block (image grid) reads, resamples and predicts the model voxels it
interpolates from, and resamples the blended prediction back onto its own voxels.

Input blocks are read, normalised and cut in a torch ``DataLoader`` (worker processes
prefetch the next blocks while the device runs the current one); tiles go to the device in
batches, under autocast (fp16) on CUDA.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from .. import ome
from ..blocks import Block, BlockGrid
from ..errors import ConfigError, InputError
from ..learn.checkpoint import Loaded, ModelIO
from ..learn.device import resolve_device
from ..normalize import Normalization, VolumeStats
from ..parallel import progress_bar
from ..runs import DoneMarkers
from .params import PredictParams
from .preprocess import NormalizationPrep
from .rescale import ResampledSource, Resampling, decide
from .runstate import mark_started, run_stats

log = logging.getLogger(__name__)


def tile_starts(size: int, tile: int, stride: int) -> list[int]:
    """Starts of tiles covering ``[0, size)``: multiples of ``stride``, the last flush with the end."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride))
    if not starts or starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


def window_1d(n: int, kind: str, margin_lo: int, margin_hi: int) -> np.ndarray:
    """Blending window of length ``n``: zero on the margins, Gaussian (sigma n/8) or Hann inside."""
    x = np.arange(n, dtype=np.float64) + 0.5
    if kind == "gaussian":
        w = np.exp(-0.5 * ((x - n / 2) / (n / 8)) ** 2)
    elif kind == "cosine":
        w = 0.5 - 0.5 * np.cos(2 * np.pi * x / n)
    else:
        raise ConfigError(f"predict.blend must be gaussian or cosine, got {kind!r}")
    w = np.maximum(w, 1e-6)  # strictly positive: border voxels covered by one tile still normalise
    w[:margin_lo] = 0.0
    w[n - margin_hi :] = 0.0
    return w


@dataclass
class TilePlan:
    """The global tile grid of a volume and each tile's weight window."""

    shape: tuple[int, ...]
    tile: tuple[int, ...]  # may exceed ``shape`` on small axes (the read is padded)
    stride: tuple[int, ...]
    margin: tuple[int, ...]
    blend: str = "gaussian"
    _windows: dict = field(default_factory=dict, repr=False)

    @classmethod
    def create(cls, shape, tile, overlap: float, margin: float, blend: str, cfg) -> TilePlan:
        """The plan for a model described by ``cfg`` (anything with ``ndim`` and ``divisor``: a ``ModelIO``)."""
        shape = tuple(int(s) for s in shape)
        div = tuple(cfg.divisor)
        tile = list(tile)
        if cfg.ndim == 2 and len(shape) == 3:  # a 2D model over a stack: tiles one slice thick
            div, tile = (1, *div), [1, *tile[-2:]]
        tile_in = tuple(int(t) for t in tile)[-len(shape) :]
        if len(tile_in) != len(shape):
            raise ConfigError(f"predict.tile_shape {list(tile)} does not fit a {len(shape)}D image")
        # never larger than the volume (rounded up to the divisor), always a multiple of the divisor
        tile_eff = tuple(
            int(math.ceil(min(t, s) / d) * d) for t, s, d in zip(tile_in, shape, div, strict=True)
        )
        stride = tuple(
            max(d, int(round(t * (1 - overlap) / d)) * d) for t, d in zip(tile_eff, div, strict=True)
        )
        stride = tuple(min(s, t) for s, t in zip(stride, tile_eff, strict=True))
        # a model that declares a halo (unreliable output voxels at each tile side, BioImage.IO
        # packages) gets at least that margin: the stride shrinks until the overlap holds two halos
        halo = tuple(getattr(cfg, "halo", None) or ())
        halo = (0,) * (len(shape) - len(halo)) + halo[-len(shape) :]
        for axis, (t, s, d, h, n) in enumerate(zip(tile_eff, stride, div, halo, shape, strict=True)):
            if h and t < n and t - s < 2 * h:
                if t - 2 * h < d:
                    raise ConfigError(
                        f"predict.tile_shape {list(tile_eff)} is too small for the model's halo {list(halo)} "
                        f"(axis {axis} needs at least {2 * h + d})"
                    )
                stride = stride[:axis] + ((t - 2 * h) // d * d,) + stride[axis + 1 :]
        # zero-weight margin, at most half the overlap so every voxel keeps a tile with weight > 0
        marg = tuple(
            max(h, min(int(margin * t), (t - s) // 2)) if t < n else min(int(margin * t), (t - s) // 2)
            for t, s, h, n in zip(tile_eff, stride, halo, shape, strict=True)
        )
        return cls(shape, tile_eff, stride, marg, blend)

    @cached_property
    def starts(self) -> list[list[int]]:
        return [tile_starts(s, t, st) for s, t, st in zip(self.shape, self.tile, self.stride, strict=True)]

    def n_tiles(self) -> int:
        return int(np.prod([len(s) for s in self.starts]))

    def all_tiles(self) -> list[tuple[int, ...]]:
        return list(itertools.product(*self.starts))

    def _valid(self, axis: int, start: int) -> tuple[int, int]:
        """Global range where a tile starting at ``start`` has weight > 0 along ``axis``."""
        t, m, size = self.tile[axis], self.margin[axis], self.shape[axis]
        lo = start if start == 0 else start + m
        hi = min(size, start + t) if start + t >= size else start + t - m
        return lo, hi

    def tiles_for(self, box: tuple[slice, ...]) -> list[tuple[int, ...]]:
        """Tiles with non-zero weight inside ``box``."""
        per_axis = []
        for axis, sl in enumerate(box):
            keep = []
            for s in self.starts[axis]:
                lo, hi = self._valid(axis, s)
                if lo < sl.stop and hi > sl.start:
                    keep.append(s)
            per_axis.append(keep)
        return list(itertools.product(*per_axis))

    def weight(self, start: tuple[int, ...]) -> np.ndarray:
        """The nd window of the tile at ``start`` (margins kept where the tile touches the border)."""
        key = tuple((s == 0, s + t >= n) for s, t, n in zip(start, self.tile, self.shape, strict=True))
        if key not in self._windows:
            ws = [
                window_1d(t, self.blend, 0 if lo else m, 0 if hi else m)
                for t, m, (lo, hi) in zip(self.tile, self.margin, key, strict=True)
            ]
            w = ws[0]
            for v in ws[1:]:
                w = np.multiply.outer(w, v)
            self._windows[key] = w.astype(np.float32)
        return self._windows[key]

    def read_box(self, tiles: list[tuple[int, ...]]) -> tuple[slice, ...]:
        """The union of ``tiles`` (may extend past the volume end on axes smaller than the tile)."""
        return tuple(
            slice(min(t[a] for t in tiles), max(t[a] for t in tiles) + self.tile[a])
            for a in range(len(self.shape))
        )


class ChannelViews:
    """The model's input channels of an image as one array-like: ``[box]`` -> (C, *box), preprocessed.

    ``prep(x, stats, channel)`` normalises one channel with its volume statistics
    (``preprocess.NormalizationPrep`` / ``ChainPrep``).
    """

    def __init__(self, views: list[ome.SpatialView], stats: list[VolumeStats], prep):
        self.views, self.stats, self.prep = views, stats, prep
        self.shape = views[0].shape

    def __getitem__(self, box: tuple[slice, ...]) -> np.ndarray:
        return np.stack([self.prep(v[box], st, c) for c, (v, st) in enumerate(zip(self.views, self.stats, strict=True))])


class _Leading:
    """An in-memory (C, *spatial) array indexed by spatial boxes (the shape of ``ChannelViews``)."""

    def __init__(self, x: np.ndarray):
        self.x = x

    def __getitem__(self, box: tuple[slice, ...]) -> np.ndarray:
        return self.x[(slice(None), *box)]


class BlockTiles(torch.utils.data.Dataset):
    """One item per output block: the normalised input (C, *box) covering all of its tiles.

    With ``resampling`` the blocks lie on the image grid and everything else (source, plan,
    tiles) on the model grid: a block's tiles are those of the model voxels it interpolates from.
    """

    def __init__(self, source, blocks: list[Block], plan: TilePlan, resampling: Resampling | None = None):
        self.source, self.blocks, self.plan, self.resampling = source, blocks, plan, resampling

    def __len__(self) -> int:
        return len(self.blocks)

    def region(self, block: Block) -> Block:
        """The block on the plan's grid: itself, or the model voxels its image voxels come from."""
        if self.resampling is None:
            return block
        box = self.resampling.model_box(block.inner)
        return Block(block.id, block.position, box, box)

    def __getitem__(self, index: int) -> dict:
        block = self.blocks[index]
        tiles = self.plan.tiles_for(self.region(block).inner)
        box = self.plan.read_box(tiles)
        data = read_padded(self.source, box, self.plan.shape)
        return {
            "index": index,
            "data": data,
            "origin": np.array([b.start for b in box]),
            "tiles": np.array(tiles, dtype=np.int64),
        }


def read_padded(source, box: tuple[slice, ...], shape: tuple[int, ...], transform=None) -> np.ndarray:
    """``source[box]`` as float32, padded by reflection where ``box`` extends past the volume end.

    A source may return leading channel axes in front of the spatial ``box`` (``ChannelViews``).
    """
    clipped = tuple(slice(b.start, min(b.stop, n)) for b, n in zip(box, shape, strict=True))
    data = np.asarray(source[clipped])
    data = transform(data) if transform is not None else data
    lead = data.ndim - len(box)
    pad = [(0, 0)] * lead + [(0, b.stop - c.stop) for b, c in zip(box, clipped, strict=True)]
    if any(p[1] for p in pad):
        fits = all(p[1] < s for p, s in zip(pad, data.shape, strict=True))
        data = np.pad(data, pad, mode="reflect" if fits else "symmetric")
    return np.ascontiguousarray(data, dtype=np.float32)


def _identity(item):
    return item


ACTIVATIONS = {
    "sigmoid": torch.sigmoid,
    "softmax": lambda y: torch.softmax(y, dim=1),
    "identity": lambda y: y,
}


class TiledPredictor:
    """Runs a model over tiles of one block at a time and blends them into the block."""

    def __init__(
        self,
        model: torch.nn.Module,
        io: ModelIO,
        plan: TilePlan,
        device: torch.device,
        batch_size: int,
        amp: bool,
    ):
        self.model = model.to(device).eval()
        self.channels = io.channels
        self.activation = ACTIVATIONS[io.activation]
        self.slicewise = io.ndim == len(plan.shape) - 1  # a 2D model over a stack
        self.plan, self.device, self.batch_size = plan, device, batch_size
        self.amp = amp and device.type == "cuda"
        self.forward_seconds = 0.0
        self.n_tiles = 0
        self._weights: dict = {}

    @torch.inference_mode()
    def forward(self, batch: np.ndarray) -> torch.Tensor:
        """Activated outputs of a batch of (B, C, *tile) tiles, left on the device (blending happens there too)."""
        t0 = time.perf_counter()
        x = torch.from_numpy(batch).to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            if self.slicewise:  # (B, C, 1, H, W) -> 2D model -> back
                y = self.activation(self.model(x[:, :, 0]).float())[:, :, None]
            else:
                y = self.activation(self.model(x).float())
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.forward_seconds += time.perf_counter() - t0
        self.n_tiles += len(batch)
        return y

    def _weight(self, start: tuple[int, ...]) -> torch.Tensor:
        key = tuple(
            (s == 0, s + t >= n) for s, t, n in zip(start, self.plan.tile, self.plan.shape, strict=True)
        )
        if key not in self._weights:
            self._weights[key] = torch.from_numpy(self.plan.weight(start)).to(self.device)
        return self._weights[key]

    @torch.inference_mode()
    def predict_block(self, block: Block, item: dict) -> np.ndarray:
        """Blend every tile of ``item`` into ``block``: sum(w * p) / sum(w), accumulated on the device."""
        data, origin, tiles = item["data"], np.asarray(item["origin"]), np.asarray(item["tiles"])
        acc = torch.zeros((self.channels, *block.shape), dtype=torch.float32, device=self.device)
        wsum = torch.zeros(block.shape, dtype=torch.float32, device=self.device)
        tile = self.plan.tile
        for i in range(0, len(tiles), self.batch_size):
            chunk = tiles[i : i + self.batch_size]
            batch = np.stack(
                [
                    data[(slice(None), *(slice(s - o, s - o + t) for s, o, t in zip(start, origin, tile, strict=True)))]
                    for start in chunk
                ]
            )
            preds = self.forward(batch)
            for start, pred in zip(chunk, preds, strict=True):
                start = tuple(int(s) for s in start)
                tsl, bsl = [], []
                for s, t, b in zip(start, tile, block.inner, strict=True):
                    lo, hi = max(s, b.start), min(s + t, b.stop)
                    tsl.append(slice(lo - s, hi - s))
                    bsl.append(slice(lo - b.start, hi - b.start))
                tsl, bsl = tuple(tsl), tuple(bsl)
                wt = self._weight(start)[tsl]
                acc[(slice(None), *bsl)] += pred[(slice(None), *tsl)] * wt
                wsum[bsl] += wt
        if not bool((wsum > 0).all()):  # a planning bug, never user input
            raise RuntimeError(f"block {block.id}: {int((wsum <= 0).sum())} voxels not covered by any tile")
        return (acc / wsum).cpu().numpy()


def predict_array(
    model: torch.nn.Module,
    x: np.ndarray,
    io: ModelIO,
    tile,
    *,
    overlap: float = 0.5,
    margin: float = 0.125,
    blend: str = "gaussian",
    device: torch.device | None = None,
    batch_size: int = 4,
    amp: bool = False,
) -> np.ndarray:
    """Tiled, blended prediction of a normalised in-memory array (validation crops); (C, *x.shape).

    ``x`` holds the spatial axes only (one input channel) or, for models with several input
    channels, a leading channel axis.
    """
    x = x[None] if io.in_channels == 1 or x.ndim == io.ndim else x
    spatial = x.shape[1:]
    plan = TilePlan.create(spatial, tile, overlap, margin, blend, io)
    full = tuple(slice(0, n) for n in spatial)
    block = Block(0, (0,) * len(spatial), full, full)
    tiles = plan.tiles_for(full)
    box = plan.read_box(tiles)
    item = {
        "data": read_padded(_Leading(x), box, spatial),
        "origin": np.array([b.start for b in box]),
        "tiles": np.array(tiles, dtype=np.int64),
    }
    runner = TiledPredictor(model, io, plan, device or torch.device("cpu"), batch_size, amp)
    return runner.predict_block(block, item)


def default_block_shape(plan: TilePlan) -> list[int]:
    """About 8 strides per axis: bounded memory, and few tiles computed twice at block faces."""
    return [min(n, 8 * s) for n, s in zip(plan.shape, plan.stride, strict=True)]


def _input_views(image: ome.Image, params: PredictParams, loaded: Loaded) -> list[ome.SpatialView]:
    """The spatial views of the channels the model takes (``predict.channel`` onwards).

    A model that learnt from every channel of its images (checkpoint ``input_channels: all``,
    e.g. a W-Net on RGB) takes images with exactly that many channels: a greyscale model is not
    silently fed the red channel of an RGB image, nor an RGB model a stack of channels.
    """
    io = loaded.io
    n_channels = dict(zip(image.axes, image.shape, strict=True)).get("c", 1)
    if loaded.raw.get("input_channels") == "all" and n_channels != io.in_channels:
        raise InputError(
            f"the {loaded.method} model was trained on {io.in_channels}-channel images but this image has "
            f"{n_channels} channel(s){' (RGB?)' if n_channels == 3 else ''}: train a model on such images",
            image.path,
        )
    if params.channel + io.in_channels > n_channels:
        raise InputError(
            f"the model takes {io.in_channels} channel(s) from channel {params.channel}, "
            f"but the image has {n_channels}",
            image.path,
        )
    return [
        ome.SpatialView.of(image, channel=params.channel + c, timepoint=params.timepoint)
        for c in range(io.in_channels)
    ]


def predict_model(
    image: ome.Image,
    out_path: Path,
    params: PredictParams,
    loaded: Loaded,
    *,
    work: Path | None = None,
    resume: bool = False,
    fingerprint: dict | None = None,
) -> dict:
    """Write the blended prediction of a trained model over ``image`` to the OME-Zarr at ``out_path``.

    With ``work`` (a folder inside the partial output) each finished block leaves a done marker
    there (``runs.DoneMarkers``, as ``map_blocks`` does); ``resume`` reopens the existing
    output and predicts only the blocks without one. The loop is not ``map_blocks`` because one
    device consumes blocks in order while DataLoader workers prefetch the next ones.
    """
    io = loaded.io
    prep = loaded.preprocessing or NormalizationPrep(loaded.normalization or Normalization(method="none"))
    views = _input_views(image, params, loaded)
    if params.output == "argmax" and io.channels < 2:
        raise ConfigError(f"predict.output argmax needs a model with several output channels, got {io.channels}")
    view = views[0]
    stats = channel_stats(work if resume else None, views, prep.stats_normalization, params.dask, source=image.path)
    resampling, rescale_record = decide(image, view.shape, loaded.voxel_size, params.rescale, io.kind)
    grid_shape = resampling.model_shape if resampling else view.shape  # the plan's (model) grid
    tile = params.tile_shape or io.tile or [64] * view.ndim
    plan = TilePlan.create(grid_shape, tile, params.overlap, params.margin, params.blend, io)
    if hasattr(loaded.module, "check_tile"):  # models with fixed input sizes (BioImage.IO packages)
        loaded.module.check_tile(plan.tile)
    device = resolve_device(params.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if params.block_shape:
        block_shape = list(params.block_shape)[-view.ndim :]
    else:
        block_shape = default_block_shape(plan)
        block_shape = resampling.image_blocks(block_shape) if resampling else block_shape
    grid = BlockGrid(view.shape, block_shape)
    blocks = list(grid)
    if resume:
        arr = ome.open_image(out_path, mode="r+").data
    else:
        arr = _create_output(out_path, image, view, params, loaded, plan, stats, prep, rescale_record)
        if work is not None and fingerprint is not None:
            mark_started(out_path, fingerprint, stats)
    markers = DoneMarkers(None if work is None else work / "done")
    todo = [b for b in blocks if markers.load(b.id) is None]
    if len(todo) < len(blocks):
        log.info("predict: %d of %d blocks already done, resuming", len(blocks) - len(todo), len(blocks))
    source = ChannelViews(views, stats, prep)
    dataset = BlockTiles(ResampledSource(source, resampling) if resampling else source, todo, plan, resampling)
    auto_workers = 2 if device.type == "cuda" else 0
    workers = (auto_workers if params.num_workers is None else params.num_workers) if len(todo) > 1 else 0
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        collate_fn=_identity,
        prefetch_factor=2 if workers else None,
        pin_memory=device.type == "cuda",
    )
    runner = TiledPredictor(loaded.module, io, plan, device, params.batch_size, params.amp)
    log.info(
        "predict %s (%s, %s): %d blocks of %s, %d tiles of %s (stride %s, margin %s) on %s",
        loaded.method,
        io.kind,
        io.activation,
        len(blocks),
        block_shape,
        plan.n_tiles(),
        list(plan.tile),
        list(plan.stride),
        list(plan.margin),
        device,
    )
    t0 = time.perf_counter()
    with progress_bar(len(todo), f"predict {loaded.method}") as bar:
        for item in loader:
            block = todo[int(item["index"])]
            n_before = runner.n_tiles
            region = dataset.region(block)
            out = runner.predict_block(region, item)
            if resampling is not None:  # blended on the model grid, interpolated onto the block's voxels
                out = resampling.to_image(out, region.inner, block.inner)
            if params.output == "argmax":
                arr[block.inner] = (out.argmax(axis=0) + 1).astype(arr.dtype)
            elif io.channels == 1:
                arr[block.inner] = out[0].astype(arr.dtype)
            else:
                arr[(slice(None), *block.inner)] = out.astype(arr.dtype)
            markers.save(block.id, {"tiles": runner.n_tiles - n_before})
            bar.update(1)
    seconds = time.perf_counter() - t0
    voxels = int(np.prod(view.shape))
    log.info(
        "predict: %d tile forwards in %.1f s (%.1f tiles/s, %.3g voxels/s; %.1f s in forward)",
        runner.n_tiles,
        seconds,
        runner.n_tiles / max(seconds, 1e-9),
        voxels / max(seconds, 1e-9),
        runner.forward_seconds,
    )
    return {
        "blocks": len(blocks),
        "computed_blocks": len(todo),
        "tiles": runner.n_tiles,
        "unique_tiles": plan.n_tiles(),
        "loop_seconds": seconds,
        "forward_seconds": runner.forward_seconds,
        "voxels": voxels,
        "stats": stats[0].to_dict(),
        "rescale": rescale_record,
    }


def channel_stats(work: Path | None, views, norm: Normalization, dask_params, source=None) -> list[VolumeStats]:
    """Per-channel volume statistics (one channel: exactly ``run_stats``)."""
    if len(views) == 1:
        return [run_stats(work, views[0], norm, dask_params, source)]
    return [run_stats(None, v, norm, dask_params, source) for v in views]


def _create_output(out_path, image, view, params, loaded: Loaded, plan, stats, prep, rescale_record):
    io = loaded.io
    axes = view.spatial_axes
    single = io.channels == 1 or params.output == "argmax"
    out_shape = view.shape if single else (io.channels, *view.shape)
    out_axes = axes if single else "c" + axes
    scale = image.spatial_scale if single else (1.0, *image.spatial_scale)
    shift = image.spatial_translation if single else (0.0, *image.spatial_translation)
    return ome.create_image(
        out_path,
        shape=out_shape,
        dtype="uint16" if params.output == "argmax" else params.dtype,
        is_label=params.output == "argmax",
        axes=out_axes,
        scale=scale,
        translation=shift,
        chunks=ome.chunk_shape(out_axes, out_shape, params.chunks),
        compression=params.compression,
        name=io.kind,
        attrs={
            "stage": "predict",
            "method": loaded.method,
            "source": str(image.path),
            "target": io.kind,
            "activation": io.activation,
            "output": params.output,
            "checkpoint": loaded.path,
            "checkpoint_zarrseg_version": loaded.zarrseg_version,
            "preprocessing": prep.describe(),
            "rescale": rescale_record,  # what was done about the model's and the image's voxel sizes
            "tile_shape": list(plan.tile),  # tile, stride and margin in model voxels
            "stride": list(plan.stride),
            "margin": list(plan.margin),
            "blend": plan.blend,
            "normalization_stats": [st.to_dict() for st in stats] if len(stats) > 1 else stats[0].to_dict(),
            "model_config": loaded.model_config,
        },
    )
