# Stage raw CZI / TIFF / OME-TIFF / PNG / JPEG (and HDF5 "file.h5:dataset") inputs into OME-Zarr.
# Ingest encodes chunks on every core it is given (--set threads={threads}; not a parameter, so
# another --cores does not rerun it).


rule ingest:
    input:
        lambda w: source_file(SAMPLES[w.sample].image),
    output:
        directory(f"{R}/ingest/{{sample}}/image.ome.zarr"),
    params:
        source=lambda w: SAMPLES[w.sample].image,
        scene=lambda w: SAMPLES[w.sample].scene,  # one scene per sample: a plain image (see staged_scene)
        json=lambda w: stage_json("ingest"),
    conda:
        CPU_ENV
    log:
        log_path("ingest", "{sample}", "image"),
    benchmark:
        bench_path("ingest", "{sample}", "image")
    resources:
        mem_mb=2000,
        runtime=60,
    threads: 4
    shell:
        "{ZARRSEG} ingest {params.source:q} --scene {params.scene} -o {output:q} --params {params.json:q}"
        " --set threads={threads} -v 2> {log:q}"


rule ingest_ground_truth:
    input:
        lambda w: source_file(SAMPLES[w.sample].ground_truth),
    output:
        directory(f"{R}/ingest/{{sample}}/ground_truth.ome.zarr"),
    params:
        source=lambda w: SAMPLES[w.sample].ground_truth,
        json=lambda w: stage_json("ingest"),
    conda:
        CPU_ENV
    log:
        log_path("ingest", "{sample}", "ground_truth"),
    benchmark:
        bench_path("ingest", "{sample}", "ground_truth")
    resources:
        mem_mb=2000,
        runtime=60,
    threads: 4
    shell:
        "{ZARRSEG} ingest {params.source:q} --labels -o {output:q} --params {params.json:q} --set threads={threads}"
        " -v 2> {log:q}"


rule ingest_boundaries:
    input:
        lambda w: source_file(SAMPLES[w.sample].boundaries),
    output:
        directory(f"{R}/ingest/{{sample}}/given_boundaries.ome.zarr"),
    params:
        source=lambda w: SAMPLES[w.sample].boundaries,
        json=lambda w: stage_json("ingest"),
    conda:
        CPU_ENV
    log:
        log_path("ingest", "{sample}", "boundaries"),
    benchmark:
        bench_path("ingest", "{sample}", "boundaries")
    resources:
        mem_mb=2000,
        runtime=60,
    threads: 4
    shell:
        "{ZARRSEG} ingest {params.source:q} -o {output:q} --params {params.json:q} --set threads={threads} -v 2> {log:q}"
