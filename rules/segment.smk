# Blockwise DT-watershed supervoxels -> region adjacency graph -> partitioning, over Dask.


def segment_json(w, threads):
    params = json.loads(stage_json("segment", cell=w.cell))
    dask = params.setdefault("dask", {})
    if not dask.get("n_workers"):
        dask["n_workers"] = threads  # use exactly the cores Snakemake gave this job
    return params_json(params)


rule segment:
    input:
        boundaries=lambda w: boundaries_path(w.sample, w.cell),
    output:
        directory(f"{R}/{EXP}/{{sample}}/{{cell}}/labels.ome.zarr"),
    params:
        json=lambda w, threads: segment_json(w, threads),
    conda:
        CPU_ENV
    log:
        log_path("segment", "{sample}", "{cell}"),
    benchmark:
        bench_path("segment", "{sample}", "{cell}")
    threads: 2
    resources:
        mem_mb=4000,
        runtime=240,
    shell:
        "{ZARRSEG} segment {input.boundaries:q} -o {output:q} --params {params.json:q} -v 2> {log:q}"
