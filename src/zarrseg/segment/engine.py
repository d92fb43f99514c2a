"""The ``segment`` stage: boundary map OME-Zarr -> label OME-Zarr, blockwise and resumable.

Everything is written inside ``<output>.partial`` (``ome.atomic_output(resume=True)``): the
label image itself, and a ``_work`` folder with the intermediate arrays (staged boundary
map, smoothed distance transform, supervoxels; scratch space about 4x a float32 copy of the
input), the per-block done markers of every stage and the small global tables (node ids,
graph, node labels). A killed run resumes where it stopped when rerun with the same input and
parameters (the number of workers may change); with other parameters it starts over.
``_work`` is removed before the output is renamed into place.
"""

from __future__ import annotations

import contextlib
import logging
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import zarr

from .. import ome, runs
from ..blocks import BlockGrid, check_halo
from ..embeddings import Meta
from ..errors import InputError
from ..parallel import dask_client, map_blocks
from ..params import to_dict
from . import graph as graph_mod
from .checks import check_halo_reach, check_values, looks_inverted, warn_inverted
from .io import (
    ArrayRef,
    CopyTask,
    EvidenceTask,
    ImageReader,
    check_boundary_dtype,
    limit_malloc_arenas,
    value_scale,
)
from .params import SegmentParams, geometry
from .partition import partition
from .supervoxels import (
    Claims,
    DistanceTask,
    NodeTables,
    SupervoxelTask,
    distance_range,
    relabel,
    seed_claims,
)
from .watershed import WatershedSettings
from .write import NodeView, WriteTask

log = logging.getLogger(__name__)

WORK = runs.WORK
_SV_COMPRESSION = ome.Compression(codec="lz4", level=1, shuffle="shuffle")


def _open_inputs(boundaries_path, mask_path, channel):
    image = ome.open_image(boundaries_path)
    ome.check_intensity(image)  # a uint16 instance mask would pass the dtype check below
    if Meta.of(image.attrs) is not None:
        channel = 0  # embeddings: the staging pass turns all of f's channels into one boundary map
    view = ome.SpatialView.of(image, channel=channel)
    if view.ndim not in (2, 3):
        raise InputError(
            f"boundary map must be 2D or 3D (spatial axes {view.spatial_axes!r})", boundaries_path
        )
    check_boundary_dtype(view.dtype, boundaries_path)
    if mask_path is not None:
        mimage = ome.open_image(mask_path)
        mview = ome.SpatialView.of(mimage)
        if mview.shape != view.shape:
            raise InputError(
                f"mask shape {mview.shape} differs from the boundary map's {view.shape}", mask_path
            )
        if mview.dtype.kind not in "uib":
            raise InputError(
                f"mask must be integer or boolean (nonzero = foreground), got {mview.dtype}", mask_path
            )
    return image, view


def settings_for(params: SegmentParams, scale: tuple[float, ...], ndim: int) -> WatershedSettings:
    """The watershed settings of an image with voxel size ``scale`` (see ``params.geometry``).

    A foreground map is read inverted (background = "boundary"), so foreground is where the
    value is >= ``threshold``; its pieces are split on the distance transform alone (alpha 0).
    """
    pitch, stacked = geometry(params, scale, ndim)
    foreground = params.partitioner == "connected_components"
    return WatershedSettings(
        1.0 - params.threshold if foreground else params.threshold,
        params.sigma_seeds,
        params.sigma_weights,
        params.min_size,
        0.0 if foreground else params.alpha,
        pitch,
        stacked,
        foreground=foreground,
        split=params.split,
    )


def _fingerprint(params: SegmentParams, boundaries_path, mask_path, channel, shape) -> dict:
    p = to_dict(params)
    p.pop("dask", None)  # the number of workers does not change the result
    return {
        "layout": 4,  # version of the _work layout: a partial output of an older engine starts over
        "params": p,
        "boundaries": str(Path(boundaries_path).resolve()),
        "boundaries_identity": runs.input_identity(boundaries_path),  # rewritten in place: start over
        "channel": channel,
        "mask": None if mask_path is None else str(Path(mask_path).resolve()),
        "mask_identity": None if mask_path is None else runs.input_identity(mask_path),
        "shape": list(shape),
    }


def work_chunks(block_shape: tuple[int, ...], largest: int = 64, smallest: int = 16) -> tuple[int, ...]:
    """Chunks of the intermediate arrays: the largest divisor of the block in [smallest, largest].

    Blocks read their halo from these arrays, which decompresses every chunk the halo touches:
    with chunks as large as the block, a block with a 16-voxel halo decodes up to 27 blocks'
    worth. Chunks divide the block so that no two blocks write into one chunk.
    """
    out = []
    for b in block_shape:
        fits = [d for d in range(smallest, min(largest, b) + 1) if b % d == 0]
        out.append(max(fits) if fits else b)
    return tuple(out)


def _prepare(
    tmp: Path,
    fingerprint: dict,
    image: ome.Image,
    view: ome.SpatialView,
    params: SegmentParams,
    grid: BlockGrid,
) -> bool:
    """Create the partial output, or keep it when it belongs to the same run. Returns True when resuming."""
    if runs.same_run(tmp, fingerprint, "segment"):
        return True
    ndim = view.ndim
    ome.create_image(
        tmp,
        shape=view.shape,
        dtype=np.uint64,
        axes=view.spatial_axes,
        scale=image.spatial_scale,
        translation=image.spatial_translation,
        chunks=params.spatial("chunks", ndim),
        compression=params.compression,
        n_levels=params.n_levels,
        is_label=True,
        name=Path(str(tmp)).name.removesuffix(".partial"),
    )
    work = zarr.open_group(str(tmp / WORK), mode="w", zarr_format=2)
    chunks = work_chunks(grid.block_shape)
    ome.create_array(work, "supervoxels", view.shape, np.uint64, chunks, _SV_COMPRESSION)
    ome.create_array(work, "distance", view.shape, np.float32, chunks, _SV_COMPRESSION)
    ome.create_array(work, "boundaries", view.shape, view.dtype, chunks, _SV_COMPRESSION)
    runs.mark_resumable(tmp, fingerprint)
    return False


def _set_output_dtype(tmp: Path, dtype: np.dtype, params: SegmentParams) -> None:
    """Labels are uint32 when the ids fit; the image was created as uint64 before that was known."""
    group = zarr.open_group(str(tmp), mode="r+", zarr_format=2)
    paths = [d["path"] for d in group.attrs["multiscales"][0]["datasets"]]
    if np.dtype(group[paths[0]].dtype) == dtype:
        return
    for p in paths:
        arr = group[p]
        ome.create_array(group, p, arr.shape, dtype, arr.chunks, params.compression)


def _node_tables(work: Path, summaries: list[dict]) -> NodeTables:
    """``relabel`` of the blocks' summaries, saved in ``work`` (``node_of.npy`` last: marks it done)."""
    files = {"sparse_ids": "sparse_ids", "sizes": "node_sizes", "z": "node_z", "peak": "node_peak", "node_of": "node_of"}
    names = tuple(files)
    paths = {n: work / f"{f}.npy" for n, f in files.items()}
    if not paths["node_of"].exists():
        nodes = relabel(summaries)
        for n in names:
            table = getattr(nodes, n)
            if table is not None:
                runs.atomic_save_npy(paths[n], table)
    loaded = {n: np.load(paths[n]) if paths[n].exists() else None for n in names}
    return NodeTables(**loaded)


@contextlib.contextmanager
def _stage(name: str, timings: dict):
    t0 = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - t0, 3)
    peak = peak_rss_mb()
    log.info("segment: %s took %.2f s (peak RSS so far: this process %.0f MB, largest worker process %.0f MB)",
             name, timings[name], peak["this_process"], peak["worker_processes"])


def peak_rss_mb() -> dict[str, float]:
    """Peak RSS of this process and of the largest worker process it has finished with (the
    'processes' scheduler's pool and a local Dask cluster's workers, once shut down: the kernel
    keeps the largest of the waited-for children; 0 with threads). Not the sum over workers, and
    not workers on other machines (SLURM: see their job accounting)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"this_process": round(own, 1), "worker_processes": round(children, 1)}


def segment(
    boundaries_path: str | Path,
    output_path: str | Path,
    params: SegmentParams | None = None,
    mask_path: str | Path | None = None,
    channel: int = 0,
) -> dict:
    """Segment a boundary map (or, partitioner ``connected_components``, a foreground map) into a
    label OME-Zarr at ``output_path``; return a summary dict."""
    params = params or SegmentParams()
    params.validate()
    limit_malloc_arenas(params.dask.workers)
    image, view = _open_inputs(boundaries_path, mask_path, channel)
    ndim = view.ndim
    block_shape, halo = params.spatial("block_shape", ndim), params.spatial("halo", ndim)
    check_halo(block_shape, halo)
    settings = settings_for(params, image.spatial_scale, ndim)
    if settings.foreground and not settings.split:
        halo = (0,) * ndim  # components meeting across a face are joined by the graph's face edges
    grid = BlockGrid(view.shape, block_shape, halo)
    chunks = params.spatial("chunks", ndim)
    write_grid = BlockGrid(view.shape, [-(-b // c) * c for b, c in zip(block_shape, chunks, strict=True)])
    fingerprint = _fingerprint(params, boundaries_path, mask_path, channel, view.shape)
    mask = None if mask_path is None else ImageReader(str(mask_path), 0)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    log.info(
        "segment: %s %s -> %s, %d blocks of %s (halo %s), partitioner %s, %s supervoxels, distance pitch %s",
        boundaries_path,
        view.shape,
        output_path,
        len(grid),
        grid.block_shape,
        grid.halo,
        params.partitioner,
        "stacked-2D" if settings.per_slice(ndim) else f"{ndim}D",
        settings.pixel_pitch,
    )

    with ome.atomic_output(output_path, resume=True) as tmp:
        resumed = _prepare(tmp, fingerprint, image, view, params, grid)
        if resumed:
            log.info("segment: resuming %s", tmp)
        work = tmp / WORK
        sv = ArrayRef(str(work / "supervoxels"))
        done = work / "done"
        with dask_client(params.dask) as client:
            kw = {"dask_params": params.dask, "client": client}
            with _stage("stage input", timings):
                # every later pass reads blocks with their halo: from a copy in small, fast chunks
                # instead of decoding the input's (possibly large, strongly compressed) chunks again
                staged = ArrayRef(str(work / "boundaries"))
                meta = Meta.of(image.attrs)
                if meta is None:
                    task = CopyTask(ImageReader(str(boundaries_path), channel), staged)
                else:  # pixel embeddings -> boundary evidence (Eq. 3.10 affinities to the neighbours)
                    axes = tuple(range(ndim))[-meta.model_ndim :]
                    task = EvidenceTask(str(boundaries_path), meta.dim, meta.delta_d, axes, staged)
                    log.info("segment: embeddings (D = %d) -> boundary evidence along axes %s", meta.dim, axes)
                out = map_blocks(task, grid, name="stage input", done_dir=done / "copy", **kw)
            try:
                largest = check_values(out, boundaries_path)
            except InputError:
                shutil.rmtree(tmp)  # nothing of a rejected input is kept for a resume
                raise
            boundaries = ArrayRef(staged.path, value_scale(view.dtype, largest), params.invert != settings.foreground)
            inverted = None if settings.foreground else looks_inverted(boundaries, grid, settings.threshold)
            if inverted:
                warn_inverted(boundaries_path, settings.threshold, inverted)
            distance, dt_range, advice = None, None, None
            if settings.needs_distance:
                distance = ArrayRef(str(work / "distance"))
                with _stage("distance", timings):
                    task = DistanceTask(boundaries, mask, distance, settings)
                    out = map_blocks(task, grid, name="distance transform", done_dir=done / "dt", **kw)
                    dt_range = distance_range(list(grid), out, settings.per_slice(ndim), view.shape[0])
                advice = check_halo_reach(grid, settings, dt_range)
            summaries: dict[int, dict] = {}
            with _stage("supervoxels", timings):
                claims = None
                for colour in (0, 1):
                    blocks = [b for b in grid if b.colour == colour]
                    if colour == 1 and settings.needs_distance:  # the seeds pass 1 grew supervoxels from
                        claims = Claims.save(work, seed_claims(list(summaries.values())))
                    task = SupervoxelTask(boundaries, mask, distance, dt_range, sv, grid, settings, colour, claims)
                    out = map_blocks(
                        task, blocks, name=f"supervoxels {colour + 1}/2", done_dir=done / f"sv{colour}", **kw
                    )
                    summaries.update({b.id: s for b, s in zip(blocks, out, strict=True)})
            nodes = _node_tables(work, [summaries[i] for i in sorted(summaries)])
            skipped = int(sum(int(s.get("skipped", 0)) for s in summaries.values()))
            node_z = None if nodes.z is None else np.concatenate([[-1], nodes.z])
            n_nodes = len(nodes.sizes) + 1
            log.info("segment: %d supervoxels (%d fully masked blocks skipped)", n_nodes - 1, skipped)

            graph_path = work / "graph.npz"
            with _stage("graph", timings):
                if graph_path.exists():
                    g = graph_mod.Graph.load(graph_path)
                else:
                    blocks = [summaries[i] for i in sorted(summaries)]
                    g = graph_mod.merge(blocks, nodes.sparse_ids, nodes.node_of, n_nodes)
                    del blocks
                    g.save(graph_path)
            del summaries
            log.info("segment: graph of the %d supervoxels, %d edges", g.n_nodes - 1, len(g.uv))  # id 0: no node

            labels_path = work / "node_labels.npy"
            with _stage("partition", timings):
                if not labels_path.exists():
                    seg_view = NodeView(sv, nodes.sparse_ids, nodes.node_of) if params.blockwise_solver else None
                    labels = partition(
                        g, params, nodes.sizes, node_z, seg_view, n_threads=params.dask.workers, node_peak=nodes.peak
                    )
                    runs.atomic_save_npy(labels_path, labels)
            labels = np.load(labels_path)
            n_segments = int(labels.max()) if len(labels) else 0
            dtype = np.dtype(np.uint32 if n_segments < 2**32 else np.uint64)
            del g

            with _stage("write", timings):
                if not (done / "write").exists():
                    _set_output_dtype(tmp, dtype, params)
                task = WriteTask(sv, ArrayRef(str(tmp / "0")), str(work), str(labels_path), dtype.str)
                map_blocks(task, write_grid, name="write", done_dir=done / "write", **kw)
                if params.n_levels != 1:
                    ome.write_pyramid(tmp, is_label=True)

        summary = {
            "n_supervoxels": n_nodes - 1,
            "n_segments": n_segments,
            "n_blocks": len(grid),
            "skipped_blocks": skipped,
            "dtype": dtype.name,
            "timings_s": timings,
            "total_s": round(time.perf_counter() - t_start, 3),
            "resumed": resumed,
            "halo_short": advice is not None,
            "halo_advice": advice,
            "stacked_2d": settings.per_slice(ndim),
            "pixel_pitch": None if settings.pixel_pitch is None else list(settings.pixel_pitch),
            "looks_inverted": inverted is not None,
            "peak_rss_mb": peak_rss_mb(),
        }
        group = zarr.open_group(str(tmp), mode="r+", zarr_format=2)
        attrs = dict(group.attrs["zarrseg"])
        attrs.update(
            {
                "stage": "segment",
                "params": fingerprint["params"],
                "source": str(boundaries_path),
                "mask": None if mask_path is None else str(mask_path),
                "summary": summary,
            }
        )
        group.attrs["zarrseg"] = attrs
        runs.remove_work(work)
    log.info("segment: %d segments written to %s in %.1f s", n_segments, output_path, summary["total_s"])
    return summary
