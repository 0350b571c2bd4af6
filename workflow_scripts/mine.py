from opera import job, pipeline
from opera.settings import Mining

job.run(
    snakemake,
    lambda: pipeline.mine(
        data_dir=snakemake.input.data,
        scored_pairs_path=snakemake.input.scored_pairs,
        kept_pairs_path=snakemake.input.kept_pairs,
        corpus_embeddings_path=snakemake.input.corpus,
        query_embeddings_path=snakemake.input.queries,
        mining=Mining(**snakemake.params.mining),
        judged_negatives_first=snakemake.params.judged_negatives_first,
        negative_pool_cap=snakemake.params.negative_pool_cap,
        out_negatives=snakemake.output.negatives,
    ),
)
