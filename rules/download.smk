rule download:
    """Fetch or copy a dataset, validate it, and write normalized parquet tables."""
    input:
        download_inputs,
    output:
        directory(data_dir()),
    log:
        log_file("download/{dataset}.log"),
    benchmark:
        benchmark_file("download/{dataset}.tsv")
    threads: 1
    resources:
        mem_mb=job_resource("download", "mem_mb"),
        runtime=job_resource("download", "runtime"),
    params:
        **stage_params("download"),
    script:
        "../workflow_scripts/download.py"
