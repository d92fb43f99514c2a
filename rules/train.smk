# Train a U-Net boundary predictor on samples that have ground truth (config section `train`).
#
# Besides the TrainParams fields, the `train` section may name samples instead of paths:
#   train: {samples: [a, b], val_samples: [c], roi: "0:20", model: {...}, ...}
# (default samples: every sample with ground truth). Explicit `train.train` / `train.val` lists of
# {image, labels, roi} win. The checkpoint lands at {R}/{EXP}/train/{pcell}/best.pt.


def train_config(pcell):
    params = json.loads(stage_json("train", pcell=pcell))
    samples = params.pop("samples", None) or [s for s in EXP_SAMPLES if SAMPLES[s].ground_truth]
    val = params.pop("val_samples", None) or []
    roi = params.pop("roi", None)
    return params, samples, val, roi


def train_item(sample, roi):
    item = {"image": f"{image_path(sample)}/{SAMPLES[sample].scene}", "labels": ground_truth_path(sample),
            "channel": SAMPLES[sample].channel}
    if roi:
        item["roi"] = roi
    return item


def train_json(pcell):
    params, samples, val, roi = train_config(pcell)
    params.setdefault("train", [train_item(s, roi) for s in samples])
    params.setdefault("val", [train_item(s, None) for s in val])
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def train_inputs(pcell):
    params, samples, val, _roi = train_config(pcell)
    if "train" in params:  # explicit paths: nothing for Snakemake to build
        return []
    names = list(dict.fromkeys([*samples, *val]))
    return [image_path(s) for s in names] + [ground_truth_path(s) for s in names]


rule train:
    input:
        lambda w: train_inputs(w.pcell),
    output:
        best=f"{R}/{EXP}/train/{{pcell}}/best.pt",
        last=f"{R}/{EXP}/train/{{pcell}}/last.pt",
        metrics=f"{R}/{EXP}/train/{{pcell}}/metrics.csv",
    params:
        json=lambda w: train_json(w.pcell),
        outdir=lambda w, output: str(Path(output.best).parent),
    conda:
        GPU_ENV
    log:
        log_path("train", "{pcell}"),
    benchmark:
        bench_path("train", "{pcell}")
    threads: 4
    resources:
        mem_mb=16000,
        runtime=720,
        gpu=1,
    shell:
        "{ZARRSEG} train -o {params.outdir:q} --params {params.json:q} -v 2> {log:q}"
