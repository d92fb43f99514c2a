"""The one block contract every blockwise stage uses.

A ``Block`` has an *inner* box (what the block owns and writes) and an *outer* box
(inner + halo, clipped to the volume: what it reads). All boxes are tuples of slices in
global voxel coordinates; ``Block.local`` crops an outer-box array to the inner box.
Block ids are the C-order index of the block in the grid, so they are stable across runs
and worker counts (needed for resumability and deterministic id offsets).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .errors import ConfigError

Box = tuple[slice, ...]


@dataclass(frozen=True)
class Block:
    id: int
    position: tuple[int, ...]
    inner: Box
    outer: Box

    @property
    def ndim(self) -> int:
        return len(self.inner)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(s.stop - s.start for s in self.inner)

    @property
    def outer_shape(self) -> tuple[int, ...]:
        return tuple(s.stop - s.start for s in self.outer)

    @property
    def begin(self) -> tuple[int, ...]:
        return tuple(s.start for s in self.inner)

    @property
    def local(self) -> Box:
        """The inner box in the coordinates of the outer box (crop an outer read to inner)."""
        return tuple(
            slice(i.start - o.start, i.stop - o.start) for i, o in zip(self.inner, self.outer, strict=True)
        )

    @property
    def colour(self) -> int:
        """Checkerboard colour (0/1) for two-pass schemes: blocks sharing a face differ."""
        return int(sum(self.position) % 2)


class BlockGrid:
    """A regular grid of blocks over ``shape`` with an optional ``halo``."""

    def __init__(self, shape: Sequence[int], block_shape: Sequence[int], halo: Sequence[int] | int = 0):
        self.shape = tuple(int(s) for s in shape)
        if len(block_shape) != len(self.shape):
            raise ConfigError(
                f"block_shape {list(block_shape)} has {len(block_shape)} dimensions, the volume has {len(self.shape)}"
            )
        self.block_shape = tuple(min(int(b), s) for b, s in zip(block_shape, self.shape, strict=True))
        if any(b <= 0 for b in self.block_shape):
            raise ConfigError(f"block_shape must be positive, got {list(block_shape)}")
        halo = [halo] * len(self.shape) if isinstance(halo, int) else list(halo)
        if len(halo) != len(self.shape):
            raise ConfigError(f"halo {halo} does not match the {len(self.shape)}-d volume")
        self.halo = tuple(int(h) for h in halo)
        if any(h < 0 for h in self.halo):
            raise ConfigError(f"halo must be >= 0, got {list(self.halo)}")
        self.grid_shape = tuple(-(-s // b) for s, b in zip(self.shape, self.block_shape, strict=True))

    def __len__(self) -> int:
        return int(np.prod(self.grid_shape))

    def __iter__(self) -> Iterator[Block]:
        return iter(self.blocks)

    def __getitem__(self, block_id: int) -> Block:
        return self.blocks[block_id]

    @cached_property
    def blocks(self) -> list[Block]:
        out = []
        for block_id, pos in enumerate(itertools.product(*(range(g) for g in self.grid_shape))):
            out.append(self._make(block_id, pos))
        return out

    def _make(self, block_id: int, pos: tuple[int, ...]) -> Block:
        inner, outer = [], []
        for p, b, h, s in zip(pos, self.block_shape, self.halo, self.shape, strict=True):
            start, stop = p * b, min((p + 1) * b, s)
            inner.append(slice(start, stop))
            outer.append(slice(max(start - h, 0), min(stop + h, s)))
        return Block(block_id, tuple(pos), tuple(inner), tuple(outer))

    def block_at(self, position: Sequence[int]) -> Block:
        return self.blocks[int(np.ravel_multi_index(tuple(position), self.grid_shape))]

    def face_neighbours(self, block: Block) -> list[tuple[int, Block]]:
        """(axis, neighbour) for the blocks after ``block`` along each axis (each face once)."""
        out = []
        for axis in range(len(self.shape)):
            pos = list(block.position)
            pos[axis] += 1
            if pos[axis] < self.grid_shape[axis]:
                out.append((axis, self.block_at(pos)))
        return out

    def with_halo(self, halo: Sequence[int] | int) -> BlockGrid:
        return BlockGrid(self.shape, self.block_shape, halo)

    def face_slices(self) -> list[tuple[int, int]]:
        """(axis, coordinate) of every internal block face: the first voxel of the next block."""
        return [
            (axis, k * b)
            for axis, (b, g) in enumerate(zip(self.block_shape, self.grid_shape, strict=True))
            for k in range(1, g)
        ]


def check_halo(block_shape: Sequence[int], halo: Sequence[int]) -> None:
    """Blocks must be larger than their halo, otherwise a block's read is mostly neighbours."""
    for b, h in zip(block_shape, halo, strict=True):
        if h >= b:
            raise ConfigError(f"block_shape {list(block_shape)} must be larger than halo {list(halo)} on every axis")
