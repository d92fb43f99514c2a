"""BioImage.IO model packages as ``predict`` models (the one place that wraps ``bioimageio.spec``).

A package (a folder or zip with ``rdf.yaml``, any format version, converted to 0.5 on reading)
becomes the same ``learn.checkpoint.Loaded`` a zarrseg checkpoint gives, so it runs through the
same tiled, blended, resumable predictor:

- its axes (any order, batch / channel optional, a z axis of size 1 for 2D models) are mapped by
  ``PackageModule``, which permutes the predictor's (B, C, [z,] y, x) tiles into the package's
  layout, pads them to a size the model accepts (and by the crop of models whose output is
  smaller than their input) and maps the output back;
- its preprocessing becomes a ``preprocess.ChainPrep`` (computed with volume statistics), its
  postprocessing the output activation (sigmoid, softmax or none), its output halo the minimum
  blending margin, and the scale / unit of its input axes the voxel size ``predict`` rescales to.

Weights: TorchScript (self-contained) first, else ``pytorch_state_dict`` with its architecture.
Model ids and URLs are resolved only with ``online``; offline nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import logging
import math
import types
import warnings
from pathlib import Path

import torch

from ..errors import ConfigError, InputError
from ..learn.checkpoint import Loaded, ModelIO
from .preprocess import ChainPrep

log = logging.getLogger(__name__)

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
UM_PER_UNIT = {"micrometer": 1.0, "nanometer": 1e-3, "millimeter": 1e3, "angstrom": 1e-4, "centimeter": 1e4}
DEFAULT_TILE = {2: 256, 3: 64}  # per axis, for packages that accept a range of sizes


def is_package(source: str | Path) -> bool:
    """A local BioImage.IO package: a folder holding ``rdf.yaml``, a zip, or the yaml itself."""
    path = Path(source)
    if path.is_dir():
        return any((path / n).is_file() for n in RDF_NAMES) or any(path.glob("*.bioimageio.yaml"))
    return path.is_file() and path.suffix.lower() in (".zip", ".yaml", ".yml")


def is_remote(source: str | Path) -> bool:
    """A BioImage.IO model id (``affable-shark``, ``huggingface/...``) or URL, not a local path."""
    text = str(source)
    if Path(text).exists():
        return False
    if text.startswith(("http://", "https://", "huggingface/")):
        return True
    suffix = Path(text).suffix.lower()
    return (
        "/" not in text and "\\" not in text and suffix not in (*CHECKPOINT_SUFFIXES, ".zip", ".yaml", ".yml")
    )


def package_sha256(source: str | Path) -> str:
    """A fingerprint of a package: its file (zip / yaml) or every file of its folder; an id as given."""
    path = Path(source)
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(path)).encode())
            h.update(hashlib.sha256(f.read_bytes()).digest())
    elif path.is_file():
        h.update(path.read_bytes())
    else:
        h.update(str(source).encode())
    return h.hexdigest()


def load_package(source: str | Path, online: bool = False) -> Loaded:
    """The model of a BioImage.IO package, or a one-line ``InputError`` naming the package."""
    if is_remote(source) and not online:
        raise InputError(
            "no such file or folder; as a BioImage.IO model id or URL it is resolved only with "
            "predict.online: true (nothing was downloaded)",
            source,
        )
    try:
        from bioimageio.spec import load_model_description
    except ImportError as err:  # pragma: no cover - a dependency of zarrseg
        raise InputError("reading BioImage.IO packages needs the bioimageio.spec package", source) from err
    try:
        descr = load_model_description(str(source), perform_io_checks=False, format_version="latest")
    except Exception as err:  # spec raises ValueError with a validation summary, or I/O errors
        raise InputError(f"not a valid BioImage.IO model package ({_first_line(err)})", source) from err
    try:
        return _loaded(descr, source, online)
    except (ValueError, KeyError, TypeError, RuntimeError, ImportError, AttributeError) as err:
        raise InputError(f"BioImage.IO package not usable by predict: {_first_line(err)}", source) from err


def _first_line(err: Exception) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return f"{type(err).__name__}: {' '.join(lines[:3])[:300]}" if lines else type(err).__name__


def _loaded(descr, source, online: bool) -> Loaded:
    if len(descr.inputs) != 1 or len(descr.outputs) != 1:
        raise ValueError(
            f"{len(descr.inputs)} inputs and {len(descr.outputs)} outputs (predict runs 1 -> 1 models)"
        )
    inp, out = descr.inputs[0], descr.outputs[0]
    in_axes = _axes(inp.axes, "input")
    out_axes = _axes(out.axes, "output")
    space = [a for a in in_axes if a.type == "space"]
    flat = [
        a for a in space if a.id == "z" and isinstance(a.size, int) and a.size == 1
    ]  # 2D model in 3D clothes
    model_space = sorted((a for a in space if a not in flat), key=lambda a: "zyx".index(str(a.id)))
    ids = [str(a.id) for a in model_space]
    valid, crop, halo = [], [], []
    for a in model_space:
        valid.append(_valid_sizes(a))
        o = _output_axis(out_axes, a, str(inp.id))
        offset = 0 if isinstance(o.size, int) else int(o.size.offset)
        if offset > 0 or offset % 2:
            raise ValueError(
                f"output axis {a.id} is {offset} voxels off its input (only an even crop is supported)"
            )
        crop.append(-offset // 2)
        halo.append(int(getattr(o, "halo", 0) or 0))
    channel_in = next((a for a in in_axes if a.type == "channel"), None)
    channel_out = next((a for a in out_axes if a.type == "channel"), None)
    in_channels = len(channel_in.channel_names) if channel_in else 1
    channels = len(channel_out.channel_names) if channel_out else 1
    activation = _activation(out.postprocessing)
    steps = [p.model_dump(mode="json", exclude_none=True) for p in inp.preprocessing]
    prep = ChainPrep([{"id": s["id"], "kwargs": s.get("kwargs", {})} for s in steps])
    prep.check()
    zarrseg = (getattr(descr.config, "model_extra", None) or {}).get("zarrseg") or {}  # our own exports
    tile = _default_tile(valid, zarrseg.get("patch_shape"))
    # strides stay multiples of a size step (a U-Net's pooling grid); fixed sizes: any stride, tiles padded to it
    divisor = [v[1] if v[1] and v[0] % v[1] == 0 else 1 for v in valid]
    net, weights_format = _weights(descr, source, online)
    module = PackageModule(
        net,
        pkg_in=[_name(a) for a in in_axes],
        pkg_out=[_name(a) for a in out_axes],
        spatial=ids,
        valid=valid,
        crop=crop,
    )
    io_ = ModelIO(
        kind=str(zarrseg.get("target") or out.id),
        channels=channels,
        activation=activation,
        ndim=len(ids),
        in_channels=in_channels,
        divisor=divisor,
        tile=tile,
        halo=halo if any(halo) else None,
    )
    name = getattr(descr, "name", "")
    log.info(
        "predict: BioImage.IO model %r (%s weights): axes %s -> %s, preprocessing %s, activation %s, halo %s",
        name,
        weights_format,
        [_name(a) for a in in_axes],
        [_name(a) for a in out_axes],
        [s["id"] for s in prep.steps],
        activation,
        halo,
    )
    return Loaded(
        module=module.eval(),
        method="bioimageio",
        model_config={
            "bioimageio": {
                "name": name,
                "id": None if descr.id is None else str(descr.id),
                "format_version": str(descr.format_version),
                "weights": weights_format,
                "source": str(source),
            }
        },
        io=io_,
        normalization=None,
        voxel_size=_voxel_size(model_space),
        path=str(source),
        preprocessing=prep,
    )


def _axes(axes, where: str) -> list:
    for a in axes:
        if a.type not in ("batch", "channel", "space"):
            raise ValueError(
                f"{where} axis {a.id!r} of type {a.type!r} is not supported (batch, channel, space)"
            )
        if a.type == "space" and str(a.id) not in ("z", "y", "x"):
            raise ValueError(f"{where} space axis {a.id!r} is not supported (z, y, x)")
    return list(axes)


def _name(axis) -> str:
    return axis.type if axis.type in ("batch", "channel") else str(axis.id)


def _valid_sizes(axis) -> tuple[int, int]:
    """(min, step) of the sizes an input axis accepts; step 0: exactly min."""
    size = axis.size
    if isinstance(size, int):
        return size, 0
    if hasattr(size, "step"):
        return int(size.min), int(size.step)
    raise ValueError(f"input axis {axis.id} takes its size from another axis, which predict does not support")


def _output_axis(out_axes, axis, input_id: str):
    for o in out_axes:
        if o.type == "space" and str(o.id) == str(axis.id):
            size = o.size
            if not isinstance(size, int) and (
                str(size.tensor_id) != input_id or str(size.axis_id) != str(axis.id)
            ):
                raise ValueError(f"output axis {o.id} is not sized by input axis {axis.id}")
            if not math.isclose(float(o.scale), float(axis.scale)):
                raise ValueError(
                    f"output axis {o.id} has another scale than its input (resolution changes unsupported)"
                )
            return o
    raise ValueError(f"the output has no space axis {axis.id}")


def _activation(post) -> str:
    ops = [p.id for p in post if not (p.id == "ensure_dtype" and str(p.kwargs.dtype).startswith("float"))]
    if not ops:
        return "identity"
    if ops in (["sigmoid"], ["softmax"]):
        if ops == ["softmax"] and str(post[[p.id for p in post].index("softmax")].kwargs.axis) != "channel":
            raise ValueError("softmax postprocessing along another axis than channel is not supported")
        return ops[0]
    raise ValueError(f"postprocessing {ops} is not supported (none, sigmoid or softmax)")


def _default_tile(valid: list[tuple[int, int]], patch) -> list[int]:
    if patch and len(patch) == len(valid):
        return [int(p) for p in patch]
    target = DEFAULT_TILE.get(len(valid), 64)
    return [m if s == 0 else m + max(0, math.ceil((target - m) / s)) * s for m, s in valid]


def _voxel_size(space) -> list[float] | None:
    """µm per voxel from the input axes' scale and unit; None when any axis has no length unit."""
    out = []
    for a in space:
        factor = UM_PER_UNIT.get(str(a.unit)) if a.unit is not None else None
        if factor is None:
            return None
        out.append(float(a.scale) * factor)
    return out


def _weights(descr, source, online: bool) -> tuple[torch.nn.Module, str]:
    w = descr.weights
    for fmt in ("torchscript", "pytorch_state_dict"):
        entry = getattr(w, fmt)
        if entry is None:
            continue
        if str(entry.source).startswith(("http://", "https://")) and not online:
            raise ValueError(
                f"its {fmt} weights are at {entry.source}: set predict.online: true to download them"
            )
        data = io.BytesIO(entry.get_reader().read())
        if fmt == "torchscript":
            with (
                warnings.catch_warnings()
            ):  # torch deprecates jit for torch.export; packages ship TorchScript
                warnings.simplefilter("ignore", FutureWarning)
                return torch.jit.load(data, map_location="cpu"), fmt
        net = _architecture(entry.architecture)
        state = torch.load(data, map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=getattr(entry, "strict", True))
        return net, fmt
    present = [k for k, v in w if v is not None]
    raise ValueError(f"no PyTorch weights (TorchScript or state dict) in the package, only {present}")


def _architecture(arch) -> torch.nn.Module:
    if hasattr(arch, "import_from"):
        fn = getattr(importlib.import_module(arch.import_from), str(arch.callable))
    else:  # a Python file of the package
        module = types.ModuleType("bioimageio_architecture")
        exec(compile(arch.get_reader().read(), str(arch.source), "exec"), module.__dict__)  # noqa: S102
        fn = getattr(module, str(arch.callable))
    return fn(**dict(arch.kwargs))


class PackageModule(torch.nn.Module):
    """The package's network seen as a zarrseg model: (B, C, *spatial) in, (B, C_out, *spatial) out.

    ``spatial`` names the predictor's spatial axes (z, y, x order); ``valid[a]`` = (min, step) of
    the sizes the network accepts (step 0: exactly min), ``crop[a]`` the voxels its output lacks on
    each side. Tiles are padded (reflection) to a valid size plus the crop, and cropped back.
    """

    def __init__(self, net, pkg_in: list[str], pkg_out: list[str], spatial: list[str], valid, crop):
        super().__init__()
        if "batch" in pkg_in and pkg_in[0] != "batch":
            raise ValueError(f"input axes {pkg_in}: the batch axis must come first")
        self.net = net
        self.pkg_in, self.pkg_out, self.spatial = pkg_in, pkg_out, spatial
        self.valid, self.crop = valid, crop

    def _padded(self, n: int, axis: int) -> int:
        low, step = self.valid[axis]
        need = n + 2 * self.crop[axis]
        if step == 0:
            if need > low:
                raise ConfigError(
                    f"predict.tile_shape: {n} along {self.spatial[axis]} exceeds the model's fixed size {low}"
                )
            return low
        return low + max(0, math.ceil((need - low) / step)) * step

    def check_tile(self, tile) -> None:
        """``ConfigError`` before anything is written when the model cannot take tiles of ``tile``."""
        for axis, n in enumerate(list(tile)[-len(self.spatial) :]):
            self._padded(int(n), axis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sizes = list(x.shape[2:])
        pads = []  # F.pad order: last axis first, (before, after)
        for axis in reversed(range(len(sizes))):
            total = self._padded(sizes[axis], axis)
            before = self.crop[axis]
            pads += [before, total - sizes[axis] - before]
        if any(pads):
            fits = all(p < s for p, s in zip(pads, [s for s in reversed(sizes) for _ in (0, 1)], strict=True))
            x = torch.nn.functional.pad(x, pads, mode="reflect" if fits else "replicate")
        y = self._from_ours(x)
        if "batch" not in self.pkg_in:
            y = torch.stack([self.net(v) for v in y])
        else:
            y = self.net(y)
        y = self._to_ours(y)
        return y[(slice(None), slice(None), *(slice(0, n) for n in sizes))]

    def _from_ours(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *spatial) -> the package's input layout (batch kept first when the package lacks it)."""
        names = ["batch", "channel", *self.spatial]
        for name in self.pkg_in:  # axes the package has and we lack: a z of size 1
            if name not in names:
                x, names = x.unsqueeze(-1), [*names, name]
        if "channel" not in self.pkg_in:
            x, names = x.squeeze(1), [n for n in names if n != "channel"]
        order = [n for n in self.pkg_in if n != "batch"]
        return x.permute(0, *[names.index(n) for n in order])

    def _to_ours(self, y: torch.Tensor) -> torch.Tensor:
        names = ["batch", *[n for n in self.pkg_out if n != "batch"]]
        if "batch" in self.pkg_out:
            y = y.permute(
                self.pkg_out.index("batch"), *[i for i, n in enumerate(self.pkg_out) if n != "batch"]
            )
        if "channel" not in names:
            y, names = y.unsqueeze(1), ["batch", "channel", *names[1:]]
        for name in [n for n in names if n not in ("batch", "channel", *self.spatial)]:  # the size-1 z
            y, names = y.squeeze(names.index(name)), [n for n in names if n != name]
        return y.permute(*[names.index(n) for n in ["batch", "channel", *self.spatial]])
