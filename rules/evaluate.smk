# Score each segmentation against its ground truth, then one tidy table + summaries per experiment.

import shlex


def benchmark_args(sample, cell):
    """--benchmark STAGE=TSV of the jobs that produced this segmentation (runtime, peak memory)."""
    values = PLAN.values(cell)
    pcell = PLAN.subcell("predict", values)
    if cell in CLUSTERED:
        args = [f"cluster={bench_path('cluster', sample, cell)}"]
        source = PLAN.cluster_source(sample, cell)
        if source == PLAN.prediction_path(sample, cell):
            args.append(f"predict={bench_path('predict', sample, pcell)}")
    else:
        args = [f"segment={bench_path('segment', sample, cell)}"]
        if not SAMPLES[sample].boundaries:
            args.append(f"predict={bench_path('predict', sample, pcell)}")
    return " ".join(f"--benchmark {a}" for a in args)


rule evaluate:
    input:
        labels=lambda w: labels_path(w.sample, w.cell),
        ground_truth=lambda w: scored_gt_path(w.sample, w.cell),  # rules/cluster.smk: binary foreground or as given
    output:
        f"{R}/{EXP}/{{sample}}/{{cell}}/metrics.parquet",
    params:
        json=lambda w, threads: blockwise_json("evaluate", threads, cell=w.cell),
        cell_params=lambda w: params_json(cell_values(w.cell)),
        method=lambda w: PLAN.row_label(w.cell),
        benchmarks=lambda w: benchmark_args(w.sample, w.cell),
    conda:
        CPU_ENV
    log:
        log_path("evaluate", "{sample}", "{cell}"),
    benchmark:
        bench_path("evaluate", "{sample}", "{cell}")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    shell:
        "{ZARRSEG} evaluate {input.labels:q} --gt {input.ground_truth:q} -o {output:q}"
        " --meta experiment={EXP} --meta sample={wildcards.sample} --meta cell={wildcards.cell}"
        " --meta method={params.method:q} --meta params={params.cell_params:q} {params.benchmarks}"
        " --params {params.json:q} -v 2> {log:q}"


def scored_metrics(wildcards=None):
    return [metrics_path(s, c) for s in EXP_SAMPLES if SAMPLES[s].ground_truth for c in CELLS]


rule metrics_list:
    """The experiment's metric tables, one path per line: `zarrseg table @LIST` reads them from the
    file, as a grid of thousands of cells does not fit in one command line (128 KiB)."""
    input:
        scored_metrics,
    output:
        f"{R}/{EXP}/metrics_inputs.txt",
    run:
        write_lines(output[0], input)


rule aggregate:
    input:
        tables=scored_metrics,
        listing=rules.metrics_list.output[0],
        figures=lambda w: panel_targets(),  # side-by-side figures of grids with rows (below)
    output:
        # report(): what `snakemake --report` (make report) shows; CSV tables render as tables there
        summary=report(f"{R}/{EXP}/summary.md", category="Summary"),
        summary_csv=report(f"{R}/{EXP}/summary.csv", category="Summary"),
        best=report(f"{R}/{EXP}/best.csv", category="Summary"),
        table=f"{R}/{EXP}/metrics.parquet",
        # a folder of its own: the panels rule writes side-by-side figures into figures/
        figures=report(directory(f"{R}/{EXP}/figures/table"), patterns=["{name}.png"], category="Figures"),
    params:
        outdir=f"{R}/{EXP}",
        json=lambda w: stage_json("table", values=EXPERIMENT.fixed),  # a grid may fix its table layout
    conda:
        CPU_ENV
    log:
        log_path("table", "aggregate"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "{ZARRSEG} table @{input.listing:q} -o {params.outdir:q} --figures {output.figures:q}"
        " --params {params.json:q} -v 2> {log:q}"


# (cell, title) of the side-by-side figures: a panel per grid row and setting, the first seed of each
# (none when panels.enabled is false in the config or the experiment). Computed once: every panels
# job's inputs and parameters ask for it.
PANEL_CELLS = (PLAN.panel_cells(CELLS) if stage_params(config, "panels", EXPERIMENT.fixed).get("enabled", True)
               else [])


def panel_cells():
    return PANEL_CELLS


def panels_path(sample):
    return f"{R}/{EXP}/figures/{sample}_side_by_side.png"


def panel_targets():
    """Side-by-side figures of every scored sample (grids with rows only)."""
    if not panel_cells():
        return []
    return [panels_path(s) for s in EXP_SAMPLES if SAMPLES[s].ground_truth]


def panel_labels(w, input):
    return " ".join(shlex.quote(f"--labels={title}={labels_path(w.sample, c)}") for c, title in panel_cells())


rule panels:
    """original | every grid row | ground truth for one sample (thesis Tables 3.5-3.7)."""
    input:
        image=lambda w: image_path(w.sample),
        labels=lambda w: [labels_path(w.sample, c) for c, _title in panel_cells()],
        ground_truth=lambda w: scored_gt_path(w.sample, panel_cells()[0][0]),
    output:
        f"{R}/{EXP}/figures/{{sample}}_side_by_side.png",
    params:
        image=lambda w: image_input(w.sample),
        labels=panel_labels,
        json=lambda w: params_json(
            {"channel": SAMPLES[w.sample].channel, **stage_params(config, "panels", EXPERIMENT.fixed)}
        ),
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
