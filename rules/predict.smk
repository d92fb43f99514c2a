# Boundary map of an ingested image: membrane intensity (method: intensity) or a U-Net (method: unet).



def predict_params(pcell):
    return json.loads(stage_json("predict", pcell=pcell))


def uses_gpu(pcell):
    return predict_params(pcell).get("method", "intensity") == "unet"


def predict_checkpoint(pcell):
    """The checkpoint a U-Net prediction needs: predict.checkpoint, where the value "train" means the
    model the train rule fits for this cell; none for the intensity method."""
    params = predict_params(pcell)
    if params.get("method", "intensity") != "unet":
        return []
    if params.get("checkpoint") == "train":
        return f"{R}/{EXP}/train/{pcell}/best.pt"
    return params.get("checkpoint") or []


rule predict:
    input:
        image=lambda w: image_path(w.sample),
        checkpoint=lambda w: predict_checkpoint(w.pcell),
    output:
        directory(f"{R}/{EXP}/{{sample}}/predict/{{pcell}}/boundaries.ome.zarr"),
    params:
        image=lambda w, input: staged_scene(input.image, SAMPLES[w.sample].scene),
        checkpoint=lambda w, input: f"--checkpoint {input.checkpoint}" if input.checkpoint else "",
        json=lambda w, input: stage_json("predict", pcell=w.pcell, channel=SAMPLES[w.sample].channel,
                                         **({"checkpoint": input.checkpoint} if input.checkpoint else {})),
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
        gpu=lambda w: 1 if uses_gpu(w.pcell) else 0,
    shell:
        "{ZARRSEG} predict {params.image:q} -o {output:q} {params.checkpoint} --params {params.json:q} -v 2> {log:q}"
