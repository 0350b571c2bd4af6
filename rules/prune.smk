rule prune:
    """The pairs a method may train on: its registry entry's pruner, or every pair; a pruner that
    draws at random keeps one set per seed (subset seed{S}), the others one set (subset all)."""
    input:
        pairs=score_file("pairs.parquet"),
    output:
        pairs=prune_file("pairs.parquet"),
        report=prune_file("report.json"),
        checksums=checksums(prune_file("pairs.parquet")),
    log:
        log_file("prune/{dataset}/{model}/{method}/{subset}.log"),
    benchmark:
        benchmark_file("prune/{dataset}/{model}/{method}/{subset}.tsv")
    threads: 1
    resources:
        mem_mb=job_resource("prune", "mem_mb"),
        runtime=job_resource("prune", "runtime"),
    params:
        **stage_params("prune"),
    script:
        "../workflow_scripts/prune.py"
