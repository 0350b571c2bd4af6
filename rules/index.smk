rule index:
    """FAISS index of the corpus under the base model or one checkpoint."""
    input:
        unpack(index_inputs),
    output:
        run_file("index", "index.faiss"),
    log:
        log_file("index/{dataset}/{model}/{run}.log"),
    benchmark:
        benchmark_file("index/{dataset}/{model}/{run}.tsv")
    threads: RESOURCES["threads"]
    resources:
        mem_mb=RESOURCES["mem_mb"],
        runtime=RESOURCES["runtime"],
        gpu=gpus_for("encode"),
    params:
        encoder=encoder_params,
        index_factory=config["evaluation"]["index_factory"],
        encode_batch_size=config["evaluation"]["encode_batch_size"],
        title_join=config["data"]["title_join"],
        checkpoint=checkpoint_of,
    script:
        "../workflow_scripts/index.py"
