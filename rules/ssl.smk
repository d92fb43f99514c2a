# Self-supervised path: DINO pretraining / reconstruction fine-tuning of a ViT on the experiment's
# images, ViT feature volumes, and clustering into label images (thesis: Zöngür, Table 3.4).
#
# Grid rows are chosen by the cell value "ssl.row" (config/experiments/unsupervised_vs_supervised.yaml):
#   colour_kmeans   K-means on the mean colour of m x m patches (cluster.colour_patch)
#   dino            clustering of ViT features; weights: features.checkpoint, else features.weights=hub,
#                   else a ViT pretrained here by 'zarrseg pretrain'
#   dino_finetuned  the same ViT after reconstruction fine-tuning ('zarrseg finetune')
#   any other row   a cell whose cluster.method is "threshold" splits the predict stage's output of the
#                   cell (e.g. a foreground U-Net trained by the train rule: predict.method unet,
#                   predict.checkpoint train) at cluster.threshold into labels 1 / 2
# Every row ends as labels.ome.zarr where the segment rule writes labels, so the evaluate/aggregate
# rules score all rows alike; "ruleorder: cluster > segment" picks this rule for grid-row cells only.
#
# Rule-level keys of the experiment (not stage parameters):
#   ssl.row                the row of a cell (its label in summary tables)
#   ssl.ground_truth       "foreground": score against the binary foreground of the ground truth
#                          (label > 0), for rows that label foreground / background
# Training images: pretrain, finetune (no labels used) and the U-Nets (train rule) learn from the
# samples named by train.samples (patterns allowed, see rules/train.smk), which the experiment keeps
# out of its evaluated samples; without train.samples, from the experiment's samples.
# Figures: {R}/{EXP}/figures/<sample>_side_by_side.png (original | every row | ground truth), built
# with the summary table.


def ssl_row(cell):
    return cell_values(cell).get("ssl.row")


import shlex

SSL_CELLS = [c for c in CELLS if ssl_row(c) is not None]


def thresholds_prediction(cell):
    """Rows whose labels are the cell's prediction split at a threshold (U-Net rows)."""
    return json.loads(stage_json("cluster", cell=cell)).get("method") == "threshold"


def foreground_gt(cell):
    return cell_values(cell).get("ssl.ground_truth") == "foreground"


def foreground_gt_path(sample):
    return f"{R}/{EXP}/{sample}/ground_truth_foreground.ome.zarr"


def scored_gt_path(sample, cell):
    """The ground truth a cell is scored against (used by rules/evaluate.smk)."""
    return foreground_gt_path(sample) if foreground_gt(cell) else ground_truth_path(sample)


def ssl_json(stage, **extra):
    """Parameters of a stage that is shared by all cells (models, features): config + the grid's fixed keys."""
    params = stage_params(config, stage, EXPERIMENT.fixed)
    params.update(extra)
    return params_json(params)


def ssl_images():
    """The (unlabelled) training set of pretrain/finetune: train.samples, else the experiment's samples."""
    patterns = stage_params(config, "train", EXPERIMENT.fixed).get("samples")
    return [image_path(s) for s in (match_samples(patterns) if patterns else EXP_SAMPLES)]


def ssl_model_dir(kind):
    return f"{R}/{EXP}/ssl_models/{kind}"


def dino_checkpoint():
    """Weights of the 'dino' row: a configured checkpoint, hub weights (none), or our own pretraining."""
    params = json.loads(ssl_json("features"))
    if params.get("checkpoint"):
        return params["checkpoint"]
    if params.get("weights") == "hub":
        return []
    return f"{ssl_model_dir('pretrain')}/checkpoint.pt"


def features_checkpoint(model):
    return dino_checkpoint() if model == "dino" else f"{ssl_model_dir('finetune')}/checkpoint.pt"


def prediction_path(sample, cell):
    return f"{R}/{EXP}/{sample}/predict/{predict_cell(cell)}/boundaries.ome.zarr"


def cluster_input(w):
    row = ssl_row(w.cell)
    if thresholds_prediction(w.cell):
        return prediction_path(w.sample, w.cell)
    if row == "colour_kmeans":
        return image_path(w.sample)
    if row not in ("dino", "dino_finetuned"):
        raise ValueError(f"grid row {row!r}: not colour_kmeans/dino/dino_finetuned and cluster.method is "
                         "not 'threshold' (of a prediction)")
    return f"{R}/{EXP}/{w.sample}/ssl/{row}/features.zarr"


def train_list(images):
    return params_json({"images": list(images)})


wildcard_constraints:
    model="dino|dino_finetuned",


rule pretrain:
    input:
        images=ssl_images(),
    output:
        checkpoint=f"{ssl_model_dir('pretrain')}/checkpoint.pt",
    params:
        outdir=ssl_model_dir("pretrain"),
        json=lambda w: ssl_json("pretrain"),
        images=lambda w, input: train_list(input.images),
    conda:
        GPU_ENV
    log:
        log_path("pretrain", "model"),
    benchmark:
        bench_path("pretrain", "model")
    threads: 4
    resources:
        mem_mb=16000,
        runtime=24 * 60,
        gpu=1,
    shell:
        "{ZARRSEG} pretrain -o {params.outdir:q} --params {params.json:q} --params {params.images:q} -v 2> {log:q}"


rule finetune:
    input:
        images=ssl_images(),
        checkpoint=lambda w: dino_checkpoint(),
    output:
        checkpoint=f"{ssl_model_dir('finetune')}/checkpoint.pt",
    params:
        outdir=ssl_model_dir("finetune"),
        checkpoint=lambda w, input: f"--checkpoint {input.checkpoint}" if input.checkpoint else "",
        json=lambda w: ssl_json("finetune"),
        images=lambda w, input: train_list(input.images),
    conda:
        GPU_ENV
    log:
        log_path("finetune", "model"),
    benchmark:
        bench_path("finetune", "model")
    threads: 4
    resources:
        mem_mb=16000,
        runtime=12 * 60,
        gpu=1,
    shell:
        "{ZARRSEG} finetune -o {params.outdir:q} {params.checkpoint} --params {params.json:q}"
        " --params {params.images:q} -v 2> {log:q}"


rule features:
    input:
        image=lambda w: image_path(w.sample),
        checkpoint=lambda w: features_checkpoint(w.model),
    output:
        directory(f"{R}/{EXP}/{{sample}}/ssl/{{model}}/features.zarr"),
    params:
        image=lambda w, input: staged_scene(input.image, SAMPLES[w.sample].scene),
        checkpoint=lambda w, input: f"--checkpoint {input.checkpoint}" if input.checkpoint else "",
        attention=lambda w: f"{R}/{EXP}/{w.sample}/ssl/{w.model}/attention",
        json=lambda w: ssl_json("features", preprocess={
            **json.loads(ssl_json("features")).get("preprocess", {}), "channel": SAMPLES[w.sample].channel}),
    conda:
        GPU_ENV
    log:
        log_path("features", "{sample}", "{model}"),
    benchmark:
        bench_path("features", "{sample}", "{model}")
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=1,
    shell:
        "{ZARRSEG} features {params.image:q} -o {output:q} {params.checkpoint} --attention {params.attention:q}"
        " --params {params.json:q} -v 2> {log:q}"


rule cluster:
    input:
        source=cluster_input,
        image=lambda w: image_path(w.sample),
    output:
        directory(f"{R}/{EXP}/{{sample}}/{{cell}}/labels.ome.zarr"),
    wildcard_constraints:
        cell="|".join(map(re.escape, SSL_CELLS)) if SSL_CELLS else "NOSSLCELL",
    params:
        source=lambda w, input: (staged_scene(input.source, SAMPLES[w.sample].scene)
                                 if input.source == image_path(w.sample) else input.source),
        image=lambda w, input: staged_scene(input.image, SAMPLES[w.sample].scene),
        json=lambda w: stage_json("cluster", cell=w.cell),
    conda:
        CPU_ENV
    log:
        log_path("cluster", "{sample}", "{cell}"),
    benchmark:
        bench_path("cluster", "{sample}", "{cell}")
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    shell:
        "{ZARRSEG} cluster {params.source:q} --image {params.image:q} -o {output:q}"
        " --params {params.json:q} -v 2> {log:q}"


ruleorder: cluster > segment


rule foreground_ground_truth:
    """Binary foreground (label > 0 -> 2, background -> 1) of an ingested ground truth."""
    input:
        lambda w: ground_truth_path(w.sample),
    output:
        directory(f"{R}/{EXP}/{{sample}}/ground_truth_foreground.ome.zarr"),
    params:
        json=params_json({"method": "threshold", "threshold": 0.5}),
    conda:
        CPU_ENV
    log:
        log_path("cluster", "{sample}", "ground_truth_foreground"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "{ZARRSEG} cluster {input:q} -o {output:q} --params {params.json:q} -v 2> {log:q}"


def panel_cells():
    return SSL_CELLS


def panels_path(sample):
    return f"{R}/{EXP}/figures/{sample}_side_by_side.png"


def panel_targets():
    """Side-by-side figures of every scored sample (grids with rows only)."""
    if not panel_cells():
        return []
    return [panels_path(s) for s in EXP_SAMPLES if SAMPLES[s].ground_truth]


def panel_labels(w, input):
    return " ".join(shlex.quote(f"--labels={ssl_row(c)}={labels_path(w.sample, c)}") for c in panel_cells())


rule panels:
    """original | every grid row | ground truth for one sample (thesis Tables 3.5-3.7)."""
    input:
        image=lambda w: image_path(w.sample),
        labels=lambda w: [labels_path(w.sample, c) for c in panel_cells()],
        ground_truth=lambda w: scored_gt_path(w.sample, panel_cells()[0]),
    output:
        f"{R}/{EXP}/figures/{{sample}}_side_by_side.png",
    params:
        image=lambda w, input: staged_scene(input.image, SAMPLES[w.sample].scene),
        labels=panel_labels,
        json=lambda w: params_json({"channel": SAMPLES[w.sample].channel, **(config.get("panels") or {})}),
    conda:
        CPU_ENV
    log:
        log_path("panels", "{sample}"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "{ZARRSEG} panels {params.image:q} {params.labels} --gt {input.ground_truth:q} -o {output:q}"
        " --params {params.json:q} -v 2> {log:q}"
