"""Index an N-d source array (TIFF via zarr, HDF5 dataset) with canonical t/z/y/x boxes.

Both array-like readers keep the file's own axis order; ``ArrayLayout`` turns a request
``(t, c, z, y, x)`` into one lazy indexing call on the source (only the needed strips/tiles or
HDF5 chunks are decoded) and returns ``(C, Z, Y, X)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ArrayLayout:
    letters: str  # one canonical letter (t/c/z/y/x) or '-' per source axis
    shape: tuple[int, ...]

    def sizes(self) -> dict[str, int]:
        sizes = dict.fromkeys("tczyx", 1)
        for letter, size in zip(self.letters, self.shape, strict=True):
            if letter != "-" and size > 1:
                sizes[letter] = size
            elif letter in "yx":
                sizes[letter] = size
        return sizes

    def _kept(self, i: int) -> bool:
        return self.letters[i] != "-" and (self.shape[i] > 1 or self.letters[i] in "yx")

    def read(self, array, t: int, c: slice, z: slice, y: slice, x: slice) -> np.ndarray:
        index: list = []
        out_letters: list[str] = []
        for i, letter in enumerate(self.letters):
            if not self._kept(i):
                index.append(0)
            elif letter == "t":
                index.append(t)
            else:
                index.append({"c": c, "z": z, "y": y, "x": x}[letter])
                out_letters.append(letter)
        data = np.asarray(array[tuple(index)])
        if not data.dtype.isnative:  # big-endian TIFF/HDF5: Zarr gets native-endian pixels
            data = data.astype(data.dtype.newbyteorder("="))
        for letter in "czyx":
            if letter not in out_letters:
                data = data[np.newaxis]
                out_letters.insert(0, letter)
        order = [out_letters.index(letter) for letter in "czyx"]
        return np.ascontiguousarray(data.transpose(order))
