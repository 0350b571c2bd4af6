def index_inputs(wildcards):
    """The base model reuses the corpus embeddings of `score`; a checkpoint needs its finetune run."""
    run = evaluated_run(wildcards)
    inputs = {"data": data_dir(run.dataset)}
    if method_registry.get(run.method).trains:
        inputs["finetune"] = finetune_dir(run.dataset, run.model, run.method, run.seed)
    else:
        inputs["embeddings"] = score_file("corpus_embeddings.npy", run.dataset, run.model)
    return inputs


rule index:
    """FAISS index of the corpus under the base model or one checkpoint."""
    input:
        unpack(index_inputs),
    output:
        run_file("index", "index.faiss"),
    params:
        encoder=encoder_params,
        index_factory=config["evaluation"]["index_factory"],
        encode_batch_size=config["evaluation"]["encode_batch_size"],
        title_join=config["data"]["title_join"],
        checkpoint=checkpoint_of,
    log:
        "logs/index/{dataset}/{model}/{run}.log",
    benchmark:
        "benchmarks/index/{dataset}/{model}/{run}.tsv"
    threads: RESOURCES["threads"]
    resources:
        mem_mb=RESOURCES["mem_mb"],
        runtime=RESOURCES["runtime"],
        gpu=gpus_for("encode"),
    script:
        "../workflow_scripts/index.py"
