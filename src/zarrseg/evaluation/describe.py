"""What a segmentation contains, without ground truth: segment counts and sizes per sample.

Runs without ground truth (new acquisitions, nightly runs) still need a table a person can read:
how many segments each sample got and how large they are, in voxels and in µm² / µm³ from the
image's scale. Sizes are counted blockwise through ``parallel.map_blocks`` (memory: one block
plus one count per segment id), so label images of any size are described the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .. import ome
from ..blocks import Block, BlockGrid
from ..errors import InputError, OutputError
from ..parallel import DaskParams, Summary, map_blocks
from ..runs import check_output
from .contingency import spatial_block_shape
from .tables import markdown_table, write_table

log = logging.getLogger(__name__)

# columns of segments.parquet, in display order (besides the --meta columns that come first)
COLUMNS = ["n_segments", "size_min", "size_median", "size_mean", "size_max", "size_unit",
           "voxels_median", "voxels_mean", "axes", "shape", "voxel_size_um", "labels", "image"]


class _CountIds:
    """Block function: voxels per non-zero label id in one block (picklable for process schedulers)."""

    def __init__(self, view: ome.SpatialView):
        self.view = view

    def __call__(self, block: Block) -> Summary:
        ids, counts = np.unique(self.view[block.inner], return_counts=True)
        keep = ids != 0
        return {"ids": ids[keep].astype(np.uint64), "counts": counts[keep].astype(np.int64)}


def segment_sizes(labels: ome.SpatialView, block_shape: Sequence[int] = (64, 512, 512),
                  dask_params: DaskParams | None = None) -> np.ndarray:
    """Voxel count of every segment (label > 0) of a label volume, summed over blocks."""
    grid = BlockGrid(labels.shape, spatial_block_shape(block_shape, labels.ndim))
    summaries = map_blocks(_CountIds(labels), grid, name="describe: segment sizes", dask_params=dask_params)
    ids = np.concatenate([s["ids"] for s in summaries]) if summaries else np.zeros(0, np.uint64)
    counts = np.concatenate([s["counts"] for s in summaries]) if summaries else np.zeros(0, np.int64)
    if not ids.size:
        return np.zeros(0, np.int64)
    _, inverse = np.unique(ids, return_inverse=True)
    return np.bincount(inverse, weights=counts).astype(np.int64)


def describe(labels_path: str | Path, image_path: str | Path | None = None,
             dask_params: DaskParams | None = None) -> dict:
    """One row: number of segments, their sizes (voxels and physical), shape and voxel size."""
    labels = ome.open_image(labels_path)
    ome.warn_if_intensity(labels, "segmentation")
    if labels.data.dtype.kind not in "ui":
        raise InputError(f"not a label image (pixel type {labels.data.dtype})", labels_path)
    view = ome.SpatialView.of(labels)
    if view.ndim not in (2, 3):
        raise InputError(f"expected a 2D or 3D label image, got spatial shape {list(view.shape)}", labels_path)
    scale = labels.spatial_scale
    if image_path is not None:  # the image's voxel size is the reference (labels inherit it anyway)
        image = ome.open_image(image_path)
        size = ome.SpatialView.of(image).shape
        if size != view.shape:
            raise InputError(f"spatial shape {list(size)} differs from the labels' {list(view.shape)}", image_path)
        scale = image.spatial_scale[-view.ndim:]
    from ..predict.rescale import image_voxel_size

    sizes = segment_sizes(view, dask_params=dask_params)
    voxel = float(np.prod(scale))
    known = image_voxel_size(image if image_path is not None else labels) is not None
    unit = ("µm³" if view.ndim == 3 else "µm²") if known else "voxels (voxel size unknown)"
    physical = sizes * voxel
    row = {
        "n_segments": int(sizes.size),
        "size_min": float(physical.min()) if sizes.size else float("nan"),
        "size_median": float(np.median(physical)) if sizes.size else float("nan"),
        "size_mean": float(physical.mean()) if sizes.size else float("nan"),
        "size_max": float(physical.max()) if sizes.size else float("nan"),
        "size_unit": unit,  # not µm when every axis is at ingest's 1 µm fallback
        "voxels_median": float(np.median(sizes)) if sizes.size else float("nan"),
        "voxels_mean": float(sizes.mean()) if sizes.size else float("nan"),
        "axes": view.spatial_axes,
        "shape": "x".join(str(s) for s in view.shape),
        "voxel_size_um": "x".join(f"{s:g}" for s in scale),
        "labels": str(labels_path),
        "image": "" if image_path is None else str(image_path),
    }
    log.info("describe %s: %d segments, median size %.3g %s", labels_path, row["n_segments"],
             row["size_median"], row["size_unit"])
    return row


def write_description(row: dict, meta: dict[str, str], output: str | Path) -> Path:
    """``output`` (Parquet) + CSV: the --meta columns, then the description."""
    frame = pd.DataFrame([{**meta, **row}])
    return write_table(frame, output)[0]


def summarize_descriptions(tables: Sequence[str | Path], outdir: str | Path, digits: int = 3) -> Path:
    """``segments.parquet`` / ``.csv`` / ``.md`` in ``outdir``: one row per described segmentation."""
    if not tables:
        raise InputError("no segment tables given")
    if Path(outdir).exists() and not Path(outdir).is_dir():
        raise OutputError("exists as a file; --summary writes a folder (segments.parquet, .csv, .md)", outdir)
    check_output(Path(outdir) / "segments.parquet", ".csv", ".md")  # before reading anything
    frames = []
    for t in tables:
        if not Path(t).is_file():
            raise InputError("is not a segment table file (written by 'zarrseg describe')", t)
        try:
            frame = pd.read_parquet(t)
        except Exception as err:  # pyarrow raises several types for corrupt files
            raise InputError(f"cannot be read as a segment table ({type(err).__name__}: {err})", t) from err
        if "n_segments" not in frame.columns:
            raise InputError("is not a segment table (no n_segments column; 'zarrseg describe' writes them)", t)
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    outdir = Path(outdir)
    write_table(frame, outdir / "segments.parquet")
    first = [c for c in ("sample", "cell", "method") if c in frame.columns]
    shown = first + [c for c in ("n_segments", "size_median", "size_mean", "size_unit", "shape", "voxel_size_um")
                     if c in frame.columns]
    rows = [[_cell(v, digits) for v in values] for values in frame[shown].itertuples(index=False)]
    text = "# Segments per sample and cell\n\n" + markdown_table(shown, rows) + "\n"
    with ome.atomic_output(outdir / "segments.md") as tmp:
        tmp.write_text(text)
    return outdir / "segments.md"


def _cell(value: object, digits: int) -> str:
    """A number as people write it: 4650.2 -> '4650', 0.0123 -> '0.0123' (not '4.65e+03')."""
    if isinstance(value, float):
        if not np.isfinite(value):
            return "–"
        return f"{value:,.0f}" if abs(value) >= 10 ** digits else f"{value:.{digits}g}"
    return str(value)
