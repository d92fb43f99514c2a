# Self-supervised path: DINO pretraining / reconstruction fine-tuning of a ViT on the experiment's
# images, ViT feature volumes, and clustering into label images (thesis: Zöngür, Table 3.4).
#
# Grid rows are chosen by the cell value "ssl.row" (config/experiments/unsupervised_vs_supervised.yaml):
#   colour_kmeans   K-means on the mean colour of m x m patches (cluster.colour_patch)
#   dino            clustering of ViT features; weights: features.checkpoint, else features.weights=hub,
#                   else (pretrain.images_from_samples) a ViT pretrained here by 'zarrseg pretrain'
#   dino_finetuned  the same ViT after reconstruction fine-tuning ('zarrseg finetune')
# Rows of other kinds (U-Net at a supervision level) are produced by the train/predict rules.
# Outputs of the cluster rule sit where the segment rule writes labels, so the evaluate/aggregate rules
# score both; "ruleorder: cluster > segment" picks this rule for SSL cells only (wildcard constraint).

SSL_ROWS = ("colour_kmeans", "dino", "dino_finetuned")


def ssl_row(cell):
    return cell_values(cell).get("ssl.row")


SSL_CELLS = [c for c in CELLS if ssl_row(c) in SSL_ROWS]


def ssl_json(stage, **extra):
    """Parameters of a stage that is shared by all cells (models, features): config + the grid's fixed keys."""
    params = stage_params(config, stage, EXPERIMENT.fixed)
    params.update(extra)
    return params_json(params)


def ssl_images():
    """Every ingested image of the experiment: the (unlabelled) training set of pretrain/finetune."""
    return [image_path(s) for s in EXP_SAMPLES]


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


def cluster_input(w):
    row = ssl_row(w.cell)
    if row == "colour_kmeans":
        return image_path(w.sample)
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
        image=lambda w, input: f"{input.image}/{SAMPLES[w.sample].scene}",
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
        source=lambda w, input: (f"{input.source}/{SAMPLES[w.sample].scene}"
                                 if ssl_row(w.cell) == "colour_kmeans" else input.source),
        image=lambda w, input: f"{input.image}/{SAMPLES[w.sample].scene}",
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
