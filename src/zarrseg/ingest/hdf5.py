"""HDF5 datasets (``file.h5:dataset``) through h5py, e.g. EM volumes, boundary maps and labels.

h5py reads hyperslabs, so each slab decodes only the HDF5 chunks it overlaps. The voxel
size comes from the ``element_size_um`` attribute (the convention of ilastik, PlantSeg and
elf) when present.
"""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np

from ..errors import InputError
from .layout import ArrayLayout
from .source import Scene, Source, canonical_axes

H5_SUFFIX = re.compile(r"^(?P<file>.+\.(?:h5|hdf5|hdf|he5))(?::(?P<dataset>.*))?$", re.IGNORECASE)
MAGIC = b"\x89HDF\r\n\x1a\n"
DEFAULT_AXES = {2: "YX", 3: "ZYX", 4: "CZYX", 5: "TCZYX"}


def split_h5_spec(spec: str) -> tuple[Path, str | None] | None:
    """``'a/b.h5:raw'`` -> (Path('a/b.h5'), 'raw'); None when ``spec`` is not an HDF5 path."""
    match = H5_SUFFIX.match(spec)
    if not match:
        return None
    return Path(match["file"]), (match["dataset"] or None)


class Hdf5Source(Source):
    reader = "h5py"
    reader_version = h5py.__version__

    def __init__(self, path: Path, dataset: str | None, axes: str | None = None):
        super().__init__(path)
        try:
            self._file = h5py.File(path, "r")
        except OSError as err:
            raise InputError(f"not a readable HDF5 file ({' '.join(str(err).split())})", path) from err
        try:
            self.dataset_name = dataset or self._only_dataset()
            node = self._file.get(self.dataset_name)
            if not isinstance(node, h5py.Dataset):
                raise InputError(
                    f"has no dataset {self.dataset_name!r} (datasets: "
                    f"{', '.join(self._datasets()) or 'none'})",
                    path,
                )
            self._ds = node
            shape = tuple(int(s) for s in node.shape)
            if len(shape) not in DEFAULT_AXES and axes is None:
                raise InputError(
                    f"dataset {self.dataset_name!r} has {len(shape)} dimensions {shape}; name its "
                    "axes with --set axes=...",
                    path,
                )
            letters = canonical_axes(DEFAULT_AXES.get(len(shape), "Q" * len(shape)), shape, path, axes)
            self._layout = ArrayLayout(letters, shape)
            voxel = {}
            element = node.attrs.get("element_size_um")
            if element is not None:
                spatial = [a for a in letters if a in "zyx"]
                values = [float(v) for v in np.ravel(element)]
                if len(values) == len(spatial):
                    voxel = {a: v for a, v in zip(spatial, values, strict=True) if v > 0}
            self.scenes.append(
                Scene(
                    index=0,
                    name=self.dataset_name.strip("/"),
                    sizes=self._layout.sizes(),
                    dtype=np.dtype(node.dtype).newbyteorder("="),
                    voxel_size=voxel,
                    extra={"hdf5_dataset": self.dataset_name},
                )
            )
        except BaseException:
            self._file.close()
            raise

    def _datasets(self) -> list[str]:
        names: list[str] = []
        self._file.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        return names

    def _only_dataset(self) -> str:
        names = self._datasets()
        if len(names) != 1:
            raise InputError(
                f"holds {len(names)} datasets ({', '.join(names) or 'none'}); choose one as "
                "'file.h5:dataset'",
                self.path,
            )
        return names[0]

    def read(self, scene: int, t: int, c: slice, z: slice, y: slice, x: slice) -> np.ndarray:
        try:
            return self._layout.read(self._ds, t, c, z, y, x)
        except OSError as err:
            raise InputError(
                f"cannot read dataset {self.dataset_name!r} ({' '.join(str(err).split())})", self.path
            ) from err

    def close(self) -> None:
        self._file.close()
