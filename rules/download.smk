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
        name=lambda wc: wc.dataset,
        spec=lambda wc: config["datasets"][wc.dataset],
        # title_join changes encoding, not the prepared tables: it reruns score, not download
        options={key: value for key, value in config["data"].items() if key != "title_join"},
    script:
        "../workflow_scripts/download.py"
