from opera import pipeline
from opera.data import summary_line


def stage():
    summary = pipeline.download(snakemake.wildcards.dataset, snakemake.params.spec, snakemake.params.options, snakemake.output[0])
    print("\n".join(summary_line(snakemake.wildcards.dataset, summary)), flush=True)


pipeline.run_job(snakemake, stage)
