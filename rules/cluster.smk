# Labels by clustering instead of segmentation, for cells whose labels route (grid.labels, or the
# post-processing of the cell's learning method in the registry) is "cluster", "threshold" or "argmax":
# K-means / HDBSCAN of ViT features or of the image's patch (or superpixel) colours, a probability
# map split at cluster.threshold, or a soft class map labelled by its argmax. Every route ends as
# labels.ome.zarr where the segment rule writes labels, so evaluate / aggregate score all cells
# alike ("ruleorder: cluster > segment" picks this rule for the clustered cells only). With
# cluster.foreground: ground_truth, embeddings are clustered inside the sample's ground truth only.


def cluster_input(w):
    return PLAN.cluster_source(w.sample, w.cell)


rule cluster:
    input:
        source=cluster_input,
        image=lambda w: image_path(w.sample),
        foreground=lambda w: PLAN.cluster_foreground(w.sample, w.cell) or [],
    output:
        directory(f"{R}/{EXP}/{{sample}}/{{cell}}/labels.ome.zarr"),
    wildcard_constraints:
        cell="|".join(map(re.escape, CLUSTERED)) if CLUSTERED else "NOCLUSTERCELL",
    params:
        source=lambda w, input: image_input(w.sample) if input.source == image_path(w.sample) else input.source,
        image=lambda w: image_input(w.sample),
        json=lambda w, threads: params_json(with_workers(PLAN.cluster_params(w.cell), threads)),
        foreground=lambda w, input: f"--foreground {shlex.quote(input.foreground)}" if input.foreground else "",
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
        "{ZARRSEG} cluster {params.source:q} --image {params.image:q} {params.foreground} -o {output:q}"
        " --params {params.json:q} -v 2> {log:q}"


ruleorder: cluster > segment


def foreground_gt_path(sample):
    return f"{R}/{EXP}/{sample}/ground_truth_foreground.ome.zarr"


def scored_gt_path(sample, cell):
    """The ground truth a cell is scored against: as given, or its binary foreground (grid.ground_truth)."""
    return foreground_gt_path(sample) if PLAN.scores_foreground(cell) else ground_truth_path(sample)


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
