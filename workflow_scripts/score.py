from pathlib import Path

from opera import job, pipeline
from opera.embedding_store import StoreLayout
from opera.settings import EncoderSettings, Mining

job.run(
    snakemake,
    lambda: pipeline.score(
        data_dir=snakemake.input.data,
        encoder=EncoderSettings.from_dict(snakemake.params.encoder),
        mining=Mining(**snakemake.params.mining),
        encode_batch_size=snakemake.params.encode_batch_size,
        judged_negatives_first=snakemake.params.judged_negatives_first,
        negative_pool_cap=snakemake.params.negative_pool_cap,
        title_join=snakemake.params.title_join,
        layout=StoreLayout(**snakemake.params.layout),
        devices=job.encode_devices(snakemake.resources.gpu),
        out_dir=Path(snakemake.output.report).parent,
    ),
)
