rule evaluate:
    """Retrieve the top k for the evaluation split; TREC run, per-query and mean metrics."""
    input:
        unpack(evaluate_inputs),
    output:
        run=run_file("evaluate", "run.trec"),
        per_query=run_file("evaluate", "per_query.parquet"),
        metrics=run_file("evaluate", "metrics.json"),
        checksums=checksums(run_file("evaluate", "per_query.parquet")),
    log:
        log_file("evaluate/{dataset}/{model}/{run}.log"),
    benchmark:
        benchmark_file("evaluate/{dataset}/{model}/{run}.tsv")
    threads: EVAL_THREADS
    resources:
        mem_mb=job_resource("evaluate", "mem_mb"),
        runtime=job_resource("evaluate", "runtime"),
        gpu=job_resource("evaluate", "gpu"),
    params:
        **stage_params("evaluate"),
        checkpoint=checkpoint_of,
    script:
        "../workflow_scripts/evaluate.py"
