rule score:
    """Base-model embeddings of corpus and train queries, positive-pair scores, hard negatives."""
    input:
        data=data_dir(),
    output:
        corpus=directory(score_file("corpus_embeddings")),
        queries=score_file("train_query_embeddings.npy"),
        pairs=score_file("pairs.parquet"),
        negatives=score_file("negatives.parquet"),
        report=score_file("score.json"),
        checksums=checksums(
            score_file("train_query_embeddings.npy"), score_file("pairs.parquet"), score_file("negatives.parquet")
        ),
    log:
        log_file("score/{dataset}/{model}.log"),
    benchmark:
        benchmark_file("score/{dataset}/{model}.tsv")
    threads: RESOURCES["threads"]
    resources:
        mem_mb=job_resource("score", "mem_mb"),
        runtime=job_resource("score", "runtime"),
        gpu=job_resource("score", "gpu"),
    params:
        **stage_params("score"),
    script:
        "../workflow_scripts/score.py"


rule validation_pool:
    """The documents a finetune run validates on while it trains (models with validate_every): judged, base-model candidates, random."""
    input:
        data=data_dir(),
        corpus=score_file("corpus_embeddings"),
    output:
        pool=score_file("validation_pool.parquet"),
        report=score_file("validation_pool.json"),
        checksums=checksums(score_file("validation_pool.parquet")),
    log:
        log_file("validation_pool/{dataset}/{model}.log"),
    benchmark:
        benchmark_file("validation_pool/{dataset}/{model}.tsv")
    threads: RESOURCES["eval_threads"] or RESOURCES["threads"]
    resources:
        mem_mb=job_resource("evaluate", "mem_mb"),
        runtime=job_resource("evaluate", "runtime"),
        gpu=job_resource("evaluate", "gpu"),
    params:
        **stage_params("validation_pool"),
    script:
        "../workflow_scripts/validation_pool.py"
