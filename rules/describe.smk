# Segment counts and sizes and a thumbnail of every segmentation (no ground truth needed), one
# table of them per experiment, and the per-sample target the nightly command builds.


def segments_path(sample, cell):
    return f"{R}/{EXP}/{sample}/{cell}/segments.parquet"


def thumbnail_path(sample, cell):
    return f"{R}/{EXP}/{sample}/{cell}/thumbnail.png"


def sample_targets(sample):
    """Everything one sample gets: labels, their description and thumbnail, metrics when it has ground truth."""
    targets = [path for c in CELLS for path in (labels_path(sample, c), segments_path(sample, c))]
    if SAMPLES[sample].ground_truth:
        targets += [metrics_path(sample, c) for c in CELLS]
    return targets


def summary_targets():
    """The segments table of the experiment, for runs where some sample has no ground truth."""
    return [f"{R}/{EXP}/segments.md"] if any(not SAMPLES[s].ground_truth for s in EXP_SAMPLES) else []


rule describe:
    input:
        labels=lambda w: labels_path(w.sample, w.cell),
        image=lambda w: image_path(w.sample),
    output:
        table=f"{R}/{EXP}/{{sample}}/{{cell}}/segments.parquet",
        thumbnail=report(
            f"{R}/{EXP}/{{sample}}/{{cell}}/thumbnail.png",
            category="Segmentations",
            labels={"sample": "{sample}", "cell": "{cell}"},
        ),
    params:
        image=lambda w: image_input(w.sample),
        channel=lambda w: SAMPLES[w.sample].channel,
    conda:
        CPU_ENV
    log:
        log_path("describe", "{sample}", "{cell}"),
    benchmark:
        bench_path("describe", "{sample}", "{cell}")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "{ZARRSEG} describe {input.labels:q} --image {params.image:q} --channel {params.channel}"
        " --thumbnail {output.thumbnail:q} -o {output.table:q} --meta experiment={EXP}"
        " --meta sample={wildcards.sample} --meta cell={wildcards.cell} --set n_workers={threads} -v 2> {log:q}"


def described_tables(wildcards=None):
    return [segments_path(s, c) for s in EXP_SAMPLES for c in CELLS]


rule segments_list:
    """The segment tables, one path per line (`zarrseg describe --summary @LIST`; see metrics_list)."""
    input:
        described_tables,
    output:
        f"{R}/{EXP}/segments_inputs.txt",
    run:
        write_lines(output[0], input)


rule segments_summary:
    input:
        tables=described_tables,
        listing=rules.segments_list.output[0],
    output:
        markdown=f"{R}/{EXP}/segments.md",
        table=f"{R}/{EXP}/segments.parquet",
        csv=report(f"{R}/{EXP}/segments.csv", category="Summary"),
    params:
        outdir=f"{R}/{EXP}",
    conda:
        CPU_ENV
    log:
        log_path("describe", "summary"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "{ZARRSEG} describe --summary @{input.listing:q} -o {params.outdir:q} -v > /dev/null 2> {log:q}"


rule samples:
    """Every sample's own outputs and nothing experiment-wide (what `zarrseg nightly` builds)."""
    input:
        lambda w: [path for s in EXP_SAMPLES for path in sample_targets(s)],
