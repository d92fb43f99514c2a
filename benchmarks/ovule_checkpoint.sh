#!/usr/bin/env bash
# A small 3D U-Net boundary checkpoint (< 2 MB) trained by `zarrseg train` on the PlantSeg ovule
# crop (plantseg_crops/sample_ovule.h5, MIT; Wolny et al. 2020), for the default workflow to use with
# predict.method=unet. Usage: benchmarks/ovule_checkpoint.sh [WORKDIR] (default /tmp/zarrseg_ovule)
set -euo pipefail
WORK=${1:-/tmp/zarrseg_ovule}
DATA=${ZARRSEG_SHARED_DATA:-$(dirname "$0")/../../shared/data}/plantseg_crops/sample_ovule.h5
ZARRSEG=${ZARRSEG:-"python -m zarrseg"}
mkdir -p "$WORK"
[ -e "$WORK/raw.ome.zarr" ] || $ZARRSEG ingest "$DATA:raw" -o "$WORK/raw.ome.zarr"
[ -e "$WORK/label.ome.zarr" ] || $ZARRSEG ingest "$DATA:label" --labels -o "$WORK/label.ome.zarr"
OMP_NUM_THREADS=1 $ZARRSEG train -o "$WORK/model" -v --params '{
  "train": [{"image": "'"$WORK"'/raw.ome.zarr", "labels": "'"$WORK"'/label.ome.zarr", "roi": "0:24"}],
  "val": [{"image": "'"$WORK"'/raw.ome.zarr", "labels": "'"$WORK"'/label.ome.zarr", "roi": "24:32"}],
  "model": {"ndim": 3, "f_maps": 8, "depth": 3, "norm": "batch"},
  "normalization": {"method": "percentile", "lower": 1, "upper": 99.5},
  "patch_shape": [16, 64, 64], "batch_size": 2, "iterations": 1500, "validate_every": 50,
  "optimizer": {"lr": 0.001, "lr_patience": 4}, "early_stopping": 0, "max_cpu_minutes": 12,
  "num_workers": 0, "threads": 1, "seed": 0}'
ls -la "$WORK/model"
# ship the weights without optimizer state (what `zarrseg predict` needs): ~0.4 MB
python -c "from zarrseg.methods.unet.checkpoint import slim_checkpoint as s; s('$WORK/model/best.pt', '$WORK/ovule_boundaries_3d.pt')"
