# Sliding-window crops of the middle planes of staged images, split by acquisition (crops.split:
# split name -> sample names / shell patterns), into one crop store per set of crops.* values:
# {R}/{EXP}/crops/<id>/ (Zarr arrays <split>/image, <split>/mask + origins.parquet). Methods that
# learn from crops read it (registry data "crops"); any parameter may name a path inside it as
# "crops:<path>" (e.g. train.train: [{image: crops:finetune/image, labels: crops:finetune/mask}]).


rule crops:
    input:
        lambda w: PLAN.crops_inputs(w.ccell),
    output:
        directory(f"{R}/{EXP}/crops/{{ccell}}"),
    params:
        json=lambda w: params_json(PLAN.crops_params(w.ccell)),
    wildcard_constraints:
        ccell="[A-Za-z0-9_.+-]+",
    conda:
        CPU_ENV
    log:
        log_path("crops", "{ccell}"),
    benchmark:
        bench_path("crops", "{ccell}")
    # two processes: a reader (planes, masks) and the stage (normalise, cut, write); ~1.7 cores busy
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    shell:
        "{ZARRSEG} crops -o {output:q} --params {params.json:q} -v 2> {log:q}"
