"""The SLURM profile, run for real: Snakemake + snakemake-executor-plugin-slurm submit the workflow's
jobs to stand-in SLURM commands (tests/slurm_standins) that execute them on this machine.

What is proven: the profile dry-runs on the default config; a real run submits every job with
``sbatch`` and finishes it (status polled via ``sacct``, account via ``sacctmgr``, job steps via
``srun``); the GPU rule (predict with a U-Net checkpoint) is submitted with a GPU request to the
GPU partition while CPU rules are not; a failing job fails the run with the stage's error; no
cluster-specific key sits in the rules; and the multi-node option (``dask.scheduler: slurm``)
runs blocks in dask-jobqueue worker jobs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from zarrseg.ome import open_image

REPO = Path(__file__).resolve().parents[1]
STANDINS = Path(__file__).resolve().parent / "slurm_standins"
PROFILE = REPO / "profiles" / "slurm"
STANDIN_COMMANDS = ("sbatch", "sacct", "squeue", "scancel", "srun", "sacctmgr", "scontrol", "sinfo")
# Resource keys that only make sense on one cluster: they belong in the profile, never in rules.
CLUSTER_KEYS = re.compile(r"\b(slurm_\w+|gpu_model|cpus_per_gpu|cpus_per_task|slurm_extra|qos)\b")


def _env(state_dir: Path | None) -> dict[str, str]:
    """This venv's python/zarrseg first on PATH; with ``state_dir``, the stand-in SLURM before it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    path = [str(Path(sys.executable).parent), env.get("PATH", "/usr/bin:/bin")]
    if state_dir is not None:
        path.insert(0, str(STANDINS))
        env["ZARRSEG_FAKE_SLURM_DIR"] = str(state_dir)
    env.update(PATH=os.pathsep.join(path), ZARRSEG_NO_PROGRESS="1")
    return env


def _snakemake(
    workdir: Path, env: dict[str, str], *args: str, timeout: int = 240
) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "workflow" / "Snakefile"),
        "--profile",
        str(PROFILE),
        *args,
    ]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    shutil.copytree(REPO / "config", work / "config")
    shutil.copytree(REPO / "data" / "sample", work / "data" / "sample")
    return work


@pytest.fixture
def fake_slurm(tmp_path: Path):
    """State directory of the stand-in SLURM; jobs still running at teardown are cancelled."""
    for name in STANDIN_COMMANDS:
        assert os.access(STANDINS / name, os.X_OK), f"stand-in {name} is not executable"
    state = tmp_path / "slurm"
    state.mkdir()
    yield state
    jobs = [p.name for p in (state / "jobs").glob("*") if p.is_dir()]
    if jobs:
        subprocess.run([str(STANDINS / "scancel"), *jobs], env=_env(state), capture_output=True, timeout=30)


def _submissions(state: Path) -> list[dict]:
    """Every sbatch call the stand-in recorded, with its exit status and srun steps."""
    records = []
    for job_dir in sorted((state / "jobs").iterdir()):
        record = json.loads((job_dir / "submit.json").read_text())
        exitcode = job_dir / "exitcode"
        record["exitcode"] = exitcode.read_text().strip() if exitcode.exists() else None
        srun = job_dir / "srun.jsonl"
        record["srun"] = [json.loads(line) for line in srun.read_text().splitlines()] if srun.exists() else []
        records.append(record)
    return records


def _rule(record: dict) -> str:
    """The rule of a submission, from the comment the plugin sets (rule_<name>[_wildcards_...])."""
    return record["options"]["comment"].removeprefix("rule_").split("_wildcards_")[0]


def _write_checkpoint(path: Path) -> None:
    """A tiny, untrained U-Net checkpoint in zarrseg's format: enough to run the GPU rule."""
    import torch

    from zarrseg.methods.unet.checkpoint import save_checkpoint
    from zarrseg.methods.unet.models import ModelConfig, build_model
    from zarrseg.normalize import Normalization

    torch.manual_seed(0)
    config = ModelConfig(f_maps=4, depth=2, norm="group", num_groups=2)
    # One tile covers the 32 x 128 x 128 sample: the job stays short.
    save_checkpoint(
        path, build_model(config), config, Normalization(), "boundaries", {"patch_shape": [32, 128, 128]}
    )


def test_slurm_profile_dry_runs_on_default_config(tmp_path):
    # The README's command, literally, in a copy of the workflow tree; no stand-ins on PATH: a dry
    # run must work on a machine without SLURM (e.g. a laptop before copying to the cluster).
    for part in ("workflow", "rules", "config", "profiles", "data/sample"):
        shutil.copytree(REPO / part, tmp_path / part)
    cmd = [sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "-n"]
    run = subprocess.run(cmd, cwd=tmp_path, env=_env(None), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-4000:]
    for rule in ("ingest", "ingest_ground_truth", "predict", "segment", "evaluate", "aggregate"):
        assert f"rule {rule}:" in run.stdout, rule
    assert not (tmp_path / "results").exists()


def test_cluster_keys_stay_in_the_profile():
    offenders = {
        str(path.relative_to(REPO)): sorted(set(CLUSTER_KEYS.findall(path.read_text())))
        for path in [*sorted((REPO / "rules").glob("*.smk")), REPO / "workflow" / "Snakefile"]
        if CLUSTER_KEYS.search(path.read_text())
    }
    assert not offenders, (
        f"cluster-specific resource keys in rules (move them to profiles/slurm): {offenders}"
    )
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    partitions = yaml.safe_load((PROFILE / profile["slurm-partition-config"]).read_text())["partitions"]
    assert any(limits.get("max_gpu", 0) > 0 for limits in partitions.values()), (
        "no GPU partition for GPU rules"
    )


def test_slurm_profile_runs_jobs_and_requests_a_gpu_for_the_gpu_rule(workdir, fake_slurm, tmp_path):
    checkpoint = tmp_path / "tiny_unet.pt"
    _write_checkpoint(checkpoint)
    config = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    # device auto: the job asks for a GPU (device: cpu would ask for none) and, with no CUDA here, runs on the CPU
    config["predict"] = {"method": "unet", "checkpoint": str(checkpoint), "num_workers": 0, "device": "auto"}
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    # A second sample whose file is not an image: its job must fail on the "cluster", be reported
    # FAILED by sacct, and surface zarrseg's one-line error, without stopping the other jobs.
    (workdir / "data" / "sample" / "broken.tif").write_bytes(b"this is not a TIFF file\n" * 8)
    with open(workdir / "config" / "samples.tsv", "a") as sheet:
        sheet.write("broken\tdata/sample/broken.tif\t\t0\t0\n")
    image = "results/ingest/ovule/image.ome.zarr"
    ground_truth = "results/ingest/ovule/ground_truth.ome.zarr"
    boundaries = "results/default/ovule/predict/base/boundaries.ome.zarr"
    broken = "results/ingest/broken/image.ome.zarr"
    # The image is staged beforehand, so that the CPU jobs and the GPU job (predict) run side by
    # side: one round of the plugin's ever slower status polls instead of two.
    from zarrseg.ingest import IngestParams, ingest

    ingest(str(workdir / "data" / "sample" / "ovule.ome.tif"), str(workdir / image), IngestParams())

    run = _snakemake(
        workdir, _env(fake_slurm), ground_truth, boundaries, broken, "--keep-going",
        # Poll every second instead of the plugin's cluster-friendly 40 s; keep SLURM logs to show.
        "--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "1",
        "--slurm-keep-successful-logs", "--retries", "0",
    )  # fmt: skip
    output = run.stdout + run.stderr
    submissions = _submissions(fake_slurm)
    by_rule = {_rule(r): r for r in submissions}
    logs = "\n".join(p.read_text()[-2000:] for p in (workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
    context = f"{output[-4000:]}\n--- SLURM job logs ---\n{logs}"

    # Every job went through sbatch; the good ones completed there and wrote real images ...
    assert sorted(by_rule) == ["ingest", "ingest_ground_truth", "predict"], [_rule(r) for r in submissions]
    assert len(submissions) == 3, context
    assert by_rule["predict"]["exitcode"] == by_rule["ingest_ground_truth"]["exitcode"] == "0", context
    raw = open_image(workdir / image)
    prediction = open_image(workdir / boundaries)
    assert (
        prediction.data.shape[-3:]
        == raw.data.shape[-3:]
        == open_image(workdir / ground_truth).data.shape[-3:]
    )
    values = np.asarray(prediction.data[:])
    assert np.isfinite(values).all() and values.min() >= 0.0 and values.max() <= 1.0 and values.std() > 0
    # ... and the broken one failed the run, reported by sacct and named in zarrseg's error.
    assert run.returncode != 0 and by_rule["ingest"]["exitcode"] not in (None, "0"), context
    assert "FAILED" in output and "broken.tif" in output, context
    assert not (workdir / broken).exists()

    # The GPU rule asks SLURM for a GPU (batch job and job step) on the GPU partition ...
    gpu_job = by_rule["predict"]["options"]
    assert gpu_job.get("gpus") == "1" or "gpu" in gpu_job.get("gres", ""), gpu_job
    assert gpu_job["partition"] == "gpu", gpu_job
    assert "cpus-per-gpu" in gpu_job and "cpus-per-task" not in gpu_job, gpu_job
    assert any("--gpus=1" in step["options"] for step in by_rule["predict"]["srun"]), by_rule["predict"][
        "srun"
    ]
    # ... while CPU rules ask for none, go to the CPU partition and get their rule's threads.
    for rule, threads in (("ingest_ground_truth", "4"), ("ingest", "4")):  # rules/ingest.smk: threads 4
        cpu_job = by_rule[rule]["options"]
        assert "gpus" not in cpu_job and "gpu" not in cpu_job.get("gres", ""), cpu_job
        assert cpu_job["partition"] == "cpu" and cpu_job["cpus-per-task"] == threads, cpu_job
        assert not any(o.startswith("--gpus") for step in by_rule[rule]["srun"] for o in step["options"])
    # Memory and wall time come from the rules' resources; the account from sacctmgr.
    assert cpu_job["mem"] == "2000" and cpu_job["time"] == "60" and gpu_job["mem"] == "4000", (
        cpu_job,
        gpu_job,
    )
    assert cpu_job["account"] == gpu_job["account"] == "zarrseg_test"
    # All jobs belong to this run (one SLURM job name) and ran in the workflow's directory.
    assert len({r["options"]["job-name"] for r in submissions}) == 1
    assert {Path(r["options"]["chdir"]).resolve() for r in submissions} == {workdir.resolve()}


# Run in a separate process (killed on timeout): the block function lives in a module the
# dask workers (SLURM jobs started by the stand-in sbatch) can import from PYTHONPATH.
BLOCK_MODULE = """
import os
import numpy as np

def summary(block):
    coords = np.indices(block.shape).sum(axis=0) + sum(block.begin)
    return {"job": np.int64(os.environ.get("SLURM_JOB_ID", "-1")), "sum": np.int64(coords.sum())}
"""
DRIVER = """
import json, sys
from blockfn import summary
from zarrseg.blocks import BlockGrid
from zarrseg.parallel import DaskParams, map_blocks

params = DaskParams(**json.loads(sys.argv[1]))
out = map_blocks(summary, BlockGrid((20, 30), (10, 10)), name="fan-out", dask_params=params, done_dir="done")
print(json.dumps([{k: int(v) for k, v in s.items()} for s in out]))
"""


def test_blockwise_run_fans_out_over_dask_jobqueue_slurm_jobs(fake_slurm, tmp_path):
    # The profile's multi-node option (config `dask: {scheduler: slurm, ...}`): map_blocks starts a
    # dask-jobqueue SLURMCluster whose workers are SLURM jobs, here run by the stand-in sbatch.
    from zarrseg.blocks import BlockGrid

    (tmp_path / "blockfn.py").write_text(BLOCK_MODULE)
    logs = tmp_path / "dask-logs"
    params = {
        "scheduler": "slurm", "slurm_jobs": 2,
        "slurm": {"queue": "cpu", "cores": 1, "processes": 1, "memory": "1GB", "walltime": "00:10:00",
                  "log_directory": str(logs), "job_extra_directives": ["--account=zarrseg_test"]},
    }  # fmt: skip
    env = _env(fake_slurm)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO / "src"), env.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(params)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=180)  # fmt: skip
    worker_logs = "\n".join(p.read_text()[-1500:] for p in logs.glob("*"))
    assert run.returncode == 0, f"{run.stderr[-3000:]}\n--- worker logs ---\n{worker_logs}"

    summaries = json.loads(run.stdout.strip().splitlines()[-1])
    grid = BlockGrid((20, 30), (10, 10))
    expected = [int((np.indices(b.shape).sum(axis=0) + sum(b.begin)).sum()) for b in grid]
    assert [s["sum"] for s in summaries] == expected
    submissions = _submissions(fake_slurm)
    assert len(submissions) == 2  # one sbatch per worker job
    ran_on = {s["job"] for s in summaries}
    assert ran_on and ran_on <= {int(r["job_id"]) for r in submissions}, ran_on  # blocks ran in SLURM jobs
    for record in submissions:  # the #SBATCH directives dask-jobqueue wrote reached sbatch
        options = record["options"]
        assert options["partition"] == "cpu" and options["cpus-per-task"] == "1", options
        assert options["account"] == "zarrseg_test" and options["time"] == "00:10:00", options
    assert any(logs.glob("dask-worker-*.err")), "worker logs go where log_directory says"
