from pathlib import Path

from opera import job, pipeline
from opera.settings import EncoderSettings, PoolMetrics, PoolSettings

job.run(
    snakemake,
    lambda: pipeline.validation_pool(
        data_dir=snakemake.input.data,
        corpus_path=snakemake.input.corpus,
        encoder=EncoderSettings.from_dict(snakemake.params.encoder),
        split=snakemake.params.split,
        pool=PoolSettings.from_dict(snakemake.params.pool),
        scoring=PoolMetrics(**snakemake.params.scoring),
        encode_batch_size=snakemake.params.encode_batch_size,
        out_dir=Path(snakemake.output.report).parent,
    ),
)
