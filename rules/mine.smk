rule mine:
    """Hard negatives mined again after a method's static pruning (method_params.<key>.mine_after_prune)."""
    input:
        data=data_dir(),
        scored_pairs=score_file("pairs.parquet"),
        corpus=score_file("corpus_embeddings"),
        queries=score_file("train_query_embeddings.npy"),
        kept_pairs=prune_file("pairs.parquet"),
    output:
        negatives=prune_file("negatives.parquet"),
        checksums=checksums(prune_file("negatives.parquet")),
    log:
        log_file("mine/{dataset}/{model}/{method}/{subset}.log"),
    benchmark:
        benchmark_file("mine/{dataset}/{model}/{method}/{subset}.tsv")
    threads: RESOURCES["threads"]
    resources:
        mem_mb=job_resource("mine", "mem_mb"),
        runtime=job_resource("mine", "runtime"),
    params:
        **stage_params("mine"),
    script:
        "../workflow_scripts/mine.py"
