# ViT patch features of an ingested image (features.checkpoint: a file, or "model:<method>" trained by
# rules/train.smk, e.g. grid.model: dino), for the cluster rule.


def features_values(fcell):
    return PLAN.subcells[("features", fcell)]


rule features:
    input:
        image=lambda w: image_path(w.sample),
        checkpoint=lambda w: PLAN.checkpoints("features", features_values(w.fcell), w.sample),
    output:
        features=directory(f"{R}/{EXP}/{{sample}}/features/{{fcell}}/features.zarr"),
        # CLS attention PNGs of the first tile: declared, so Snakemake knows every file the job writes
        attention=directory(f"{R}/{EXP}/{{sample}}/features/{{fcell}}/attention"),
    params:
        image=lambda w: image_input(w.sample),
        json=lambda w, threads: blockwise_json("features", threads, values=features_values(w.fcell), sample=w.sample),
        channel=lambda w: SAMPLES[w.sample].channel,
    wildcard_constraints:
        fcell="[A-Za-z0-9_.+-]+",
    conda:
        GPU_ENV
    log:
        log_path("features", "{sample}", "{fcell}"),
    benchmark:
        bench_path("features", "{sample}", "{fcell}")
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=lambda w: PLAN.stage_gpu("features", features_values(w.fcell)),
    shell:
        "{ZARRSEG} features {params.image:q} -o {output.features:q} --attention {output.attention:q}"
        " --params {params.json:q} --set preprocess.channel={params.channel} -v 2> {log:q}"
