"""Recreate the embedded sample from the PlantSeg test crop (run from the repo root).

Source: kreshuklab/plant-seg @9d74806, tests/resources/sample_ovule.h5 (MIT licence),
copied read-only to ../shared/data/plantseg_crops/. Data: Wolny et al. 2020, eLife 9:e57613.
"""

from pathlib import Path

import h5py
import tifffile

SRC = Path("../shared/data/plantseg_crops/sample_ovule.h5")
OUT = Path("data/sample")

with h5py.File(SRC, "r") as f:
    raw, labels = f["raw"][:], f["label"][:]
    voxel = [float(v) for v in f["raw"].attrs["element_size_um"]]  # z, y, x in micrometre

meta = {"axes": "ZYX", "PhysicalSizeZ": voxel[0], "PhysicalSizeY": voxel[1], "PhysicalSizeX": voxel[2],
        "PhysicalSizeZUnit": "µm", "PhysicalSizeYUnit": "µm", "PhysicalSizeXUnit": "µm",
        "Channel": {"Name": ["membranes"]}}
tifffile.imwrite(OUT / "ovule.ome.tif", raw, ome=True, metadata=meta, compression="zlib")
tifffile.imwrite(OUT / "ovule_labels.tif", labels, ome=True, metadata={**meta, "Channel": {"Name": ["cells"]}},
                 compression="zlib")
print("wrote", OUT / "ovule.ome.tif", raw.shape, raw.dtype, "voxel", voxel)
