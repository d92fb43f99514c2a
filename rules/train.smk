# Train a U-Net boundary predictor on samples that have ground truth (config section `train`).
#
# Besides the TrainParams fields, the `train` section may name samples instead of paths:
#   train: {samples: [a, b], val_samples: [c], roi: "0:20", model: {...}, ...}
# (default samples: every experiment sample with ground truth). Names may be shell-style patterns
# ("train_*") matching samples of the sheet, which need not be among the experiment's (evaluated)
# samples: that is how a grid keeps its training images apart from the images it scores. Explicit
# `train.train` / `train.val` lists of {image, labels, roi} win. The checkpoint lands at
# {R}/{EXP}/train/{pcell}/best.pt.

from fnmatch import fnmatchcase


def match_samples(patterns, labelled=False):
    """Sample names of the sheet matching any of ``patterns`` (in sheet order); only those with
    ground truth when ``labelled``. A pattern matching nothing is an error, not a silent empty set."""
    names = []
    for pattern in patterns:
        found = [s for s in SAMPLES if fnmatchcase(s, pattern)]
        if not found:
            raise ValueError(f"train.samples entry {pattern!r} matches no sample of the sample sheet")
        names += found
    names = list(dict.fromkeys(names))
    return [s for s in names if SAMPLES[s].ground_truth] if labelled else names


def train_config(pcell):
    params = json.loads(stage_json("train", pcell=pcell))
    patterns = params.pop("samples", None)
    samples = (match_samples(patterns, labelled=True) if patterns
               else [s for s in EXP_SAMPLES if SAMPLES[s].ground_truth])
    val = match_samples(params.pop("val_samples", None) or [], labelled=True)
    roi = params.pop("roi", None)
    return params, samples, val, roi


def train_item(sample, roi):
    item = {"image": staged_scene(image_path(sample), SAMPLES[sample].scene), "labels": ground_truth_path(sample),
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


# On demand (not part of the default targets): a BioImage.IO / TorchScript package of a trained model,
#   snakemake ... results/<experiment>/train/<cell>/bioimageio/rdf.yaml
rule export:
    input:
        f"{R}/{EXP}/train/{{pcell}}/best.pt",
    output:
        rdf=f"{R}/{EXP}/train/{{pcell}}/bioimageio/rdf.yaml",
    params:
        outdir=lambda w, output: str(Path(output.rdf).parent),
        name=lambda w: f"zarrseg {EXP} {w.pcell}",
    conda:
        CPU_ENV
    log:
        log_path("export", "{pcell}"),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "{ZARRSEG} export {input:q} -o {params.outdir:q} --name {params.name:q} -v 2> {log:q}"
