# Blockwise DT-watershed supervoxels -> region adjacency graph -> partitioning, over Dask.


rule segment:
    input:
        boundaries=lambda w: boundaries_path(w.sample, w.cell),
    output:
        directory(f"{R}/{EXP}/{{sample}}/{{cell}}/labels.ome.zarr"),
    params:
        json=lambda w, threads: blockwise_json("segment", threads, cell=w.cell),
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
