rule prune:
    """The pairs a method may train on: its registry entry's pruner, or every pair."""
    input:
        pairs=score_file("pairs.parquet"),
    output:
        pairs=prune_file("pairs.parquet"),
        report=prune_file("report.json"),
        checksums=checksums(prune_file("pairs.parquet")),
    log:
        log_file("prune/{dataset}/{model}/{method}.log"),
    benchmark:
        benchmark_file("prune/{dataset}/{model}/{method}.tsv")
    threads: 1
    resources:
        mem_mb=job_resource("prune", "mem_mb"),
        runtime=job_resource("prune", "runtime"),
    params:
        method=lambda wc: wc.method,
        # Only methods that prune depend on their params (the others keep every pair).
        method_params=lambda wc: (
            opera_config.method_params(config, wc.method, wc.model) if method_registry.get(wc.method).pruner else {}
        ),
    script:
        "../workflow_scripts/prune.py"
