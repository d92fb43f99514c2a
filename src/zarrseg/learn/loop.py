"""The one training loop. Methods supply per-step hooks; the loop owns everything around them.

The loop owns device selection, AMP (float16 with a GradScaler, or bfloat16), DDP ranks,
wall-time / CPU-time budgets, seeding, the history (``history.csv`` per step, ``metrics.csv``
per evaluation, TensorBoard when installed), the checkpoints and exact resume:

* ``last.pt`` (every ``loop.checkpoint_every`` steps and when training stops) holds the
  inference weights plus the loop state: every trained module, optimiser, scheduler, scaler,
  RNG states, the loop position and the method's own state (an EMA teacher's centre, a
  probed batch size, ...). ``zarrseg train --resume`` continues from it;
* every step's randomness is a function of ``(loop.seed, step, rank)`` alone, so a run killed
  after step k and resumed from ``last.pt`` ends with the weights of an uninterrupted run;
* ``best.pt`` (inference weights only) appears when training ends: the best evaluation
  (``best-so-far.pt`` while training) or, for methods without one, the final weights. A
  killed run therefore never leaves a ``best.pt`` that looks finished.

A method (``Method``) implements ``build`` (modules, optimiser, scheduler), ``batches(start)``
(its deterministic batch stream from step ``start``), ``step(batch, step)`` -> losses and
``export()`` (the module inference uses, with its config and output description); optional
hooks add per-step schedules, gradient handling, EMA updates, evaluation and extra state.
Hooks are per step: no method copies this loop (torch-em's trainer subclasses copy the epoch
loop; ours never do).
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from ..errors import ConfigError, InputError, OutputError, ZarrsegError
from ..normalize import Normalization
from ..parallel import progress_bar
from ..params import to_dict
from ..runs import MARK, Busy, exclusive, refuse_foreign
from . import checkpoint as ckpt
from .device import resolve_device, rng_state, seed_step, set_rng_state
from .params import LoopParams
from .registry import MethodSpec, get_method

log = logging.getLogger(__name__)

LAST, BEST, BEST_SO_FAR = "last.pt", "best.pt", "best-so-far.pt"
LOCK = ".train.lock"
KILL_ENV = "ZARRSEG_KILL_AFTER_STEP"  # SIGKILL this process right after that step (tests of resume)


class TrainingDiverged(ZarrsegError):
    """The loss cannot train the model: NaN, infinite, or not backed by its parameters."""


@dataclass
class Parts:
    """What ``Method.build`` returns: the trained modules and how they are optimised."""

    modules: dict[str, torch.nn.Module]  # everything with state the loop saves and restores
    optimizer: torch.optim.Optimizer
    scheduler: Any = None
    scheduler_on: Literal["step", "eval"] = "step"  # stepped every step, or with the evaluation score
    min_lr: float | None = None  # stop once the learning rate falls below this


@dataclass
class Export:
    """The module inference runs, with what inference needs to rebuild and use it."""

    module: torch.nn.Module
    model_config: dict
    io: ckpt.ModelIO
    normalization: Normalization | None = None
    params: dict | None = None  # default: the method's parameters
    extra: dict = field(default_factory=dict)  # more header entries (e.g. voxel_size)


class Context:
    """What the loop gives a method: device, ranks, mixed precision, seeded generators."""

    def __init__(self, loop: LoopParams, out_dir: Path):
        self.loop, self.out_dir = loop, out_dir
        self.rank = int(os.environ.get("RANK", "0"))
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        if self.world > 1:  # one process per device; gloo on the CPU when CUDA is absent or not wanted
            local = int(os.environ.get("LOCAL_RANK", "0"))
            use_cuda = loop.device != "cpu" and torch.cuda.is_available()
            self.device = torch.device(f"cuda:{local}" if use_cuda else "cpu")
            if use_cuda:
                torch.cuda.set_device(self.device)
        else:
            self.device = resolve_device(loop.device)
        self.amp_dtype = torch.bfloat16 if loop.amp_dtype == "bfloat16" else torch.float16
        # float16 autocast is a CUDA feature; bfloat16 autocast also runs on CPUs
        self.amp = loop.amp and (self.device.type == "cuda" or self.amp_dtype == torch.bfloat16)
        self.n_evals = 0  # evaluations done so far (methods may evaluate more at every k-th)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp)

    def ddp(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` on the device, wrapped in DistributedDataParallel when there are several ranks."""
        module = module.to(self.device)
        if self.world == 1:
            return module
        if not torch.distributed.is_initialized():  # torchrun: rendezvous from the environment
            from .distributed import backend_for

            torch.distributed.init_process_group(backend_for(self.device))
        return torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[self.device.index] if self.device.type == "cuda" else None
        )

    def generator(self, step: int, salt: int = 0) -> torch.Generator:
        """A torch generator seeded by (seed, step, rank, salt): a step's own randomness."""
        from .device import step_seed

        return torch.Generator().manual_seed(step_seed(self.loop.seed + salt, step, self.rank))

    def from_rank0(self, value):
        """``value`` as rank 0 computed it (ranks must take identical decisions)."""
        if self.world == 1:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def mean_over_ranks(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return float(t[0]) / self.world


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return getattr(module, "module", module)


class Method:
    """Per-step hooks of a learning method. Subclasses implement build, batches, step and export."""

    select_best: ClassVar[bool] = True  # best.pt = best evaluation (False: the final weights)
    metric_names: ClassVar[tuple[str, ...]] = ()  # evaluation columns of metrics.csv
    # parameter keys that do not change what is learnt (a resumed run may change them)
    resume_ignores: ClassVar[tuple[str, ...]] = ("loop",)
    # a resumed run may raise loop.steps and end where an uninterrupted longer run ends: no schedule
    # spans the step count (the U-Net's and SPOCO's plateau schedules); DINO's cosine schedules do
    steps_extendable: ClassVar[bool] = False

    def __init__(self, params: Any, ctx: Context):
        self.params, self.ctx = params, ctx
        self.modules: dict[str, torch.nn.Module] = {}  # set from build()'s Parts by the loop

    # --- required ---------------------------------------------------------------------------
    def build(self) -> Parts:
        raise NotImplementedError

    def batches(self, start: int) -> Iterator[Any]:
        """The batches of steps ``start, start + 1, ...`` (deterministic in the step index)."""
        raise NotImplementedError

    def step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        """Forward pass and losses (under autocast); ``"loss"`` is what is optimised."""
        raise NotImplementedError

    def export(self) -> Export:
        raise NotImplementedError

    # --- optional ---------------------------------------------------------------------------
    def total_steps(self) -> int:
        return self.params.loop.steps

    def train_mode(self) -> None:
        """Put the modules in training mode (a method may keep frozen parts in eval mode)."""
        for module in self.modules.values():
            module.train()

    def on_device(self) -> None:
        """Called once the modules sit on their device, before the first step (e.g. a memory probe)."""

    def before_step(self, step: int) -> None:
        """Per-step schedules (learning rate, weight decay, temperatures)."""

    def before_update(self, step: int) -> None:
        """After backward (gradients unscaled), before the optimiser step: clipping, freezing."""

    def after_step(self, step: int) -> None:
        """After the optimiser step: EMA teachers and the like."""

    def evaluate(self, final: bool) -> dict[str, float]:
        """Validation scores (rank 0 only); empty when the method has no validation."""
        return {}

    def selection_score(self, scores: dict[str, float], train_loss: float) -> float | None:
        """The number (lower is better) that selects best.pt and drives a plateau scheduler;
        None: this evaluation neither selects nor schedules."""
        return train_loss

    def history_extras(self) -> dict[str, float]:
        """More columns for a history.csv row (e.g. a momentum schedule)."""
        return {}

    def row_extras(self) -> dict[str, float]:
        """More columns for a metrics.csv row (e.g. the batch size)."""
        return {}

    def state(self) -> dict:
        """Method state beyond the modules' state dicts, saved in last.pt."""
        return {}

    def load_state(self, state: dict) -> None:
        pass

    def describe(self) -> str:
        return ""


# loop keys that say how a run is carried out, not what it learns: a resumed run may change them.
# The others (steps: the schedules span them; seed; amp / amp_dtype: the numerics) may not.
LOOP_RUNTIME = ("eval_every", "checkpoint_every", "early_stopping", "max_minutes", "max_cpu_minutes", "threads",
                "device", "multi_gpu", "tensorboard", "log_every")


_DATA_NAME = re.compile(r"\.(zarr|tiff?|h5|hdf5?|czi|png|jpe?g|pt|parquet)(:|/|$)", re.IGNORECASE)
_HDF5_DATASET = re.compile(r"(.+\.(?:h5|hdf5?)):(.*)", re.IGNORECASE)


def _absolute_paths(value: Any) -> Any:
    """Paths in the parameters as absolute paths: the same images given relative, then absolute
    (or from another folder) are the same run."""
    if isinstance(value, dict):
        return {k: _absolute_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_absolute_paths(v) for v in value]
    if isinstance(value, str) and "://" not in value and (os.sep in value or _DATA_NAME.search(value)):
        hdf5 = _HDF5_DATASET.fullmatch(value)  # file.h5:dataset
        file, dataset = (hdf5.group(1), ":" + hdf5.group(2)) if hdf5 else (value, "")
        if Path(file).exists():
            return str(Path(file).resolve()) + dataset
    return value


def fingerprint(spec: MethodSpec, hooks: type[Method], params: Any) -> dict:
    """What a resumed run must share with the run it continues (the method and what it learns from)."""
    values = _absolute_paths(to_dict(params))
    for key in hooks.resume_ignores:
        if key == "loop":  # only its runtime keys: a changed seed or step count was resumed silently
            runtime = (*LOOP_RUNTIME, "steps") if hooks.steps_extendable else LOOP_RUNTIME
            values["loop"] = {k: v for k, v in (values.get("loop") or {}).items() if k not in runtime}
        else:
            values.pop(key, None)
    return {"method": spec.name, "params": values}


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _differences(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}")
    return out


class Loop:
    """Train one method into ``out_dir`` (``resume``: False, True or "auto")."""

    def __init__(self, spec: MethodSpec, params: Any, out_dir: str | Path, resume: bool | str = False):
        self.spec, self.params, self.out_dir = spec, params, Path(out_dir)
        self.resume = resume
        self.lp: LoopParams = params.loop
        if self.lp.threads:
            torch.set_num_threads(self.lp.threads)
        self.ctx = Context(self.lp, self.out_dir)
        self.step = 0
        self.best = math.inf
        self.bad_evals = 0
        self.rows: list[dict] = []
        self.losses: list[float] = []  # per-step loss of the whole run (this process and resumed ones)
        self.running = [0.0, 0]  # loss sum and count since the last evaluation
        self.elapsed = 0.0  # seconds of earlier (resumed) processes
        self.cpu_elapsed = 0.0
        self.stop_reason = "steps"
        self.stopped: str | None = None  # why a run stopped before its last step (it is then complete)
        self.method: Method | None = None
        self.parts: Parts | None = None

    # --- setup --------------------------------------------------------------------------------
    def setup(self) -> None:
        """Build the method's modules, optimiser and scheduler (seeded: identical on every rank)."""
        seed_step(self.lp.seed, 0, salt=1)  # model initialisation depends on the seed only
        self.method = self.spec.hooks_class()(self.params, self.ctx)
        self.parts = self.method.build()
        self.method.modules = self.parts.modules
        self.scaler = torch.amp.GradScaler(
            "cuda",
            enabled=self.ctx.amp and self.ctx.amp_dtype == torch.float16 and self.ctx.device.type == "cuda",
        )

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.parts.optimizer

    def _fingerprint(self) -> dict:
        return fingerprint(self.spec, self.spec.hooks_class(), self.params)

    def _start_or_resume(self) -> None:
        last = self.out_dir / LAST
        if not last.exists():  # (resume=True without last.pt was refused in run)
            # a run killed before its first last.pt left rows a fresh start would append to (steps 1..7, 1..20)
            for name in (BEST_SO_FAR, "metrics.csv", "history.csv"):
                (self.out_dir / name).unlink(missing_ok=True)
            return
        if self.resume is False:
            raise ConfigError(f"{self.out_dir} already holds a training run; pass --resume or use a new folder")
        payload = ckpt.read(last)
        saved = payload.get("loop", {}).get("fingerprint")
        mine = self._fingerprint()
        if saved != mine:
            what = ", ".join(_differences(saved or {}, mine)[:5]) or "format"
            if self.resume is True:
                raise InputError(f"cannot resume: the parameters differ from the saved run ({what})", last)
            log.warning("train: %s belongs to another run (%s differ): starting over", last, what)
            for name in (LAST, BEST, BEST_SO_FAR, "metrics.csv", "history.csv"):
                (self.out_dir / name).unlink(missing_ok=True)
            return
        self._restore(payload)

    def _restore(self, payload: dict) -> None:
        state = payload["loop"]
        for name, module in self.parts.modules.items():
            unwrap(module).load_state_dict(state["modules"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.parts.scheduler is not None and state.get("scheduler") is not None:
            self.parts.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.best = float(state["best"])
        self.bad_evals = int(state["bad_evals"])
        self.ctx.n_evals = int(state["n_evals"])
        self.running = [float(state["running"][0]), int(state["running"][1])]
        self.elapsed, self.cpu_elapsed = float(state["elapsed"]), float(state["cpu_elapsed"])
        self.stopped = state.get("stopped")
        self.method.load_state(state.get("method", {}))
        set_rng_state(state.get("rng", {}))
        best_so_far = self.out_dir / BEST_SO_FAR
        if best_so_far.exists() and int(ckpt.read(best_so_far).get("step", 0)) > self.step:
            # evaluated after the resume point by the killed run: the resumed run evaluates that step
            # again; kept, it could become best.pt with a score metrics.csv no longer holds. It
            # replaced the weights of the best evaluation up to the resume point, so the best is
            # chosen again among the resumed run's evaluations
            best_so_far.unlink()
            self.best = math.inf
        self.rows = [r for r in read_csv(self.out_dir / "metrics.csv") if int(r["step"]) <= self.step]
        history = [r for r in read_csv(self.out_dir / "history.csv") if int(r["step"]) <= self.step]
        self.losses = [float(r["loss"]) for r in history]
        if self.ctx.rank == 0:
            write_csv(self.out_dir / "metrics.csv", self.rows)
            write_csv(self.out_dir / "history.csv", history)
        log.info("resuming %s from %s at step %d (best %.4f)", self.spec.name, LAST, self.step, self.best)

    # --- the loop ----------------------------------------------------------------------------
    def run(self) -> dict:
        if self.resume is True and not (self.out_dir / LAST).exists():  # before any folder is made
            raise InputError("nothing to resume: no last.pt (start without --resume)", self.out_dir / LAST)
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise OutputError("exists as a file; a model is a folder (remove it or choose another output)",
                              self.out_dir)
        if not (self.out_dir / LAST).exists():  # a fresh start replaces what is there: only if it is ours
            refuse_foreign(self.out_dir)
        if self.method is None:
            self.setup()  # before any file exists: bad input (a missing init checkpoint, ...) writes nothing
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / MARK).touch()  # a rerun may replace what is in this folder
        with contextlib.ExitStack() as held:
            if self.ctx.rank == 0:  # one training per model folder (DDP ranks are one training)
                held.enter_context(exclusive(self.out_dir / LOCK, lambda holder: Busy(
                    f"another training is writing into this model folder ({holder})", self.out_dir)))
            return self._run()

    def _run(self) -> dict:
        self._start_or_resume()
        if self.ctx.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.method.on_device()
        total = self.method.total_steps()
        if self.step >= total:
            self._publish()
            return self._summary("already complete", 0.0)
        budget_left = not self._over_budget(self.elapsed, self.cpu_elapsed)
        if self.stopped and not (self.stopped == "time budget" and budget_left):
            # early stopping / min_lr ended it on purpose: a rerun (the workflow resumes) must not train on
            self._publish()
            return self._summary(f"already complete: stopped by {self.stopped}", 0.0)
        self.stopped = None  # a time budget raised since: it trains on
        log.info(
            "train %s: steps %d..%d on %s%s %s",
            self.spec.name,
            self.step,
            total,
            self.ctx.device,
            f" ({self.ctx.world} ranks)" if self.ctx.world > 1 else "",
            self.method.describe(),
        )
        writer = self._tensorboard()
        t0, cpu0 = time.perf_counter(), time.process_time()
        self.method.train_mode()
        stop = None
        with progress_bar(total - self.step, f"train {self.spec.name}") as bar:
            bar.unit = "step"
            batches = iter(self.method.batches(self.step))
            while self.step < total:
                loss, terms = self._one_step(batches)
                self.step += 1
                self.losses.append(loss)
                self.running[0] += loss
                self.running[1] += 1
                bar.update(1)
                seconds = self.elapsed + time.perf_counter() - t0
                cpu = self.cpu_elapsed + time.process_time() - cpu0
                if self.ctx.rank == 0 and self.step % self.lp.log_every == 0:
                    self._history_row(terms, seconds, cpu, writer)
                over_time = self._over_budget(seconds, cpu)
                final = self.step == total or over_time
                if self.step % self.lp.eval_every == 0 or final:
                    stop = self._evaluate(seconds, writer, final)
                    bar.set_postfix(loss=f"{self.rows[-1]['train_loss']:.4f}")
                if stop or over_time:
                    self.stop_reason = self.stopped = stop or "time budget"
                if self.step % self.lp.checkpoint_every == 0 or final or stop:
                    self._save_last(seconds, cpu)
                if os.environ.get(KILL_ENV) == str(self.step):  # fault injection: tests of exact resume
                    os.kill(os.getpid(), signal.SIGKILL)
                if stop or over_time:
                    break
        if writer is not None:
            writer.close()
        self._publish()
        return self._summary(self.stop_reason, self.elapsed + time.perf_counter() - t0)

    def _one_step(self, batches: Iterator[Any]) -> tuple[float, dict[str, float]]:
        step, method, opt = self.step, self.method, self.optimizer
        seed_step(self.lp.seed, step, self.ctx.rank)
        batch = next(batches)
        method.before_step(step)
        opt.zero_grad(set_to_none=True)
        with self.ctx.autocast():
            losses = method.step(batch, step)
        loss = losses["loss"]
        if not torch.isfinite(loss.detach()).all():
            raise TrainingDiverged(
                f"training {self.spec.name} diverged: loss {float(loss):.4g} at step {step}; "
                "lower the learning rate or switch off amp"
            )
        if not loss.requires_grad:  # else backward() fails with an autograd message that names nothing
            raise TrainingDiverged(
                f"training {self.spec.name}: the loss at step {step} does not depend on the model's "
                "parameters (a batch without any supervised pixel?); the method must return a loss backed by its output"
            )
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(opt)
        method.before_update(step)
        self.scaler.step(opt)
        self.scaler.update()
        if self.parts.scheduler is not None and self.parts.scheduler_on == "step":
            self.parts.scheduler.step()
        method.after_step(step)
        return float(loss.detach()), {k: float(v.detach()) for k, v in losses.items()}

    def _over_budget(self, seconds: float, cpu: float) -> bool:
        lp = self.lp
        wall = lp.max_minutes is not None and seconds > 60 * lp.max_minutes
        cpu_over = lp.max_cpu_minutes is not None and cpu > 60 * lp.max_cpu_minutes
        return bool(self.ctx.from_rank0(wall or cpu_over))  # every rank stops at the same step

    def _evaluate(self, seconds: float, writer, final: bool) -> str | None:
        ctx, method = self.ctx, self.method
        train_loss = ctx.mean_over_ranks(self.running[0] / max(self.running[1], 1))
        self.running = [0.0, 0]
        scores = dict.fromkeys(method.metric_names, float("nan"))
        if method.metric_names:
            scores.update(ctx.from_rank0(method.evaluate(final) if ctx.rank == 0 else None))
            method.train_mode()
        ctx.n_evals += 1
        score = method.selection_score(scores, train_loss)
        improved = False
        if score is not None and not math.isnan(score):
            if self.parts.scheduler is not None and self.parts.scheduler_on == "eval":
                self.parts.scheduler.step(score)
            improved = score < self.best
            if improved:
                self.best, self.bad_evals = score, 0
            else:
                self.bad_evals += 1
        lr = self.optimizer.param_groups[0]["lr"]
        row = {"step": self.step, "train_loss": train_loss, **scores, "lr": lr, "seconds": round(seconds, 3)}
        row.update(method.row_extras())
        self.rows.append(row)
        if ctx.rank == 0:
            write_csv(self.out_dir / "metrics.csv", self.rows)
            if improved and method.select_best:
                self._save_export(self.out_dir / BEST_SO_FAR, metrics=row)
            if writer is not None:
                for key, value in row.items():
                    if key != "step" and isinstance(value, float) and not math.isnan(value):
                        writer.add_scalar(f"eval/{key}", value, self.step)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in scores.items() if not math.isnan(v))
        log.info(
            "step %d: train loss %.4f%s, lr %.2e%s",
            self.step,
            train_loss,
            f", {shown}" if shown else "",
            lr,
            " (best)" if improved else "",
        )
        if self.lp.early_stopping and self.bad_evals >= self.lp.early_stopping:
            return "early stopping"
        if self.parts.min_lr is not None and lr < self.parts.min_lr:
            return "learning rate below min_lr"
        return None

    # --- files --------------------------------------------------------------------------------
    def _save_export(self, path: Path, **extra: Any) -> Path:
        exp = self.method.export()
        return ckpt.save(
            path,
            method=self.spec.name,
            model_config=exp.model_config,
            io=exp.io,
            module=unwrap(exp.module),
            normalization=exp.normalization,
            params=exp.params if exp.params is not None else to_dict(self.params),
            step=self.step,
            **exp.extra,
            **extra,
        )

    def _save_last(self, seconds: float, cpu: float) -> None:
        if self.ctx.rank != 0:
            return
        sched = self.parts.scheduler
        loop_state = {
            "fingerprint": self._fingerprint(),
            "step": self.step,
            "best": self.best,
            "bad_evals": self.bad_evals,
            "n_evals": self.ctx.n_evals,
            "running": list(self.running),
            "elapsed": seconds,
            "cpu_elapsed": cpu,
            "modules": {n: ckpt._state(m) for n, m in self.parts.modules.items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if sched is None else sched.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "method": self.method.state(),
            "stopped": self.stopped,
        }
        self._save_export(self.out_dir / LAST, loop=loop_state, metrics=self.rows[-1] if self.rows else {})

    def _publish(self) -> None:
        """best.pt: the best evaluation's weights, or the final ones (inference weights only)."""
        if self.ctx.rank != 0:
            return
        best_so_far = self.out_dir / BEST_SO_FAR
        if self.method.select_best and best_so_far.exists():
            ckpt.slim(best_so_far, self.out_dir / BEST)
        else:
            self._save_export(self.out_dir / BEST, metrics=self.rows[-1] if self.rows else {})

    def _history_row(self, terms: dict[str, float], seconds: float, cpu: float, writer) -> None:
        row = {
            "step": self.step,
            **terms,
            "lr": self.optimizer.param_groups[0]["lr"],
            **self.method.history_extras(),
            "seconds": round(seconds, 3),
            "cpu_seconds": round(cpu, 3),
        }
        append_csv(self.out_dir / "history.csv", row)
        if writer is not None:
            for key, value in terms.items():
                writer.add_scalar(f"train/{key}", value, self.step)

    def _tensorboard(self):
        if not self.lp.tensorboard or self.ctx.rank != 0:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard is optional
            log.info("tensorboard not installed: logging to history.csv / metrics.csv only")
            return None
        return SummaryWriter(str(self.out_dir / "tensorboard"))

    def _summary(self, reason: str, seconds: float) -> dict:
        log.info("training stopped (%s) at step %d after %.1f s; best %.4f", reason, self.step, seconds, self.best)
        return {
            "steps": self.step,
            "iterations": self.step,
            "best": self.best,
            "stop": reason,
            "seconds": seconds,
            "rows": self.rows,
            "first_loss": self.losses[0] if self.losses else float("nan"),
            "last_loss": self.losses[-1] if self.losses else float("nan"),
        }


# --- CSV files -------------------------------------------------------------------------------------
def _number(text: str) -> float | int | str:
    if text in ("", None):
        return float("nan")
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def read_csv(path: Path) -> list[dict]:
    """Rows of a history/metrics CSV with numbers parsed (missing file: no rows)."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: _number(v) for k, v in r.items()} for r in csv.DictReader(f)]


def write_csv(path: Path, rows: list[dict]) -> None:
    """Rewrite a CSV atomically (columns: the union of the rows' keys, in first-seen order)."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def append_csv(path: Path, row: dict) -> None:
    """Append one row (header on creation); a row with new columns rewrites the file."""
    if path.exists():
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
        if list(row) == header:
            with open(path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=header).writerow(row)
            return
        write_csv(path, [*read_csv(path), row])
        return
    write_csv(path, [row])


# --- entry points ----------------------------------------------------------------------------------
def spawn_world(loop: LoopParams) -> int:
    """DDP processes to spawn: the CUDA device count when several are visible and wanted, else 0
    (train in this process; also under torchrun, which spawned us)."""
    if not loop.multi_gpu or loop.device not in ("auto", "cuda") or "WORLD_SIZE" in os.environ:
        return 0
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return n_gpus if n_gpus > 1 else 0


def run_worker(
    rank: int, world: int, method: str, params: Any, out_dir: str, resume: bool | str, backend: str, port: int
) -> Loop:
    """Body of one spawned DDP rank: join the process group, train, leave. Returns the ``Loop``."""
    from .distributed import join_group

    join_group(rank, world, backend, port)
    try:
        loop = Loop(get_method(method), params, out_dir, resume)
        loop.run()
        return loop
    finally:
        torch.distributed.destroy_process_group()


def check_rates(params: Any, where: str) -> None:
    """Every learning rate of a method's parameters (a field ``lr`` at any depth) is a positive,
    finite number: checked here once for all methods, before torch's optimizer refuses it mid-setup."""
    import dataclasses

    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_rates(value, f"{where}.{f.name}")
        elif f.name == "lr" and not (isinstance(value, int | float) and 0 < value < math.inf):
            raise ConfigError(f"{where}.lr must be a positive, finite learning rate, got {value}")


def train(method: str | MethodSpec, params: Any, out_dir: str | Path, resume: bool | str = False) -> dict:
    """Train ``method`` with ``params`` into ``out_dir``: in this process, or one DDP process per
    CUDA device when several are visible."""
    spec = method if isinstance(method, MethodSpec) else get_method(method)
    check_rates(params, spec.config_section)
    from ..ome import check_writable

    check_writable(out_dir)  # before the data are read and the model is built
    world = spawn_world(params.loop)
    if not world:
        return Loop(spec, params, out_dir, resume).run()
    from .distributed import launch

    log.info("training on %d CUDA devices (DDP, one process each)", world)
    t0 = time.perf_counter()
    launch(spec.name, params, out_dir, world, resume=resume, backend="nccl", worker=run_worker)
    last = ckpt.read(Path(out_dir) / LAST)["loop"]
    return {
        "steps": int(last["step"]),
        "iterations": int(last["step"]),
        "best": float(last["best"]),
        "stop": "ddp",
        "seconds": time.perf_counter() - t0,
        "rows": read_csv(Path(out_dir) / "metrics.csv"),
    }
