# Train every learning method a grid cell uses ("model:<method>" references, grid.model), one job
# per model: {R}/{EXP}/models/<method>/<model id>/best.pt. The method's config section holds its
# parameters; its workflow keys `samples` / `val_samples` / `roi` choose the training samples
# (names or shell patterns, e.g. "train_*", which need not be among the experiment's evaluated
# samples: that is how a grid keeps its training images apart from the images it scores).
# A killed training resumes from last.pt (--resume auto) when the job runs again.


rule train:
    input:
        lambda w: PLAN.model_inputs(w.method, w.mcell),
    output:
        best=f"{R}/{EXP}/models/{{method}}/{{mcell}}/best.pt",
    params:
        json=lambda w: params_json(PLAN.model_params(w.method, w.mcell)),
        outdir=lambda w, output: str(Path(output.best).parent),
    conda:
        GPU_ENV
    log:
        log_path("train", "{method}", "{mcell}"),
    benchmark:
        bench_path("train", "{method}", "{mcell}")
    threads: 4
    resources:  # per method: its section's `resources` (no GPU where loop.device is cpu)
        mem_mb=lambda w: PLAN.model_resources(w.method, w.mcell)["mem_mb"],
        runtime=lambda w: PLAN.model_resources(w.method, w.mcell)["runtime"],
        gpu=lambda w: PLAN.model_resources(w.method, w.mcell)["gpu"],
    shell:
        "{ZARRSEG} train --method {wildcards.method} -o {params.outdir:q} --resume auto"
        " --params {params.json:q} -v 2> {log:q}"


# On demand (not part of the default targets): a BioImage.IO / TorchScript package of a trained U-Net,
#   snakemake ... results/<experiment>/models/unet/<model id>/bioimageio/rdf.yaml
rule export:
    input:
        f"{R}/{EXP}/models/{{method}}/{{mcell}}/best.pt",
    output:
        rdf=f"{R}/{EXP}/models/{{method}}/{{mcell}}/bioimageio/rdf.yaml",
    params:
        outdir=lambda w, output: str(Path(output.rdf).parent),
        name=lambda w: f"zarrseg {EXP} {w.method} {w.mcell}",
    conda:
        CPU_ENV
    log:
        log_path("export", "{method}", "{mcell}"),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "{ZARRSEG} export {input:q} -o {params.outdir:q} --name {params.name:q} -v 2> {log:q}"
