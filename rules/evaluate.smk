# Score each segmentation against its ground truth, then one tidy table + summaries per experiment.


def method_of(cell):
    """The row label of a cell in summary tables: its grid row (ssl.row) or else its partitioner."""
    if "ssl.row" in cell_values(cell):
        return str(cell_values(cell)["ssl.row"])
    return load_params(SegmentParams, stage_json("segment", cell=cell), where="segment").partitioner


def benchmark_args(sample, cell):
    """--benchmark STAGE=TSV of the jobs that produced this segmentation (runtime, peak memory)."""
    if cell in SSL_CELLS:  # grid rows: labels by the cluster rule, of a prediction for U-Net rows
        args = [f"cluster={bench_path('cluster', sample, cell)}"]
        if thresholds_prediction(cell):
            args.append(f"predict={bench_path('predict', sample, predict_cell(cell))}")
        return " ".join(f"--benchmark {a}" for a in args)
    args = [f"segment={bench_path('segment', sample, cell)}"]
    if not SAMPLES[sample].boundaries:
        args.append(f"predict={bench_path('predict', sample, predict_cell(cell))}")
    return " ".join(f"--benchmark {a}" for a in args)


rule evaluate:
    input:
        labels=lambda w: labels_path(w.sample, w.cell),
        ground_truth=lambda w: scored_gt_path(w.sample, w.cell),  # rules/ssl.smk: binary foreground or as given
    output:
        f"{R}/{EXP}/{{sample}}/{{cell}}/metrics.parquet",
    params:
        json=lambda w: stage_json("evaluate", cell=w.cell),
        cell_params=lambda w: params_json(cell_values(w.cell)),
        method=lambda w: method_of(w.cell),
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
        " --meta method={params.method} --meta params={params.cell_params:q} {params.benchmarks}"
        " --params {params.json:q} -v 2> {log:q}"


rule aggregate:
    input:
        tables=lambda w: [metrics_path(s, c) for s in EXP_SAMPLES if SAMPLES[s].ground_truth for c in CELLS],
        figures=lambda w: panel_targets(),  # side-by-side figures of grids with rows (rules/ssl.smk)
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
        json=lambda w: stage_json("table"),
    conda:
        CPU_ENV
    log:
        log_path("table", "aggregate"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "{ZARRSEG} table {input.tables:q} -o {params.outdir:q} --figures {output.figures:q}"
        " --params {params.json:q} -v 2> {log:q}"
