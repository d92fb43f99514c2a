# Dense map of an ingested image: membrane intensity (predict.method: intensity) or a trained model
# (predict.method: model with a checkpoint, e.g. "model:unet" trained by rules/train.smk).


def predict_values(pcell):
    return PLAN.subcells[("predict", pcell)]


rule predict:
    input:
        image=lambda w: image_path(w.sample),
        checkpoint=lambda w: PLAN.checkpoints("predict", predict_values(w.pcell), w.sample),
    output:
        directory(f"{R}/{EXP}/{{sample}}/predict/{{pcell}}/boundaries.ome.zarr"),
    params:
        image=lambda w: image_input(w.sample),
        json=lambda w, threads: blockwise_json(
            "predict", threads, values=predict_values(w.pcell), sample=w.sample, channel=SAMPLES[w.sample].channel
        ),
    conda:
        GPU_ENV
    log:
        log_path("predict", "{sample}", "{pcell}"),
    benchmark:
        bench_path("predict", "{sample}", "{pcell}")
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=lambda w: PLAN.stage_gpu("predict", predict_values(w.pcell)),
    shell:
        "{ZARRSEG} predict {params.image:q} -o {output:q} --params {params.json:q} -v 2> {log:q}"
