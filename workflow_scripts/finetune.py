from pathlib import Path

from opera import pipeline

pipeline.run_job(snakemake, lambda: pipeline.finetune_job(
    data_dir=snakemake.input.data,
    score_dir=Path(snakemake.input.score).parent,
    kept_pairs_path=snakemake.input.pairs,
    settings=snakemake.params.settings,
    method=snakemake.wildcards.method,
    method_params=snakemake.params.method_params,
    seed=int(snakemake.wildcards.seed),
    title_join=snakemake.params.title_join,
    out_dir=snakemake.output[0],
    work_dir=snakemake.params.work_dir,
    gpus=snakemake.resources.gpu,
))
