"""zarrseg: light-microscopy acquisitions -> OME-Zarr -> segmentations -> metrics tables."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("zarrseg")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"
