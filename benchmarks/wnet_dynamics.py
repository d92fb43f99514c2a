"""How a W-Net's labels evolve during training on one BSDS300 image: labels used and V-measure per epoch.

Leng et al. (§3.1): "our sparse model starts from homogeneity ~ 1 and completeness ~ 0 at the
beginning of training" and merges segments as it learns. This script trains the ``wnet`` method
on one ingested BSDS image through the method's own hooks (``WNetMethod.build`` / ``step``, Adam,
the reduced protocol's sizes unless told otherwise) and after every epoch segments the image the
way the exported model does (the encoder with the training image's BatchNorm statistics, argmax
over K). It prints, per epoch: the labels used, those covering >= 1 % of the image, and
homogeneity / completeness / V-measure as the mean over the image's annotators (the evaluate
stage's scores, as `bsds300_baselines.py` computes them).

    python benchmarks/bsds300_table1.py reduced ...   # once: the ingested images (WORK/ingest)
    python benchmarks/wnet_dynamics.py bsds_109053 --type Sparse-SimCon-Patch --beta 1 --epochs 10
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
INGEST = REPO / "work" / "bsds300_reduced" / "ingest"


def annotator_scores(labels: np.ndarray, truths: np.ndarray) -> dict[str, float]:
    """Homogeneity, completeness and V-measure, mean over the annotators, as the evaluate stage scores them."""
    from zarrseg.evaluation import combine_annotators
    from zarrseg.evaluation.contingency import Contingency
    from zarrseg.evaluation.score import EvaluateParams, score_table

    evaluate = EvaluateParams(kind="clustering", metrics=["homogeneity", "completeness", "v_measure"])
    labels = labels.astype(np.uint32)
    per = [score_table(Contingency.from_arrays(labels, t.astype(np.uint32)), evaluate) for t in truths]
    return combine_annotators(per)["mean"]


def segment(method) -> np.ndarray:
    """Argmax labels of the first training image, as the exported encoder gives them."""
    import torch

    encoder = method.calibrated_encoder()
    t = method.terms[0]
    h, w = t.x.shape[-2:]
    with torch.no_grad():
        z = encoder(t.padded[None])[0, :, :h, :w]
    return z.argmax(0).cpu().numpy()


def use_code_losses(method_cls) -> None:
    """Swap the sparse terms for those of the authors' code (stfc-sciml/sp-wnet-seg,
    ``train_sp_wnet``): similarity = cross entropy of the *pixel logits* against the argmax of their
    superpixel's mean logits, continuity and N-cut on the superpixel means of the *logits*. The
    method follows the paper (Eq. 5-7 on the means of ``f``); this is for comparison only."""
    import torch
    import torch.nn.functional as F

    from zarrseg.methods.wnet import losses as L

    def segmentation(self, t, z, f):
        if self.params.graph != "sparse":
            return original(self, t, z, f)
        wts, out = self.weights, {}
        z_hat = L.superpixel_means(z, t.labels, t.sizes)  # (N, K) mean logits
        if wts["cut"]:
            out["cut"] = L.sparse_ncut(torch.softmax(z_hat, dim=1), t.weights, t.degree)
        if wts["sim"]:
            target = z_hat.argmax(dim=1).detach()[t.labels].reshape(z.shape[1:])
            out["sim"] = F.cross_entropy(z[None], target[None])
        if wts["con"]:
            out["con"] = L.sparse_continuity(z_hat, t.adjacency)
        return out

    original = method_cls._segmentation
    method_cls._segmentation = segmentation


def describe(labels: np.ndarray) -> tuple[int, int]:
    _, counts = np.unique(labels, return_counts=True)
    return int(counts.size), int((counts >= 0.01 * labels.size).sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sample", help="an ingested BSDS sample id, e.g. bsds_109053")
    parser.add_argument("--type", default="Sparse-SimCon-Patch", help="Leng et al. model type")
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--f-maps", type=int, default=8)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=YAML",
                        help="more wnet parameters, e.g. --set tau=1 (repeatable)")
    parser.add_argument("--code-losses", action="store_true",
                        help="sparse terms as the authors' code computes them (pixel-logit similarity, logit continuity)")
    parser.add_argument("--ingest", type=Path, default=INGEST)
    args = parser.parse_args(argv)

    import torch
    import yaml
    import zarr

    from zarrseg.learn.loop import Context
    from zarrseg.methods.wnet.method import WNetMethod
    from zarrseg.methods.wnet.params import WNetParams, model_type_values
    from zarrseg.params import load_params

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    sample = args.ingest / args.sample
    truths = zarr.open(str(sample / "ground_truth.ome.zarr" / "0"), mode="r")[...]
    values = {
        "images": [str(sample / "image.ome.zarr")],
        **model_type_values(args.type),
        "beta": args.beta,
        "epochs": args.epochs,
        "model": {"n_classes": 20, "f_maps": args.f_maps, "depth": args.depth},
        "patches": {"sizes": [64, 48, 32], "counts": [16, 32, 64]},  # config/bsds300_reduced.yaml
        "loop": {"threads": 1, "device": "cpu", "tensorboard": False, "seed": args.seed},
    }
    for item in args.set:
        key, _, text = item.partition("=")
        values[key] = yaml.safe_load(text)
    params = load_params(WNetParams, values)
    params.validate()
    if args.code_losses:
        use_code_losses(WNetMethod)
    method = WNetMethod(params, Context(params.loop, Path(".")))
    parts = method.build()
    method.modules = parts.modules
    optimizer = parts.optimizer
    variant = " (the authors' code's sparse terms)" if args.code_losses else ""
    print(f"{args.sample} {params.model_type} beta {args.beta:g}{variant} {method.describe()}")
    print("epoch  steps  labels  >=1%   homog  compl  V      seconds")

    def report(epoch: int, steps: int, t0: float) -> None:
        labels = segment(method)
        n, big = describe(labels)
        s = annotator_scores(labels, truths)
        print(f"{epoch:5d}  {steps:5d}  {n:6d}  {big:4d}  {s['homogeneity']:.3f}  {s['completeness']:.3f}  "
              f"{s['v_measure']:.3f}  {time.perf_counter() - t0:7.1f}", flush=True)

    t0 = time.perf_counter()
    method.model.train()
    report(0, 0, t0)
    batches = method.batches(0)
    step = 0
    for epoch in range(1, args.epochs + 1):
        for _ in range(params.batches_per_epoch):
            out = method.step(next(batches), step)
            optimizer.zero_grad()
            out["loss"].backward()
            optimizer.step()
            step += 1
        report(epoch, step, t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
