from opera import pipeline

pipeline.job_setup(snakemake.log, snakemake.threads)
pipeline.prune(snakemake.input.pairs, snakemake.wildcards.method, snakemake.params.method_params,
               snakemake.output.pairs, snakemake.output.report)
