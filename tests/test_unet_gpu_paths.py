"""GPU code paths exercised on the CPU: DDP (gloo, 2 processes), the out-of-memory probe, bfloat16 autocast."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import unet_params, write_image
from skimage.segmentation import find_boundaries

from zarrseg.errors import ConfigError
from zarrseg.learn.distributed import launch
from zarrseg.learn.loop import Loop, run_worker, spawn_world, unwrap
from zarrseg.learn.registry import get_method
from zarrseg.methods.unet.memory import fit_to_memory, shrink_patch
from zarrseg.methods.unet.models import UNet
from zarrseg.methods.unet.train_params import TrainParams
from zarrseg.params import load_params


@pytest.fixture
def data(tmp_path, rng):
    lab = np.zeros((2, 32, 32), np.uint32)
    lab[:, :, :16], lab[:, :, 16:] = 1, 2
    lab[:, 20:, :] = 3
    img = (find_boundaries(lab).astype(np.float32) * 100 + rng.normal(50, 10, lab.shape)).astype(np.float32)
    return write_image(tmp_path / "img.ome.zarr", img, "zyx", [1, 32, 32]), write_image(
        tmp_path / "lab.ome.zarr", lab, "zyx", [1, 32, 32], is_label=True
    )


LOOP_KEYS = ("amp_dtype", "device", "multi_gpu")  # loop settings the tests vary


def _params(image, labels, **kw):
    loop = {"steps": 2, "eval_every": 1, "checkpoint_every": 1, "seed": 5, "device": "cpu"}
    loop.update({k: kw.pop(k) for k in LOOP_KEYS if k in kw}, **kw.pop("loop", {}))
    base = {
        "model": {"ndim": 2, "f_maps": 2, "depth": 2, "norm": "group", "num_groups": 1},
        "patch_shape": [16, 16],
        "min_foreground": 0.0,
        "augment": {"elastic": 0.0},
        "loop": loop,
    }
    return load_params(TrainParams, unet_params(image, labels, "0:1", "1:2", **{**base, **kw}))


def Trainer(params, out_dir) -> Loop:
    """The learning loop of the unet method."""
    return Loop(get_method("unet"), params, out_dir)


def _ddp_worker(rank, world, method, params, out_dir, resume, backend, port):
    loop = run_worker(rank, world, method, params, out_dir, resume, backend, port)
    torch.save(unwrap(loop.method.model).state_dict(), Path(out_dir) / f"rank{rank}.pt")


def _weights(path):
    return torch.load(path, weights_only=True)


def _distance(a, b):
    return math.sqrt(sum(float(((a[k] - b[k]) ** 2).sum()) for k in a))


def test_ddp_two_cpu_processes_stay_synchronised(tmp_path, data):
    image, labels = data
    out = tmp_path / "ddp"
    launch("unet", _params(image, labels), out, 2, backend="gloo", worker=_ddp_worker)
    r0, r1 = _weights(out / "rank0.pt"), _weights(out / "rank1.pt")
    assert all(torch.equal(r0[k], r1[k]) for k in r0)  # DDP all-reduced the gradients
    assert torch.equal(_weights(out / "last.pt")["state_dict"]["head.weight"], r0["head.weight"])
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3  # rank 0 validated twice and wrote the log; rank 1 wrote nothing

    # rank r takes batches r, r + 2, ... of the one patch stream: two ranks of batch 2 see what one
    # process of batch 4 sees, so the DDP weights lie near that run and far from rank 0's data alone
    torch.manual_seed(5)
    init = {k: v.detach().clone() for k, v in UNet(_params(image, labels).model).state_dict().items()}
    single4 = Trainer(_params(image, labels, batch_size=4), tmp_path / "b4")
    single4.run()
    single2 = Trainer(_params(image, labels), tmp_path / "b2")
    single2.run()
    w4, w2 = single4.method.model.state_dict(), single2.method.model.state_dict()
    assert _distance(r0, w4) < 0.5 * _distance(w4, init)
    assert _distance(r0, w4) < _distance(r0, w2)


def test_fit_to_memory_picks_the_largest_that_fits():
    def fits_below(limit):
        calls = []

        def fits(batch, patch):
            calls.append((batch, list(patch)))
            return batch * int(np.prod(patch)) <= limit

        return fits, calls

    fits, _ = fits_below(10_000)
    assert fit_to_memory(fits, 8, [64, 64], (4, 4)) == (2, [64, 64])  # batch halves first
    fits, calls = fits_below(1300)
    batch, patch = fit_to_memory(fits, 8, [40, 40], (8, 8))
    assert (batch, patch) == (2, [16, 40])  # patch shrunk at batch 1, then the batch regrew
    assert (1, [40, 40]) in calls and not fits(1, [40, 40]) and not fits(4, patch)
    fits, _ = fits_below(10**9)
    assert fit_to_memory(fits, 4, [32, 32], (4, 4)) == (4, [32, 32])  # nothing to do, never grows past 4
    fits, _ = fits_below(1)
    with pytest.raises(ConfigError, match="does not fit"):
        fit_to_memory(fits, 2, [16, 16], (8, 8))
    assert shrink_patch([8, 16], (8, 8)) == [8, 8] and shrink_patch([8, 8], (8, 8)) is None


def test_trainer_probe_shrinks_on_cuda_oom(tmp_path, data, monkeypatch):
    """The trainer's own probe (forward + backward) with a forward that raises CUDA OOM above a size."""
    image, labels = data
    limit = 300  # batch 1 of 20x16 does not fit; 8x16 (the patch halved, rounded to the divisor 4) fits twice
    original = UNet.forward

    def forward(self, x):
        if x.shape[0] * x[0, 0].numel() > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(self, x)

    monkeypatch.setattr(UNet, "forward", forward)
    model = {"ndim": 2, "f_maps": 2, "depth": 3, "norm": "batch"}
    loop = Trainer(_params(image, labels, batch_size=8, patch_shape=[20, 16], model=model), tmp_path / "p")
    loop.setup()
    trainer = loop.method
    before = [b.clone() for b in trainer.model.buffers()]
    trainer.fit_memory()
    assert (trainer.batch_size, trainer.patch) == (2, [8, 16])
    assert (
        trainer.batch_size * np.prod(trainer.patch) <= limit < 2 * trainer.batch_size * np.prod(trainer.patch)
    )
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.buffers(), strict=True))
    assert all(p.grad is None for p in trainer.model.parameters())


def test_bfloat16_autocast_on_cpu_gives_finite_losses(tmp_path, data):
    image, labels = data
    params = _params(image, labels, amp_dtype="bfloat16", loop={"steps": 3, "eval_every": 3, "checkpoint_every": 3})
    trainer = Trainer(params, tmp_path / "bf16")
    assert trainer.ctx.amp and trainer.ctx.amp_dtype == torch.bfloat16
    out = trainer.run()
    assert not trainer.scaler.is_enabled()  # bfloat16 needs no loss scaling
    row = out["rows"][-1]
    assert math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])
    with trainer.ctx.autocast():
        y = trainer.method.model(torch.randn(1, 1, 16, 16))
    assert y.dtype == torch.bfloat16
    assert not Trainer(_params(image, labels), tmp_path / "fp16").ctx.amp  # float16 autocast stays CUDA-only


def test_ddp_is_spawned_only_for_several_gpus(tmp_path, data, monkeypatch):
    image, labels = data
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert spawn_world(_params(image, labels, device="auto").loop) == 2
    assert spawn_world(_params(image, labels, device="cuda").loop) == 2
    assert spawn_world(_params(image, labels, device="cpu").loop) == 0
    assert spawn_world(_params(image, labels, device="auto", multi_gpu=False).loop) == 0
    monkeypatch.setenv("WORLD_SIZE", "2")  # launched by torchrun: this process is one rank already
    assert spawn_world(_params(image, labels, device="auto").loop) == 0
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert spawn_world(_params(image, labels, device="auto").loop) == 0
