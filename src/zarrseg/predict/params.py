"""Parameters of ``zarrseg predict`` (config section ``predict``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigError
from ..normalize import Normalization
from ..ome import Compression
from ..parallel import DaskParams


@dataclass
class PredictParams:
    """Dense prediction: the stain intensity itself (``intensity``) or a trained model (``model``).

    ``model`` runs any registered method's checkpoint (U-Net boundaries, embeddings, soft cluster
    assignments, ...): channels and output activation come from the checkpoint. ``unet`` is the
    former name of ``model`` and means the same.
    """

    method: Literal["intensity", "model", "unet"] = "intensity"
    channel: int = 0  # channel of a multi-channel image holding the membrane stain
    timepoint: int = 0
    # --- intensity method (the model method takes its normalisation from the checkpoint)
    normalization: Normalization = field(default_factory=Normalization)
    sigma: float = 0.0  # Gaussian smoothing in voxels (0: none)
    invert: bool = False  # EM: membranes are dark
    # --- model method
    checkpoint: str | None = None  # a 'zarrseg train' checkpoint, a BioImage.IO package (folder, rdf.yaml or zip) or, with online, a BioImage.IO model id; the --checkpoint flag wins
    online: bool = False  # resolve BioImage.IO model ids / URLs over the network (off: nothing is downloaded)
    rescale: bool = True  # resample the input to the voxel size the model was trained at, and the output back (off: the image grid as is, warned when the sizes differ by more than 1.5x)
    tile_shape: list[int] | None = None  # default: the checkpoint's training patch shape
    overlap: float = 0.5  # fraction of the tile shared by neighbouring tiles
    blend: Literal["gaussian", "cosine"] = "gaussian"
    margin: float = (
        0.125  # fraction of the tile at inner tile borders given zero weight (must be <= overlap / 2)
    )
    batch_size: int = 4
    device: str = "auto"  # auto: cuda if available, else cpu; or cpu, cuda, cuda:1
    amp: bool = True  # automatic mixed precision on CUDA
    # DataLoader processes prefetching input blocks. null: 2 on CUDA (the GPU never waits on I/O), 0 on
    # CPU (there prefetch processes take cores from the forwards: 1.38x vs 1.16x overhead on 2 cores)
    num_workers: int | None = None
    dtype: Literal["float16", "float32"] = "float32"
    # map: the model's channels; argmax: one uint16 label image, 1 + the channel with the highest
    # value (soft class models such as the W-Net: K times less to write than the map)
    output: Literal["map", "argmax"] = "map"
    # --- blockwise execution and storage
    block_shape: list[int] | None = (
        None  # output block; default: a multiple of chunks (intensity) / tiles (model)
    )
    chunks: list[int] = field(default_factory=lambda: [64, 256, 256])
    compression: Compression = field(default_factory=Compression)
    dask: DaskParams = field(default_factory=DaskParams)

    @property
    def uses_model(self) -> bool:
        return self.method in ("model", "unet")

    def validate(self) -> None:
        if self.sigma < 0:
            raise ConfigError(f"predict.sigma must be >= 0, got {self.sigma}")
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"predict.overlap must be in [0, 1), got {self.overlap}")
        if not 0.0 <= self.margin < 0.5:
            raise ConfigError(f"predict.margin must be in [0, 0.5), got {self.margin}")
        if self.batch_size < 1:
            raise ConfigError(f"predict.batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"predict.num_workers must be >= 0, got {self.num_workers}")
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"predict.device must be auto, cpu or cuda[:N], got {self.device!r}")
        for name in ("tile_shape", "block_shape", "chunks"):
            value = getattr(self, name)
            if value is not None and any(v <= 0 for v in value):
                raise ConfigError(f"predict.{name} must be positive, got {value}")
