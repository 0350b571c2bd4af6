from opera import pipeline
from opera.data import summary_line

pipeline.job_setup(snakemake.log, snakemake.threads)
summary = pipeline.download(snakemake.wildcards.dataset, snakemake.params.spec, snakemake.params.options, snakemake.output[0])
print("\n".join(summary_line(snakemake.wildcards.dataset, summary)), flush=True)
