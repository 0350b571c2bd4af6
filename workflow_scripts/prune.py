from opera import pipeline

pipeline.run_job(snakemake, lambda: pipeline.prune(
    snakemake.input.pairs, snakemake.wildcards.method, snakemake.params.method_params,
    snakemake.output.pairs, snakemake.output.report))
