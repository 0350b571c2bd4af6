"""The paper's two model families, offline: tiny random-weight stand-ins for bge-large-en-v1.5 (BERT,
CLS pooling, query instruction) and Qwen3-Embedding-0.6B (Qwen3 decoder, last-token pooling, left
padding, query instruction, EOS appended by the tokenizer, gradient checkpointing), built by
opera.models.tiny_models and run with their registry entries.

The mechanism tests each fail when their mechanism is removed; the workflow tests run the whole DAG
of config/smoke_families.yaml (both families, 2-process gloo training) and reload its finetuned
checkpoints with plain sentence-transformers. Metrics of random weights mean nothing and are not checked.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from workflow_helpers import ROOT, built_once, snakemake

from opera import pipeline
from opera.embedding_store import EmbeddingStore, StoreLayout
from opera.models import encoders, tiny_models
from opera.settings import EncoderSettings

pytestmark = pytest.mark.slow  # every test here trains, builds models or runs subprocesses

FAMILIES = ("bert", "qwen3")
KEYS = {family: tiny_models.FAMILIES[family].registry_key for family in FAMILIES}
SMOKE_FAMILIES = ROOT / "config" / "smoke_families.yaml"
MAX_LENGTH = 32
LONG = " ".join(["mitochondria"] * 200)  # cut at MAX_LENGTH
TEXTS = [
    "hi",
    "what causes rain",
    "A considerably longer passage about the water cycle, evaporation, condensation and precipitation over hills.",
    "x",
    "Vitamin D deficiency and cardiovascular disease in older adults",
    LONG,
    "stocks bonds ETFs",
]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """Both tiny checkpoints (sentence-transformers layout), built once per session."""
    return tiny_models.build_all(tmp_path_factory.mktemp("tiny_models"))


def _encoder(family: str, path: Path, **overrides) -> EncoderSettings:
    """The registry entry of the family's real model, on the tiny checkpoint; fp32 for exact comparisons."""
    entry = tiny_models.registry_entry(family, path)
    entry.update(encode_precision="fp32", query_max_length=MAX_LENGTH + 48, passage_max_length=MAX_LENGTH)
    entry.update(overrides)
    return EncoderSettings.from_dict(entry)


@pytest.fixture(scope="module")
def loaded(tiny):
    """family -> (encoder settings, model on the CPU)."""
    out = {}
    for family in FAMILIES:
        encoder = _encoder(family, tiny[family])
        out[family] = (encoder, encoders.load(encoder, device="cpu"))
    return out


def _real_ids(features: dict, row: int) -> list[int]:
    mask = features["attention_mask"][row].bool()
    return features["input_ids"][row][mask].tolist()


def _embed_alone(model, encoder, side, texts) -> np.ndarray:
    return np.stack([encoders.encode_side(model, encoder, side, [t], 8, "one", show_progress=False)[0] for t in texts])


def _token_embeddings(model, features) -> torch.Tensor:
    with torch.inference_mode():
        return model[0](dict(features))["token_embeddings"]


# --- pooling ------------------------------------------------------------------------------------------


def test_last_token_pooling_reads_each_rows_eos_under_left_padding(loaded):
    encoder, model = loaded["qwen3"]
    eos = model.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    features = encoders.tokenize_side(model, encoder, "passage", TEXTS)
    mask = features["attention_mask"]
    assert mask[:, -1].all() and not mask[:, 0].all()  # left-padded and ragged
    assert (features["input_ids"][:, -1] == eos).all()  # every row ends in its EOS
    with torch.inference_mode():
        pooled = encoders.embed(model, features)
    np.testing.assert_allclose(pooled, F.normalize(_token_embeddings(model, features)[:, -1], dim=-1), atol=1e-6)

    alone = _embed_alone(model, encoder, "passage", TEXTS)
    batched = encoders.encode_side(model, encoder, "passage", TEXTS, len(TEXTS), "batch", show_progress=False)
    np.testing.assert_allclose(batched, alone, atol=1e-5)  # evaluation path, one ragged batch
    np.testing.assert_allclose(pooled.numpy(), alone, atol=1e-5)  # training path
    assert np.all(np.abs(alone @ alone.T - np.eye(len(TEXTS))).max(axis=1) < 0.999)  # texts embed apart


def test_cls_pooling_reads_position_zero(loaded):
    encoder, model = loaded["bert"]
    cls = model.tokenizer.convert_tokens_to_ids("[CLS]")
    features = encoders.tokenize_side(model, encoder, "passage", TEXTS)
    assert (features["input_ids"][:, 0] == cls).all() and not features["attention_mask"][:, -1].all()
    with torch.inference_mode():
        pooled = encoders.embed(model, features)
    np.testing.assert_allclose(pooled, F.normalize(_token_embeddings(model, features)[:, 0], dim=-1), atol=1e-6)
    alone = _embed_alone(model, encoder, "passage", TEXTS)
    np.testing.assert_allclose(pooled.numpy(), alone, atol=1e-5)
    batched = encoders.encode_side(model, encoder, "passage", TEXTS, len(TEXTS), "batch", show_progress=False)
    np.testing.assert_allclose(batched, alone, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_position_ids_under_left_padding(family, tiny):
    """Each row's real tokens are numbered 0, 1, ... from its first non-padding token, so a text
    embeds the same in any batch, also for BERT's absolute positions when it is left-padded."""
    encoder = _encoder(family, tiny[family], padding_side="left", pooling="mean")
    model = encoders.load(encoder, device="cpu")
    features = encoders.tokenize_side(model, encoder, "passage", TEXTS)
    assert not features["attention_mask"][:, 0].all()
    with torch.inference_mode():
        batched = encoders.embed(model, features).numpy()
    np.testing.assert_allclose(batched, _embed_alone(model, encoder, "passage", TEXTS), atol=1e-5)
    for row in range(len(TEXTS)):
        real = features["attention_mask"][row].bool()
        assert features["position_ids"][row][real].tolist() == list(range(int(real.sum())))


# --- instructions and EOS: one path for scoring, training and evaluation ------------------------------


@pytest.fixture
def captured(monkeypatch):
    """Every batch embedded through encoders.embed (training and evaluation alike), as features."""
    seen: list[dict] = []
    original = encoders.embed

    def spy(model, features):
        seen.append({k: v.detach().cpu() for k, v in features.items()})
        return original(model, features)

    monkeypatch.setattr(encoders, "embed", spy)
    return seen


@pytest.mark.parametrize("family", FAMILIES)
def test_query_instruction_on_queries_only_same_tokens_in_training_and_evaluation(family, loaded, captured):
    encoder, model = loaded[family]
    assert encoder.query_instruction and not encoder.passage_instruction
    tokenizer = model.tokenizer
    for side, prefix in (("query", encoder.query_instruction), ("passage", "")):
        max_length = encoder.side(side).max_length
        expected = [tokenizer(prefix + t, truncation=True, max_length=max_length)["input_ids"] for t in TEXTS]
        without = [tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in TEXTS]
        captured.clear()
        training = encoders.tokenize_side(model, encoder, side, TEXTS)
        encoders.encode_side(model, encoder, side, TEXTS, len(TEXTS), side, show_progress=False)  # scoring, evaluation
        (evaluation,) = captured
        evaluated = sorted(_real_ids(evaluation, row) for row in range(len(TEXTS)))
        assert evaluated == sorted(expected), side  # (encode orders a batch by length)
        assert [_real_ids(training, row) for row in range(len(TEXTS))] == expected, side
        if side == "query":
            assert all(e != w for e, w in zip(expected, without, strict=True))
        else:
            assert expected == without


@pytest.mark.parametrize("family", FAMILIES)
def test_eos_ends_every_row_in_training_and_evaluation(family, loaded, captured):
    """Qwen3's post-processor appends <|endoftext|> (BERT's [SEP]); the last real token of every row,
    a truncated one too, is that token on both sides, in both paths."""
    encoder, model = loaded[family]
    end = model.tokenizer.convert_tokens_to_ids("<|endoftext|>" if family == "qwen3" else "[SEP]")
    for side in ("query", "passage"):
        captured.clear()
        training = encoders.tokenize_side(model, encoder, side, TEXTS)
        encoders.encode_side(model, encoder, side, TEXTS, len(TEXTS), side, show_progress=False)
        for features in (training, captured[-1]):
            rows = [_real_ids(features, row) for row in range(len(TEXTS))]
            assert all(ids[-1] == end for ids in rows), side
            assert max(len(ids) for ids in rows) == encoder.side(side).max_length  # LONG was cut, EOS kept


@pytest.mark.parametrize("family", FAMILIES)
def test_training_without_eos_drops_only_the_appended_eos(family, loaded):
    """train_append_eos: false (the authors' Qwen3 training tokenizer, docs/comparability.md D10):
    Qwen3's rows lose their <|endoftext|>, nothing else changes; BERT's [SEP] is not an EOS: kept."""
    encoder, model = loaded[family]
    with_eos = encoders.tokenize_side(model, encoder, "query", TEXTS)
    without = encoders.tokenize_side(model, encoder, "query", TEXTS, append_eos=False)
    for row in range(len(TEXTS)):
        full, cut = _real_ids(with_eos, row), _real_ids(without, row)
        if family == "qwen3":
            assert full[-1] == model.tokenizer.convert_tokens_to_ids("<|endoftext|>") and cut == full[:-1]
        else:
            assert cut == full


def _stage_config(tmp: Path, tiny: dict[str, Path], **model_changes) -> Path:
    """config/smoke_families.yaml with the tiny checkpoints' absolute paths."""
    config = yaml.safe_load(SMOKE_FAMILIES.read_text())
    for family, key in KEYS.items():
        config["models"][key].update(path=str(tiny[family]), **model_changes)
    path = tmp / "smoke_families.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("family", FAMILIES)
def test_every_stage_gives_queries_their_instruction_and_passages_none(family, tiny, tmp_path, monkeypatch):
    """score, finetune (one step), index and evaluate, in process: every text that reaches the
    tokenizer through opera.models.encoders is a passage as it is, or a query behind its instruction."""
    from opera import data as data_mod
    from opera.config import eval_split, load_config, method_params, model_settings

    config = load_config(_stage_config(tmp_path, tiny))
    settings = dataclasses.replace(model_settings(config, KEYS[family]), max_steps=1, eval_every=1, gpus=1)
    instruction = settings.encoder.query_instruction
    data_dir, score_dir = tmp_path / "data", tmp_path / "score"
    pipeline.download(name="scifact", spec=config["datasets"]["scifact"], options=config["data"], out_dir=data_dir)
    dataset = data_mod.read_prepared(data_dir)
    queries = set(dataset.queries["text"])
    passages = set(data_mod.passage_texts(dataset.corpus, config["data"]["title_join"]))

    seen: dict[str, list[str]] = {}
    stage = ["?"]
    for name in ("encode", "tokenize"):
        original = getattr(encoders, name)

        def spy(model, texts, *args, _original=original, **kwargs):
            seen.setdefault(stage[0], []).extend(texts)
            return _original(model, texts, *args, **kwargs)

        monkeypatch.setattr(encoders, name, spy)

    stage[0] = "score"
    pipeline.score(
        data_dir=data_dir,
        encoder=settings.encoder,
        mining=settings.mining,
        encode_batch_size=32,
        title_join=config["data"]["title_join"],
        out_dir=score_dir,
    )
    stage[0] = "finetune"
    pipeline.finetune(
        data_dir=data_dir,
        pairs_path=score_dir / "pairs.parquet",
        negatives_path=score_dir / "negatives.parquet",
        kept_pairs_path=score_dir / "pairs.parquet",
        settings=settings,
        method="basic",
        method_params=method_params(config, "basic"),
        seed=42,
        title_join=config["data"]["title_join"],
        out_dir=tmp_path / "ft",
        work_dir=tmp_path / "ft_work",
    )
    stage[0] = "index"
    split = eval_split(config["datasets"]["scifact"])
    pipeline.index(
        data_dir=data_dir,
        encoder=settings.encoder,
        checkpoint=tmp_path / "ft" / "step1",
        encode_batch_size=32,
        title_join=config["data"]["title_join"],
        layout=StoreLayout(),
        split=split,
        out_dir=tmp_path / "corpus_embeddings",
        out_queries=tmp_path / "query_embeddings.npy",
    )
    common = {"data_dir": data_dir, "encoder": settings.encoder, "evaluation": config["evaluation"], "split": split}
    stage[0] = "evaluate"  # a checkpoint's: searches the index job's embeddings, encodes nothing
    pipeline.evaluate(
        **common,
        index_path=tmp_path / "corpus_embeddings",
        out_run=tmp_path / "run.trec",
        out_per_query=tmp_path / "per_query.parquet",
        out_metrics=tmp_path / "metrics.json",
        run_meta={"method": "basic"},
        checkpoint=tmp_path / "ft" / "step1",
        query_embeddings=tmp_path / "query_embeddings.npy",
    )
    stage[0] = "evaluate pretrain"  # the base model's: encodes its queries against the score stage's store
    pipeline.evaluate(
        **common,
        index_path=score_dir / "corpus_embeddings",
        out_run=tmp_path / "base.trec",
        out_per_query=tmp_path / "base_per_query.parquet",
        out_metrics=tmp_path / "base_metrics.json",
        run_meta={"method": "pretrain"},
    )
    assert sorted(seen) == ["evaluate pretrain", "finetune", "index", "score"]
    for name, texts in seen.items():
        as_query = [t for t in texts if t.startswith(instruction) and t[len(instruction) :] in queries]
        as_passage = [t for t in texts if t in passages]
        assert len(as_query) + len(as_passage) == len(texts), (name, [t for t in texts if t not in passages][:3])
        assert not any(t in queries for t in texts), name  # no query without its instruction
        assert as_query and bool(as_passage) == (name != "evaluate pretrain"), name


# --- gradient checkpointing ---------------------------------------------------------------------------


def test_gradient_checkpointing_recomputes_decoder_layers_with_the_same_gradients(tiny):
    """The Qwen3 entry asks for gradient checkpointing; the trainer turns it on, and in training mode
    each decoder layer then runs again in the backward pass, with unchanged gradients."""
    from opera import training
    from opera.settings import ModelSettings

    entry = tiny_models.registry_entry("qwen3", tiny["qwen3"])
    assert entry["gradient_checkpointing"] is True
    settings = ModelSettings.from_dict(entry)
    encoder = settings.encoder

    def forward_backward(checkpointed: bool):
        if checkpointed:
            model = training.loop._build_trainer(settings, None, None, training.Dist(), encoder.path, 0).model
        else:
            model = encoders.load(encoder, device="cpu")
            model.train()
        calls = []
        for layer in encoders._backbone(model).layers:  # (forward hooks do not run again in the recompute)
            forward = layer.mlp.forward
            layer.mlp.forward = lambda *args, _forward=forward, **kwargs: calls.append(1) or _forward(*args, **kwargs)
        loss = encoders.embed(model, encoders.tokenize_side(model, encoder, "query", TEXTS)).sum()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return len(calls), grads

    layers = tiny_models.LAYERS
    plain_calls, plain = forward_backward(False)
    checkpointed_calls, checkpointed = forward_backward(True)
    assert plain_calls == layers and checkpointed_calls == 2 * layers
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-5, rtol=1e-4, msg=name)


# --- checkpoints: prompts for sentence-transformers users; differences to the config are named ---------


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_checkpoint_applies_the_instructions_in_encode_query(family, loaded, tmp_path):
    """A checkpoint saved as the trainer saves it carries the instructions as the prompts `query` and
    `document` (no default prompt): encode_query / encode_document give the pipeline's embeddings."""
    from sentence_transformers import SentenceTransformer

    encoder, model = loaded[family]
    model.save(str(tmp_path / "ckpt"))
    reloaded = SentenceTransformer(str(tmp_path / "ckpt"), device="cpu")
    assert reloaded.prompts == {"query": encoder.query_instruction, "document": ""}
    assert reloaded.default_prompt_name is None
    texts = [TEXTS[i] for i in (0, 1, 3, 4, 6)]  # within both lengths (sentence-transformers has only one)
    for side, encode in (("query", reloaded.encode_query), ("passage", reloaded.encode_document)):
        ours = encoders.encode_side(model, encoder, side, texts, 8, side, show_progress=False)
        np.testing.assert_allclose(encode(texts, normalize_embeddings=True), ours, atol=1e-5, err_msg=side)


def test_checkpoint_modules_and_prompts_that_differ_from_the_config_are_warned(tiny, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="opera.models.encoders")
    qwen = tiny["qwen3"]
    matching = _encoder("qwen3", qwen, query_instruction=tiny_models.QWEN_PROMPT)
    encoders.load(matching, device="cpu")
    assert not [r for r in caplog.records if r.name == "opera.models.encoders"]  # its modules, prompts: the config's

    encoders.load(_encoder("qwen3", qwen, pooling="mean"), device="cpu")  # the registry's "…Query: " too
    text = caplog.text
    assert "pooling_mode 'lasttoken'" in text and "`pooling` is 'mean'" in text
    assert "`query_instruction`" in text and repr(tiny_models.QWEN_PROMPT) in text
    caplog.clear()

    stripped = tmp_path / "no-normalize"
    shutil.copytree(qwen, stripped)
    modules = json.loads((stripped / "modules.json").read_text())
    (stripped / "modules.json").write_text(json.dumps([m for m in modules if "Normalize" not in m["type"]]))
    encoders.load(dataclasses.replace(matching, path=str(stripped)), device="cpu")
    assert "no Normalize module" in caplog.text and "pooling_mode" not in caplog.text
    caplog.clear()

    cramped = dataclasses.replace(matching, query_max_length=24)  # the instruction alone is ~40 tiny tokens
    encoders.tokenize_side(encoders.load(cramped, device="cpu"), cramped, "query", TEXTS)
    assert "every query is cut to the instruction alone; raise query_max_length" in caplog.text


# --- the whole workflow, both families ----------------------------------------------------------------


@pytest.fixture(scope="module")
def families_run(tiny, tmp_path_factory) -> Path:
    """config/smoke_families.yaml run by Snakemake, once a session (shared by the xdist workers);
    returns its results folder."""

    def run(workdir: Path) -> None:
        snakemake(workdir, _stage_config(workdir, tiny), "--cores", "2")

    workdir = built_once(tmp_path_factory, "families_run", run)
    (tables,) = workdir.rglob("tables/results.csv")
    return tables.parent.parent


def _one(folder: Path, pattern: str) -> Path:
    """The single file under ``folder`` matching ``pattern`` (run folders may nest, e.g. seed42/budget4/)."""
    (found,) = sorted(folder.rglob(pattern))
    return found


@pytest.mark.workflow
def test_smoke_workflow_runs_both_families_with_two_process_training(families_run):
    import pandas as pd

    final = pd.read_csv(families_run / "tables" / "results.csv")
    assert sorted(zip(final["model"], final["method"], strict=True)) == sorted(
        (key, method) for key in KEYS.values() for method in ("pretrain", "dp")
    )
    for family, key in KEYS.items():
        for method in ("dp",):
            run = _one(families_run / "finetune" / "scifact" / key / method, "run.json").parent
            assert json.loads((run / "run.json").read_text())["world_size"] == 2
            steps = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
            assert [s["step"] for s in steps] == [1, 2, 3, 4] and all(np.isfinite(s["loss"]) for s in steps)
            log = _one(families_run / "logs" / "finetune" / "scifact" / key / method, "*.log").read_text()
            assert "--nproc_per_node=2" in log and "rank 1 of 2 on cpu (gloo)" in log
            assert ("gradient checkpointing on" in log) == (family == "qwen3")
            metrics = _one(families_run / "evaluate" / "scifact" / key / method, "metrics.json")
            assert metrics.parent.name == "step4"
            card = _one(families_run / "models" / "scifact" / key / method, "README.md").read_text()
            assert f"{key} finetuned on scifact with OPERA's {method} (step 4)" in card and "NDCG@10" in card


@pytest.mark.workflow
@pytest.mark.parametrize("family", FAMILIES)
def test_finetuned_checkpoint_reloads_with_sentence_transformers(family, families_run, tiny):
    """A finetuned checkpoint loads with plain SentenceTransformer(path): its saved prompts are the
    config's instructions, so encode_query / encode_document give the pipeline's query and passage
    embeddings (and those of the workflow's own score stage and index)."""
    from sentence_transformers import SentenceTransformer

    from opera import data as data_mod
    from opera import io

    key = KEYS[family]
    config = yaml.safe_load(SMOKE_FAMILIES.read_text())["models"][key]
    entry = tiny_models.registry_entry(family, tiny[family], **{k: v for k, v in config.items() if k != "path"})
    encoder = EncoderSettings.from_dict(entry)
    fp32 = dataclasses.replace(encoder, encode_precision="fp32")
    dataset = data_mod.read_prepared(families_run / "data" / "scifact")
    queries = dataset.queries["text"].tolist()[:8]
    passages = data_mod.passage_texts(dataset.corpus, "space")

    checkpoint = _one(families_run / "finetune" / "scifact" / key / "dp", "run.json").parent / "step4"
    reloaded = SentenceTransformer(str(checkpoint), device="cpu")
    assert reloaded.prompts == {"query": encoder.query_instruction, "document": encoder.passage_instruction}
    assert reloaded.default_prompt_name is None
    ours = encoders.load(fp32, device="cpu", path=str(checkpoint))
    np.testing.assert_allclose(
        reloaded.encode_query(queries, normalize_embeddings=True),
        encoders.encode_side(ours, fp32, "query", queries, 8, "q", show_progress=False),
        atol=1e-5,
    )
    theirs_passages = reloaded.encode_document(passages[:16], normalize_embeddings=True)
    np.testing.assert_allclose(
        theirs_passages,
        encoders.encode_side(ours, fp32, "passage", passages[:16], 8, "p", show_progress=False),
        atol=1e-5,
    )
    # The workflow's own vectors, at encode_precision (bf16 on a CPU): its index of this checkpoint,
    # and the base model's train queries embedded by the score stage, are the pipeline's embeddings.
    store = EmbeddingStore(_one(families_run / "index" / "scifact" / key / "dp", "manifest.json").parent)
    indexed = encoders.encode_side(ours, encoder, "passage", passages[:16], 8, "p", show_progress=False)
    np.testing.assert_allclose(store.rows_at(np.arange(16)), indexed, atol=5e-3)
    pairs = io.load_table(families_run / "score" / "scifact" / key / "pairs.parquet")
    text = dataset.queries.set_index("query_id")["text"]
    train_queries = [text[q] for q in sorted(pairs["query_id"].unique())]
    base = encoders.load(encoder, device="cpu")
    scored = encoders.encode_side(base, encoder, "query", train_queries, 32, "q", show_progress=False)
    np.testing.assert_allclose(
        io.load_array(families_run / "score" / "scifact" / key / "train_query_embeddings.npy"), scored, atol=5e-3
    )


def test_a_new_model_entry_takes_pooling_and_prompts_from_its_checkpoint(tiny, caplog):
    """A model given only by `path` uses the checkpoint's own Pooling and saved prompts (not
    all-MiniLM-L6-v2's mean pooling and empty instructions) and names what it inherited."""
    from opera.config import resolve_model

    with caplog.at_level("WARNING"):
        qwen = resolve_model("my-qwen", {"path": str(tiny["qwen3"])})
    assert qwen["pooling"] == "last" and qwen["query_instruction"] == tiny_models.QWEN_PROMPT
    assert "inherited from all-MiniLM-L6-v2's entry" in caplog.text and "max_steps=2000" in caplog.text
    bert = resolve_model("my-bge", {"path": str(tiny["bert"]), "pooling": "mean", "max_steps": 10})
    assert bert["pooling"] == "mean" and bert["max_steps"] == 10  # the entry's own settings win
