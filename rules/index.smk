rule index:
    """The corpus's embeddings under one checkpoint, in shards (the base model's come from score),
    and the evaluation queries' (so evaluate loads no model); deleted once evaluated unless
    evaluation.keep_embeddings."""
    input:
        unpack(index_inputs),
    output:
        corpus=corpus_store(run_file("index", "corpus_embeddings")),
        queries=query_embeddings(run_file("index", "query_embeddings.npy")),
    log:
        log_file("index/{dataset}/{model}/{run}.log"),
    benchmark:
        benchmark_file("index/{dataset}/{model}/{run}.tsv")
    threads: EVAL_THREADS
    resources:
        mem_mb=job_resource("index", "mem_mb"),
        runtime=job_resource("index", "runtime"),
        gpu=job_resource("index", "gpu"),
    params:
        **stage_params("index"),
        checkpoint=checkpoint_of,
    script:
        "../workflow_scripts/index.py"
