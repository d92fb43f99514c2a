"""Peak memory of one local-contrastive loss step (Eq. 3.4, forward + backward) by pixel sampling.

Embeddings of a batch of 8 crops of 320 x 320 (two views each: 16 maps, 128 channels, as the
U-Net's 1 x 1 head gives them) with ~20 % foreground; each setting runs in a fresh subprocess
and reports the growth of its peak RSS over the RSS with the embeddings and their gradient
allocated (the loss's own memory) and the wall time. ``full`` (every pixel, stride 1) at 320 x 320 is 1.6 M pixels:
its similarity matrix alone would be 10 TB, and even row-chunked it is 2.6e12 pairs, so full
pixels are measured on smaller crops (48 .. 96 px) where its growth (N^2 without chunks) shows,
and at 320 x 320 with ``--chunks K``: the foreground (the anchors) is cut to K row chunks of the
row-chunked loss. Every chunk is the same (rows x all pixels) computation, run one after another
and recomputed in the backward pass, so the peak of K >= 3 chunks is the peak of the whole step
(the embeddings, their normalised copy and the accumulated gradient are allocated in the first
ones); the time of the whole step at ~20 % foreground is extrapolated from the time per chunk.

    python benchmarks/local_contrast_memory.py [--dim 128] [--chunks 4] [--full-only]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(sampling: str, size: int, stride: int, block: int, dim: int, max_pairs: int, chunks: int = 0) -> dict:
    import psutil
    import torch

    from zarrseg.methods.contrastive.losses import local_contrastive

    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(16, dim, size, size, generator=gen, requires_grad=True)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centres = torch.rand(16, 6, 2, generator=gen) * size
    labels = torch.zeros(16, size, size, dtype=torch.long)
    for v in range(16):
        for cy, cx in centres[v]:
            labels[v][(yy - cy) ** 2 + (xx - cx) ** 2 < (0.1 * size) ** 2] = 1
    foreground = float(labels.float().mean())
    pixels = labels[:, ::stride, ::stride].numel() if sampling == "stride" else 0
    rows = max(1, max_pairs // max(pixels, 1))
    if chunks:  # only K row chunks of anchors: the same per-chunk work, fewer chunks
        if sampling != "stride":
            raise SystemExit("--chunks needs stride sampling")
        keep = torch.zeros(labels.numel(), dtype=torch.bool)
        sub = torch.zeros_like(labels, dtype=torch.bool)
        sub[:, ::stride, ::stride] = True
        anchors = torch.nonzero((labels > 0).reshape(-1) & sub.reshape(-1)).squeeze(1)[: chunks * rows]
        keep[anchors] = True
        labels = labels * keep.reshape(labels.shape)
    feats.grad = torch.zeros_like(feats)  # the embeddings' gradient is the network's, not the loss's
    base = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    loss = local_contrastive(feats, labels, 0.07, sampling, stride, block, max_pairs)
    loss.backward()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = {"loss_mb": max(0, peak - base) / 2**20, "seconds": seconds, "foreground": foreground}
    if chunks:  # the whole step: one chunk per `rows` anchors at the original foreground
        out.update(chunks=chunks, rows=rows, full_chunks=-(-round(foreground * pixels) // rows))
    return out


def run(args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, __file__, "child", *args], capture_output=True, text=True, env=env)
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", nargs="?", default="run")
    parser.add_argument("--sampling", default="stride")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--block", type=int, default=16)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--max-pairs", type=int, default=1 << 24)
    parser.add_argument("--chunks", type=int, default=4,
                        help="full pixels at 320 x 320: anchor row chunks to run (0: skip that row)")
    parser.add_argument("--full-only", action="store_true", help="only the full-pixel 320 x 320 row")
    a = parser.parse_args()
    if a.step == "child":
        print(json.dumps(child(a.sampling, a.size, a.stride, a.block, a.dim, a.max_pairs, a.chunks)))
        return
    n = 2 * 8  # views
    settings = [("block", 320, 1, 16), ("stride", 320, 8, 16), ("stride", 320, 4, 16)]
    settings += [("stride", s, 1, 16) for s in (48, 64, 96)]
    settings = [] if a.full_only else settings
    print(f"batch of 8 crops (16 views), {a.dim}-d embeddings; 'pairs' = entries of one unchunked similarity matrix")
    print(f"{'sampling':>16} {'size':>5} {'pixels/set':>10} {'pairs':>10} {'unchunked MB':>12} {'loss MB':>8} {'s':>7}")
    for sampling, size, stride, block in settings:
        pixels = n * block * block if sampling == "block" else n * (size // stride) ** 2
        r = run(["--sampling", sampling, "--size", str(size), "--stride", str(stride), "--block", str(block),
                 "--dim", str(a.dim), "--max-pairs", str(a.max_pairs), "--chunks", "0"])
        name = f"block {block}" if sampling == "block" else ("full" if stride == 1 else f"stride {stride}")
        print(f"{name:>16} {size:>5} {pixels:>10} {pixels ** 2:>10.2e} {pixels ** 2 * 4 / 2**20:>12.0f} "
              f"{r.get('loss_mb', float('nan')):>8.0f} {r.get('seconds', float('nan')):>7.1f}", flush=True)
    full = n * 320 * 320
    if not a.chunks:
        print(f"{'full':>16} {320:>5} {full:>10} {full ** 2:>10.2e} {full ** 2 * 4 / 2**20:>12.0f} {'(not run)':>8}")
        return
    runs = [run(["--sampling", "stride", "--size", "320", "--stride", "1", "--dim", str(a.dim),
                 "--max-pairs", str(a.max_pairs), "--chunks", str(k)]) for k in (a.chunks, 2 * a.chunks)]
    if any("error" in r for r in runs):
        print(f"{'full':>16} {320:>5} failed: {[r.get('error') for r in runs]}")
        return
    small, large = runs
    per_chunk = (large["seconds"] - small["seconds"]) / a.chunks  # marginal: without the fixed part
    whole = small["seconds"] + per_chunk * (small["full_chunks"] - a.chunks)
    print(f"{'full':>16} {320:>5} {full:>10} {full ** 2:>10.2e} {full ** 2 * 4 / 2**20:>12.0f} "
          f"{small['loss_mb']:>8.0f} {'-':>7}  ({a.chunks} of {small['full_chunks']} chunks of {small['rows']} "
          f"anchors; {large['loss_mb']:.0f} MB with {2 * a.chunks}; {per_chunk:.1f} s per chunk, "
          f"whole step ~{whole / 3600:.0f} h)")


if __name__ == "__main__":
    main()
