"""Stream a ``Source`` into NGFF 0.4 images, atomically.

One scene becomes a plain NGFF image at the output's root (what every OME-Zarr tool opens);
several scenes keep the bioformats2raw container, one image per scene at ``output/<k>``.

Memory is bounded by the slabs in flight (``slab_mb``): a z-range of one chunk depth, as many
full chunk rows in y and x as fit, all channels of one timepoint. Slabs are chunk-aligned, so
every level-0 chunk is encoded exactly once and never read back; reading the next slab
overlaps with compressing the previous one, and the source's sha256 is computed alongside.
The lower pyramid levels are downsampled from each slab while it is in memory (identical to
``ome.write_pyramid`` on the finished level 0, which is the fallback for unaligned slabs).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from .. import __version__, ome
from ..errors import InputError
from ..parallel import progress_bar
from ..params import to_dict
from .detect import open_source, resolve_input
from .params import IngestParams
from .pipeline import IN_FLIGHT, Pyramid, SlabWriter, fast_writes, level_ratios
from .source import Scene, Source

log = logging.getLogger(__name__)

LAYOUT_KEY = "bioformats2raw.layout"


@dataclass(frozen=True)
class Slab:
    t: int
    c: slice
    z: slice
    y: slice
    x: slice


def ingest(
    source: str | Path,
    output: str | Path,
    params: IngestParams | None = None,
    *,
    labels: bool = False,
    scenes: Sequence[int] | None = None,
) -> Path:
    """Convert ``source`` (CZI, TIFF, OME-TIFF or ``file.h5:dataset``) to an OME-Zarr container.

    One selected scene: a plain NGFF image at ``output``; several: one NGFF image per selected
    scene at ``output/<k>`` (k-th selected scene; all scenes by default) in a bioformats2raw
    container. Re-running with the same source content and parameters is a no-op.
    """
    params = params or IngestParams()
    output = Path(output)
    path, dataset = resolve_input(source)
    with open_source(path, dataset, params) as src:
        src.check()
        selected = _select_scenes(src, scenes)
        if labels:
            for index in selected:
                if src.scenes[index].dtype.kind not in "ui":
                    raise InputError(f"--labels needs an integer image, got {src.scenes[index].dtype}", path)
        stat = path.stat()
        # what the output depends on (the thread count does not change a byte of it)
        request = {"params": {k: v for k, v in to_dict(params).items() if k != "threads"}, "labels": labels,
                   "scenes": selected, "dataset": dataset}
        _refuse_foreign_output(output)
        if _is_up_to_date(output, path, stat, request):
            log.info("%s is up to date with %s; nothing to do", output, path)
            return output
        started = time.perf_counter()
        stop = threading.Event()
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sha256") as pool:
            digest = pool.submit(sha256_file, path, stop)  # hashes while we convert
            with _stop_on_error(stop), ome.atomic_output(output) as tmp:
                file_attrs = {
                    "source": str(path.resolve()),
                    "source_size": stat.st_size,
                    "source_mtime_ns": stat.st_mtime_ns,
                    "reader": src.reader,
                    "reader_version": src.reader_version,
                }
                images = _image_paths(tmp, len(selected))
                if len(selected) > 1:
                    root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
                    root.attrs[LAYOUT_KEY] = 3
                    root.create_group("OME").attrs["series"] = [str(k) for k in range(len(selected))]
                for image, index in zip(images, selected, strict=True):
                    attrs = {**file_attrs, "scene": index, "scene_name": src.scenes[index].name,
                             **src.scenes[index].extra}
                    write_scene(src, index, image, params, labels=labels, attrs=attrs)
                if len(selected) > 1:
                    _write_ome_xml(tmp, len(selected))
                sha = digest.result()
                for image in images:
                    group = zarr.open_group(str(image), mode="r+", zarr_format=2)
                    group.attrs["zarrseg"] = {**group.attrs["zarrseg"], "source_sha256": sha}
                root = zarr.open_group(str(tmp), mode="r+", zarr_format=2)
                root.attrs["zarrseg"] = {
                    **dict(root.attrs.get("zarrseg", {})),
                    **ome.provenance(source_sha256=sha, **file_attrs),
                    "request": request,
                }
        seconds = time.perf_counter() - started
        total = sum(src.scenes[i].nbytes for i in selected)
        log.info(
            "ingested %s -> %s: %d scene(s), %.1f MB in %.1f s (%.1f MB/s)",
            path,
            output,
            len(selected),
            total / 1e6,
            seconds,
            total / 1e6 / max(seconds, 1e-9),
        )
    return output


OME_NS = "http://www.openmicroscopy.org/Schemas/OME/2016-06"
OME_TYPES = {
    "u1": "uint8",
    "u2": "uint16",
    "u4": "uint32",
    "i1": "int8",
    "i2": "int16",
    "i4": "int32",
    "f4": "float",
    "f8": "double",
}


def _write_ome_xml(container: Path, n_images: int) -> None:
    """``OME/METADATA.ome.xml`` (bioformats2raw layout): one Image per series, for tools that list
    the images of a container from it (Bio-Formats, ``ome_zarr.utils.find_multiscales``).

    Skipped when a pixel type has no OME equivalent (64-bit integers); the Zarr metadata is complete anyway.
    """
    import xml.etree.ElementTree as ET

    root = ET.Element("OME", {"xmlns": OME_NS, "Creator": f"zarrseg {__version__}"})
    for k in range(n_images):
        image = ome.open_image(container / str(k))
        kind = OME_TYPES.get(np.dtype(image.data.dtype).str[1:])
        if kind is None:
            log.info("no OME-XML written: pixel type %s has no OME equivalent", image.data.dtype)
            return
        sizes = dict(zip(image.axes, image.shape, strict=True))
        scale = dict(zip(image.axes, image.scale, strict=True))
        node = ET.SubElement(
            root, "Image", {"ID": f"Image:{k}", "Name": str(image.attrs["multiscales"][0]["name"])}
        )
        pixels = ET.SubElement(
            node,
            "Pixels",
            {
                "ID": f"Pixels:{k}",
                "DimensionOrder": "XYZCT",
                "Type": kind,
                "BigEndian": "false",
                **{f"Size{a.upper()}": str(sizes.get(a, 1)) for a in "xyzct"},
                **{f"PhysicalSize{a.upper()}": repr(float(scale[a])) for a in "xyz" if a in scale},
                **{f"PhysicalSize{a.upper()}Unit": "µm" for a in "xyz" if a in scale},
                **(
                    {"TimeIncrement": repr(float(scale["t"])), "TimeIncrementUnit": "s"}
                    if "t" in scale
                    else {}
                ),
            },
        )
        for c, name in enumerate(image.channel_names or [None] * sizes.get("c", 1)):
            ET.SubElement(
                pixels,
                "Channel",
                {"ID": f"Channel:{k}:{c}", "SamplesPerPixel": "1", **({"Name": name} if name else {})},
            )
        ET.SubElement(pixels, "MetadataOnly")
    ET.ElementTree(root).write(container / "OME" / "METADATA.ome.xml", encoding="utf-8", xml_declaration=True)


def _image_paths(root: Path, n_images: int) -> list[Path]:
    """Where the images go: the root for one scene, ``root/<k>`` in a container for several."""
    return [root] if n_images == 1 else [root / str(k) for k in range(n_images)]


def _select_scenes(src: Source, scenes: Sequence[int] | None) -> list[int]:
    if not scenes:
        return list(range(len(src.scenes)))
    out = []
    for s in scenes:
        if not 0 <= s < len(src.scenes):
            raise InputError(
                f"scene {s} does not exist (the file has {len(src.scenes)} scene(s): "
                f"0..{len(src.scenes) - 1})",
                src.path,
            )
        if s not in out:
            out.append(int(s))
    return out


def sha256_file(path: Path, stop: threading.Event | None = None, block: int = 8 << 20) -> str:
    """Hex sha256 of a file, read in blocks; returns "" early when ``stop`` is set (ingest failed)."""
    digest = hashlib.sha256()
    buffer = bytearray(block)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buffer):
            if stop is not None and stop.is_set():
                return ""
            digest.update(view[:n])
    return digest.hexdigest()


@contextlib.contextmanager
def _stop_on_error(stop: threading.Event) -> Iterator[None]:
    """Tell the background hash to give up when the conversion fails, so the error is not delayed."""
    try:
        yield
    except BaseException:
        stop.set()
        raise


def _refuse_foreign_output(output: Path) -> None:
    """Never replace something at OUTPUT that an ingest did not write (e.g. a mistyped data folder)."""
    if not output.exists() and not output.is_symlink():
        return
    if output.is_dir() and not any(output.iterdir()):
        return
    try:
        attrs = dict(zarr.open_group(str(output), mode="r", zarr_format=2).attrs)
    except Exception:
        attrs = {}
    if not _is_ingest_output(attrs):
        raise InputError(
            "output exists and is not a zarrseg ingest container; refusing to overwrite it "
            "(remove it or choose another output)",
            output,
        )


def _is_ingest_output(attrs: dict) -> bool:
    """Root attributes of an ingest output: a container (several scenes) or a plain image (one)."""
    return "zarrseg" in attrs and (LAYOUT_KEY in attrs or "multiscales" in attrs) and "request" in attrs["zarrseg"]


def _is_up_to_date(output: Path, path: Path, stat: os.stat_result, request: dict) -> bool:
    """A finished container (renamed from .partial) from the same source content and request."""
    if not output.is_dir():
        return False
    try:
        attrs = dict(zarr.open_group(str(output), mode="r", zarr_format=2).attrs)
    except Exception:  # not a Zarr group: will be replaced
        return False
    meta = attrs.get("zarrseg", {})
    if not _is_ingest_output(attrs) or meta.get("request") != request or "source_sha256" not in meta:
        return False
    same_file = meta.get("source") == str(path.resolve()) and meta.get("source_mtime_ns") == stat.st_mtime_ns
    if meta.get("source_size") != stat.st_size:
        return False
    if not same_file:
        log.info("%s: other path or modification time than the existing output's source; comparing sha256", path)
        if sha256_file(path) != meta["source_sha256"]:
            return False
    return _metadata_intact(output, len(request["scenes"]))


def _metadata_intact(output: Path, n_images: int) -> bool:
    """Whether every image and pyramid level of a finished output still opens (metadata damaged or a
    level removed since: written again). Missing chunk files read as zeros and are not looked for:
    listing every chunk would cost as much as reading the volume."""
    try:
        for image_path in _image_paths(output, n_images):
            image = ome.open_image(image_path)
            for level in range(1, len(image.level_paths)):
                image.level(level)
    except Exception as err:  # any damage: the output is rewritten, not trusted
        log.warning("%s: existing output is damaged (%s); writing it again", output, err)
        return False
    return True


def voxel_size(scene: Scene, params: IngestParams, path: Path) -> dict[str, float]:
    """µm per voxel along z/y/x: parameter override, else file metadata, else 1.0 with a warning."""
    spatial = [a for a in scene.axes if a in "zyx"]
    if params.voxel_size is not None:
        given = dict(zip("zyx"[-len(params.voxel_size) :], params.voxel_size, strict=True))
        missing = [a for a in spatial if a not in given]
        if missing:
            raise InputError(
                f"voxel_size {params.voxel_size} gives no size for axis {''.join(missing)}", path
            )
        return {a: float(given[a]) for a in spatial}
    out = {}
    missing = [a for a in spatial if not 0 < scene.voxel_size.get(a, float("nan")) < float("inf")]
    if missing:
        log.warning(
            "%s: no usable physical pixel size for axis %s in the metadata; using 1.0 µm (set "
            "voxel_size to override)",
            path,
            "/".join(missing),
        )
    for a in spatial:
        out[a] = 1.0 if a in missing else float(scene.voxel_size[a])
    return out


def plan_slabs(
    scene: Scene, chunks: Sequence[int], budget_bytes: int
) -> tuple[list[Slab], tuple[int, int, int, int]]:
    """Chunk-aligned slabs covering the scene, each at most ``budget_bytes`` when possible.

    A slab is one chunk deep in z; it is narrowed, while too large, first to bands of whole
    chunk rows in y (keeps reads of interleaved RGB and whole-row strips efficient), then to
    fewer channels (chunks are 1 channel deep, so any channel range is aligned), then to
    bands of whole chunk columns in x. Returns the slabs and the slab shape (c, z, y, x).
    """
    sizes = scene.sizes
    spatial = {a: c for a, c in zip(scene.axes, chunks, strict=True) if a in "zyx"}
    cz, cy, cx = spatial.get("z", 1), spatial["y"], spatial["x"]
    item = scene.dtype.itemsize
    zb = min(cz, sizes["z"])
    cb, yb, xb = sizes["c"], sizes["y"], sizes["x"]

    def nbytes() -> int:
        return cb * zb * yb * xb * item

    if nbytes() > budget_bytes:
        yb = min(sizes["y"], max(cy, budget_bytes // (cb * zb * xb * item) // cy * cy))
    if nbytes() > budget_bytes:
        cb = min(sizes["c"], max(1, budget_bytes // (zb * yb * xb * item)))
    if nbytes() > budget_bytes:
        xb = min(sizes["x"], max(cx, budget_bytes // (cb * zb * yb * item) // cx * cx))
    slabs = [
        Slab(
            t,
            slice(c, min(c + cb, sizes["c"])),
            slice(z, min(z + zb, sizes["z"])),
            slice(y, min(y + yb, sizes["y"])),
            slice(x, min(x + xb, sizes["x"])),
        )
        for t in range(sizes["t"])
        for c in range(0, sizes["c"], cb)
        for z in range(0, sizes["z"], zb)
        for y in range(0, sizes["y"], yb)
        for x in range(0, sizes["x"], xb)
    ]
    if nbytes() > budget_bytes:
        log.warning(
            "one slab (%s) needs %.0f MB, more than the budget of %.0f MB (slab_mb / 3); "
            "smaller chunks would reduce it",
            (cb, zb, yb, xb),
            nbytes() / 2**20,
            budget_bytes / 2**20,
        )
    return slabs, (cb, zb, yb, xb)


def _target_index(axes: str, slab: Slab) -> tuple:
    return tuple({"t": slab.t, "c": slab.c, "z": slab.z, "y": slab.y, "x": slab.x}[a] for a in axes)


def _squeeze(data: np.ndarray, axes: str) -> np.ndarray:
    """(C, Z, Y, X) from a reader -> the image's axes without t."""
    if "z" not in axes:
        data = data[:, 0]
    if "c" not in axes:
        data = data[0]
    return data


def _read_ahead(src: Source, scene: int, slabs: list[Slab]) -> Iterator[tuple[Slab, np.ndarray]]:
    """Yield slabs while the next one is being read in a background thread (I/O overlaps encoding)."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ingest-read") as pool:
        pending = (
            pool.submit(src.read, scene, slabs[0].t, slabs[0].c, slabs[0].z, slabs[0].y, slabs[0].x)
            if slabs
            else None
        )
        for i, slab in enumerate(slabs):
            data = pending.result()
            if i + 1 < len(slabs):
                nxt = slabs[i + 1]
                pending = pool.submit(src.read, scene, nxt.t, nxt.c, nxt.z, nxt.y, nxt.x)
            yield slab, data
            del data


def write_scene(
    src: Source, scene_index: int, out: Path, params: IngestParams, *, labels: bool, attrs: dict
) -> None:
    """Create one NGFF image for a scene, fill level 0 slab by slab, then the pyramid."""
    scene = src.scenes[scene_index]
    axes, shape = scene.axes, scene.shape
    voxel = voxel_size(scene, params, src.path)
    if "t" in axes and "t" not in scene.voxel_size:
        log.warning("%s: %d timepoints but no time interval in the metadata; the time axis gets a "
                    "scale of 1 s, which is invented", src.path, scene.sizes["t"])
    scale = [voxel.get(a, scene.voxel_size.get("t", 1.0) if a == "t" else 1.0) for a in axes]
    chunks = ome.chunk_shape(axes, shape, params.chunks)
    ome.create_image(
        out,
        shape=shape,
        dtype=scene.dtype,
        axes=axes,
        scale=scale,
        translation=[scene.origin_px.get(a, 0.0) * s for a, s in zip(axes, scale, strict=True)],
        chunks=chunks,
        compression=params.compression,
        name=scene.name,
        channel_names=None if labels and scene.sizes["c"] == 1
        else scene.channel_names or [f"C{i}" for i in range(scene.sizes["c"])],
        channel_colors=scene.channel_colors,
        n_levels=params.pyramid_levels,
        is_label=labels,
        # a single plane drops its z axis; the file's z spacing (section thickness) is kept here
        attrs={**attrs, "voxel_size_um": voxel, "ingest_params": to_dict(params),
               **({"plane_z_spacing_um": scene.voxel_size["z"]} if "z" not in axes and "z" in scene.voxel_size else {})},
    )
    # slabs live at once: one being read, IN_FLIGHT being encoded; each gets its share of the budget
    slabs, slab_shape = plan_slabs(scene, chunks, params.slab_mb * 2**20 // (IN_FLIGHT + 1))
    threads = encode_threads(params)
    log.info(
        "scene %d %r: axes %s shape %s %s, voxel %s µm, %d slab(s) of %s, %d encoding thread(s)",
        scene_index,
        scene.name,
        axes,
        shape,
        scene.dtype,
        voxel,
        len(slabs),
        slab_shape,
        threads,
    )
    started = time.perf_counter()
    image = ome.open_image(out, mode="r+")
    levels = [fast_writes(image.level(i)) for i in range(len(image.level_paths))]
    ratios = level_ratios(levels)
    # Lower levels straight from the slab in memory (no second pass over level 0) when every
    # slab starts on a full downsampling window of the coarsest level; else ome.write_pyramid.
    window = int(np.prod([r[axes.index("y")] for r in ratios])) if ratios else 1
    streamed = all(s.y.start % window == 0 and s.x.start % window == 0 for s in slabs)
    pyramid = Pyramid(levels, axes, labels) if streamed and len(levels) > 1 else None
    with progress_bar(len(slabs), f"ingest scene {scene_index}") as bar, SlabWriter(threads, pyramid) as writer:
        for slab, data in _read_ahead(src, scene_index, slabs):
            writer.submit(levels[0], _target_index(axes, slab), _squeeze(data, axes), done=lambda: bar.update(1))
    level0_s = time.perf_counter() - started
    if not streamed and len(levels) > 1:
        ome.write_pyramid(out, is_label=labels)
    log.info(
        "scene %d: %.1f MB in %.1f s (%.1f MB/s), pyramid of %d level(s) %s",
        scene_index,
        scene.nbytes / 1e6,
        time.perf_counter() - started,
        scene.nbytes / 1e6 / max(time.perf_counter() - started, 1e-9),
        len(levels),
        "streamed with level 0"
        if streamed
        else f"by ome.write_pyramid in {time.perf_counter() - started - level0_s:.1f} s",
    )


def encode_threads(params: IngestParams) -> int:
    """Threads that encode chunks: ``params.threads``, or all cores given to this job (0)."""
    from ..parallel import DaskParams

    return DaskParams(n_workers=params.threads).workers
