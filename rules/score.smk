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
        encoder=encoder_params,
        model_digest=model_digest,  # a rerun trigger: the base model's files, by content
        layout=STORE_LAYOUT,
        mining=lambda wc: config["models"][wc.model]["mining"],
        encode_batch_size=config["scoring"]["encode_batch_size"],
        judged_negatives_first=config["scoring"]["judged_negatives_first"],
        negative_pool_cap=config["scoring"]["negative_pool_cap"],
        title_join=config["data"]["title_join"],
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
        encoder=encoder_params,
        model_digest=model_digest,  # a rerun trigger: the base model's files, by content
        split=eval_split,
        pool=config["validation"],
        # only what pool metrics depend on (not, say, keep_embeddings): a change here reruns the training that validates
        scoring=dataclasses.asdict(opera_settings.PoolMetrics.from_evaluation(config["evaluation"])),
        encode_batch_size=config["evaluation"]["encode_batch_size"],
    script:
        "../workflow_scripts/validation_pool.py"
