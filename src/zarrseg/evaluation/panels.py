"""Side-by-side figures: original | one label image per method | ground truth (thesis Tables 3.5-3.7).

One row of panels per image, so a reader sees at a glance where colour clustering, DINO feature
clustering, fine-tuned features and U-Nets agree with the annotation. Planes are read from
OME-Zarr at display resolution (a pyramid level or a strided read), so huge images never load
whole; 3D volumes show one z-slice (the middle one by default).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .. import ome
from ..errors import ConfigError, InputError, OutputError
from ..params import check_percentiles
from ..runs import check_output

log = logging.getLogger(__name__)


@dataclass
class PanelParams:
    """Parameters of ``zarrseg panels`` (config section ``panels``)."""

    max_size: int = 512  # longest side drawn per panel (pixels); larger planes are subsampled
    z: int | None = None  # 3D: the slice drawn (null: the middle one)
    channel: int = 0  # channel of the original image
    percentiles: tuple[float, float] = (1.0, 99.8)  # display range of the original image
    panel_inches: float = 3.0  # width (and height) of one panel in the figure, inches
    dpi: int = 100  # resolution of the PNG
    columns: int = 6  # panels per row of the figure (more panels wrap onto further rows)
    # workflow: draw the side-by-side figure of every scored sample of a grid with rows (an
    # experiment of hundreds of cells per image, e.g. bsds300_table1, sets false)
    enabled: bool = True

    def validate(self) -> None:
        if self.columns < 1:
            raise ConfigError(f"panels.columns must be >= 1, got {self.columns}")
        if self.max_size < 8:
            raise ConfigError(f"panels.max_size must be >= 8, got {self.max_size}")
        if not 0.5 <= self.panel_inches <= 100 or not 10 <= self.dpi <= 2400:
            raise ConfigError(f"panels.panel_inches must be in [0.5, 100] and panels.dpi in [10, 2400], "
                              f"got {self.panel_inches} and {self.dpi}")
        check_percentiles(*self.percentiles, "panels.percentiles")


@dataclass
class Panel:
    title: str
    data: np.ndarray  # 2D plane
    kind: Literal["image", "labels"] = "labels"


def read_plane(path: str | Path, params: PanelParams, channel: int = 0) -> np.ndarray:
    """One 2D plane of an OME-Zarr image at about ``max_size`` pixels on its longest side."""
    image = ome.open_image(path)
    view = ome.SpatialView.of(image, channel=channel)
    if view.ndim not in (2, 3):
        raise InputError(f"expected a 2D or 3D image, got spatial shape {view.shape}", path)
    full = view.shape
    level = 0
    for index in range(1, len(image.level_paths)):  # the finest pyramid level that is still big enough
        shape = ome.SpatialView.of(image, channel=channel, level=index).shape
        if max(shape[-2:]) >= params.max_size:
            level = index
    view = ome.SpatialView.of(image, channel=channel, level=level)
    step = max(1, int(np.ceil(max(view.shape[-2:]) / params.max_size)))
    box: tuple[slice | int, ...] = (slice(None, None, step), slice(None, None, step))
    if view.ndim == 3:
        z = params.z if params.z is not None else full[0] // 2
        if not 0 <= z < full[0]:
            raise InputError(f"slice z={z} is outside the {full[0]} slices", path)
        z = min(view.shape[0] - 1, z * view.shape[0] // full[0])
        box = (slice(z, z + 1), *box)
    plane = np.asarray(view[box])
    return plane.reshape(plane.shape[-2:])


def _label_colours(plane: np.ndarray) -> np.ndarray:
    """RGB of a label plane: 0 black, each id a colour of a 60-colour palette chosen by a hash of
    the id (stable across panels; consecutive ids, often neighbours, get unrelated colours), and
    the borders between touching segments drawn dark, so a split shows even where two segments
    happen to share a colour (a 10-colour cycle left 19 of 233 touching pairs looking merged)."""
    from matplotlib import colormaps

    palette = np.concatenate([np.asarray(colormaps[name].colors)[:, :3] for name in ("tab20", "tab20b", "tab20c")])
    ids = plane.astype(np.int64)
    rgb = palette[((ids * 2654435761) >> 7) % len(palette)]  # Knuth's multiplicative hash
    rgb[ids == 0] = 0.0
    border = np.zeros(ids.shape, dtype=bool)
    border[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    border[1:, :] |= ids[1:, :] != ids[:-1, :]
    border &= ids != 0  # the edge of the background stays the segment's colour
    if np.unique(ids).size > 3:  # instances: outline them; two- or three-class images stay flat
        rgb[border] *= 0.35
    return rgb


def draw_panels(panels: Sequence[Panel], out: str | Path, params: PanelParams | None = None) -> Path:
    """Draw ``panels`` left to right, ``columns`` per row, into the PNG ``out`` (written atomically)."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    params = params or PanelParams()
    out = Path(out)
    n_cols = min(params.columns, len(panels))
    n_rows = -(-len(panels) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(params.panel_inches * n_cols, (params.panel_inches + 0.5) * n_rows),
                             squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    wrap = max(12, int(params.panel_inches * 11))  # characters of a 9-pt title line across one panel
    for ax, panel in zip(axes.flat, panels, strict=False):
        if panel.kind == "image":
            data = panel.data.astype(np.float32)
            finite = np.isfinite(data)
            if not finite.all():  # a NaN made the whole display range NaN: a blank panel
                log.warning("panels: %d of %d pixels of %r are NaN or Inf; drawn black", data.size - int(finite.sum()),
                            data.size, panel.title)
            lo, hi = np.percentile(data[finite], params.percentiles) if finite.any() else (0.0, 1.0)
            shown = np.clip((np.where(finite, data, lo) - lo) / max(hi - lo, 1e-6), 0, 1)
            ax.imshow(shown, cmap="gray", interpolation="nearest")
        else:
            ax.imshow(_label_colours(panel.data), interpolation="nearest")
        ax.set_title("\n".join(textwrap.wrap(panel.title, wrap)) or panel.title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    try:
        with ome.atomic_output(out) as tmp:
            fig.savefig(tmp, dpi=params.dpi, format="png")
    finally:
        plt.close(fig)
    return out


def side_by_side(
    image: str | Path,
    labels: Sequence[tuple[str, str | Path]],
    out: str | Path,
    ground_truth: str | Path | None = None,
    params: PanelParams | None = None,
) -> Path:
    """original | each (title, label image) | ground truth, for one image, into the PNG ``out``."""
    params = params or PanelParams()
    if Path(out).is_dir():
        raise OutputError("is a folder; give the PNG file to write", out)
    check_output(out)  # before reading anything
    panels = [Panel("original", read_plane(image, params, params.channel), "image")]
    shown = [*labels, *([("ground truth", ground_truth)] if ground_truth is not None else [])]
    size = ome.SpatialView.of(ome.open_image(image), channel=params.channel).shape
    for title, path in shown:
        other = ome.SpatialView.of(ome.open_image(path)).shape
        if other != size:
            raise InputError(f"spatial shape {list(other)} differs from the image's {list(size)}", path)
        plane = read_plane(path, params)
        if plane.dtype.kind not in "uib":
            raise InputError(f"not a label image (pixel type {plane.dtype}); panels colour label images", path)
        panels.append(Panel(title, plane))
    log.info("panels: %d panels -> %s", len(panels), out)
    return draw_panels(panels, out, params)
