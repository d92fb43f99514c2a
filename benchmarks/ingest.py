"""Ingest throughput and peak memory on a large generated TIFF and a multi-plane mosaic CZI.

Generates (streaming, plane by plane) a >= 2 GB uint16 TIFF and a tiled CZI written with
pylibCZIrw, reads each file twice (the second, page-cache-warm read is the raw-read
reference, and the ingest that follows reads warm as well), then runs ``zarrseg ingest`` in a
subprocess and reports MB/s (file bytes / wall time), the ratio to the raw read, and the
subprocess's peak RSS (``os.wait4`` rusage of that very child). Targets: ratio >= 0.5,
peak RSS < 600 MB.

    nice -n 10 .venv/bin/python benchmarks/ingest.py [--dir /tmp] [--planes 256] [--size 2048]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

TARGET_RATIO = 0.5
TARGET_RSS_MB = 600


def synthetic_planes(n: int, size: int, seed: int = 0):
    """Microscopy-like uint16 planes: smooth blobs + shot noise, generated one plane at a time."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = 800 + 600 * np.sin(23 * xx) * np.cos(17 * yy) ** 2
    for z in range(n):
        plane = base * (1 + 0.3 * np.sin(z / 9.0)) + rng.normal(0, 40, (size, size)).astype(np.float32)
        yield np.clip(plane, 0, 65535).astype(np.uint16)


def write_tiff(path: Path, planes: int, size: int) -> None:
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(
            synthetic_planes(planes, size),
            shape=(planes, size, size),
            dtype=np.uint16,
            photometric="minisblack",
            metadata={"axes": "ZYX"},
            resolution=(1e5, 1e5),  # 0.1 µm pixels
            resolutionunit="CENTIMETER",
        )


def write_czi(path: Path, planes: int, size: int) -> None:
    """A 2x2 tile mosaic per plane (tiles of size/2, stage origin negative), uncompressed."""
    from pylibCZIrw import czi as pyczi

    half = size // 2
    with pyczi.create_czi(str(path), exist_ok=True) as w:
        for z, plane in enumerate(synthetic_planes(planes, size, seed=1)):
            for ty in range(2):
                for tx in range(2):
                    tile = plane[ty * half : (ty + 1) * half, tx * half : (tx + 1) * half]
                    w.write(
                        np.ascontiguousarray(tile), location=(tx * half - 100, ty * half - 50), plane={"Z": z}
                    )
        w.write_metadata(scale_x=0.1e-6, scale_y=0.1e-6, scale_z=0.5e-6)


def raw_read_mb_s(path: Path, block: int = 16 << 20) -> tuple[float, float]:
    """(cold-ish, warm) MB/s of reading the file into nothing, like ``cat > /dev/null``."""
    speeds = []
    buf = bytearray(block)
    for _ in range(2):
        start = time.perf_counter()
        with open(path, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass
        speeds.append(path.stat().st_size / 1e6 / (time.perf_counter() - start))
    return speeds[0], speeds[1]


def codec_only_mb_s(compressor, planes: int = 8, size: int = 2048) -> float:
    """Encode-only MB/s of the configured compressor on the same kind of data: the ceiling for ingest."""
    data = np.stack(list(synthetic_planes(planes, size, seed=2)))
    chunks = [
        np.ascontiguousarray(data[:, y : y + 256, x : x + 256])
        for y in range(0, size, 256)
        for x in range(0, size, 256)
    ]
    start = time.perf_counter()
    for chunk in chunks:
        compressor.encode(chunk)
    return data.nbytes / 1e6 / (time.perf_counter() - start)


def run_ingest(src: Path, out: Path, extra: list[str]) -> tuple[float, float, float, int]:
    """(wall seconds, peak RSS MB, CPU seconds, exit code) of one ``zarrseg ingest`` subprocess.

    RSS is polled with psutil every 20 ms: the child's own ``ru_maxrss`` also counts the
    parent's pages it inherited at fork time, which would charge the generator's memory to it.
    CPU time (user + system, all threads) comes from the child's rusage; unlike wall time it
    hardly depends on how busy the shared machine is.
    """
    import psutil

    env = {**os.environ, "ZARRSEG_NO_PROGRESS": "1"}
    cmd = [sys.executable, "-m", "zarrseg.cli", "ingest", str(src), "-o", str(out), *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    child = psutil.Process(proc.pid)
    peak = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        try:
            peak = max(peak, child.memory_info().rss)
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.02)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return seconds, peak / 2**20, usage.ru_utime + usage.ru_stime, proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dir", default=tempfile.gettempdir(), help="where to generate files (default: %(default)s)"
    )
    parser.add_argument("--planes", type=int, default=256, help="TIFF planes (256 x 2048^2 uint16 = 2.1 GB)")
    parser.add_argument("--size", type=int, default=2048, help="plane edge in pixels")
    parser.add_argument("--czi-planes", type=int, default=64, help="CZI planes (mosaic of 2x2 tiles)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="ingest parameter override, e.g. --set compression.codec=lz4",
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated files and outputs")
    args = parser.parse_args()

    from zarrseg.ingest import IngestParams
    from zarrseg.params import load_params, parse_overrides

    params = load_params(IngestParams, parse_overrides(args.set), where="ingest")
    print(f"load average before: {os.getloadavg()}; ingest parameters: {params}", flush=True)
    ceiling = codec_only_mb_s(params.compression.numcodecs())
    print(f"compressor alone ({params.compression}): {ceiling:.1f} MB/s encode", flush=True)
    work = Path(tempfile.mkdtemp(prefix="zarrseg-bench-ingest-", dir=args.dir))
    results = []
    try:
        cases = [
            ("tiff", work / "big.tif", write_tiff, args.planes),
            ("czi", work / "mosaic.czi", write_czi, args.czi_planes),
        ]
        extra = [arg for item in args.set for arg in ("--set", item)]
        for kind, path, writer, planes in cases:
            start = time.perf_counter()
            writer(path, planes, args.size)
            gen_s = time.perf_counter() - start
            size_mb = path.stat().st_size / 1e6
            cold, warm = raw_read_mb_s(path)
            seconds, rss, cpu, code = run_ingest(path, work / f"{kind}.ome.zarr", extra)
            ingest_mb_s = size_mb / seconds
            row = {
                "input": kind,
                "file_MB": round(size_mb, 1),
                "generate_s": round(gen_s, 1),
                "raw_read_first_MB_s": round(cold, 1),
                "raw_read_warm_MB_s": round(warm, 1),
                "ingest_s": round(seconds, 1),
                "ingest_MB_s": round(ingest_mb_s, 1),
                "ingest_cpu_s": round(cpu, 1),
                "ingest_MB_per_cpu_s": round(size_mb / max(cpu, 1e-9), 1),
                "ratio_to_raw": round(ingest_mb_s / warm, 3),
                "ratio_to_compressor_alone": round(ingest_mb_s / ceiling, 3),
                "peak_rss_MB": round(rss, 1),
                "exit": code,
                "load_avg_1min": round(os.getloadavg()[0], 2),
            }
            results.append(row)
            print(json.dumps(row), flush=True)
            shutil.rmtree(work / f"{kind}.ome.zarr", ignore_errors=True)
            if not args.keep:
                path.unlink()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(
        f"{'input':6} {'file MB':>9} {'raw MB/s':>9} {'ingest MB/s':>12} {'ratio':>6} {'vs codec':>9} "
        f"{'peak RSS MB':>12}"
    )
    for r in results:
        print(
            f"{r['input']:6} {r['file_MB']:>9} {r['raw_read_warm_MB_s']:>9} {r['ingest_MB_s']:>12} "
            f"{r['ratio_to_raw']:>6} {r['ratio_to_compressor_alone']:>9} {r['peak_rss_MB']:>12}"
        )
    print(f"load average after: {os.getloadavg()}")
    for r in results:
        print(
            f"{r['input']}: {r['ingest_MB_per_cpu_s']} MB per CPU-second of ingest (user+sys, all threads); "
            f"{r['ingest_cpu_s']} CPU-s over {r['ingest_s']} s wall"
        )
    ok_ratio = all(r["ratio_to_raw"] >= TARGET_RATIO for r in results)
    ok_rss = all(r["peak_rss_MB"] < TARGET_RSS_MB for r in results)
    print(
        f"targets: throughput ratio >= {TARGET_RATIO}: {'met' if ok_ratio else 'NOT met'}; "
        f"peak RSS < {TARGET_RSS_MB} MB: {'met' if ok_rss else 'NOT met'}"
    )
    return 0 if all(r["exit"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
