"""Gradient caching (opera.training.gradcache, `mini_batch_size`): the same gradients, fed-back scores and
weights as the uncached step for both tiny model families, dropout replayed exactly, and the config
checks. Tolerance: fp32, |cached - uncached| <= 1e-5 + 1e-4 |uncached| (the mini-batches' matrix
products sum in another order; nothing else differs)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from opera import io, pipeline, training
from opera.config import ConfigError, global_batch, load_config, method_params, validate_config
from opera.data import passage_texts, read_prepared
from opera.methods.sampling import make_sampler
from opera.models import encoders, tiny_models
from opera.settings import ModelSettings
from opera.training import gradcache

pytestmark = pytest.mark.slow  # every test here trains, builds models or runs subprocesses

ROOT = Path(__file__).resolve().parents[1]
SMOKE_CONFIG = load_config(ROOT / "config" / "smoke.yaml")
TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


@pytest.fixture(autouse=True)
def one_thread():
    """Cached and plain runs sum in different orders, and AdamW turns the rounding into weight
    differences near the tolerance; a thread count another test left behind moved one weight of
    128,000 past it (4.5e-5) in a full run. Every comparison here runs on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """Both tiny families, without dropout, so that an uncached and a cached step draw no masks and
    must agree; dropout itself is covered by the replay test."""
    models = tiny_models.build_all(tmp_path_factory.mktemp("tiny"))
    for path in models.values():
        config = json.loads((path / "config.json").read_text())
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "attention_dropout"):
            if key in config:
                config[key] = 0.0
        (path / "config.json").write_text(json.dumps(config))
    return models


def _settings(family: str, path: Path, **changes) -> ModelSettings:
    entry = tiny_models.registry_entry(
        family,
        path,
        precision="fp32",
        encode_precision="fp32",
        query_max_length=24,
        passage_max_length=48,
        batch_size=8,
        group_size=2,
        max_steps=3,
        eval_every=3,
        lr=1e-3,
        warmup_ratio=0.0,
        gpus=1,
    )
    return dataclasses.replace(ModelSettings.from_dict(entry), **changes)


def _one_step(settings: ModelSettings, data: training.TrainingData):
    model = encoders.load(settings.encoder, device="cpu")
    if settings.gradient_checkpointing:
        encoders.enable_gradient_checkpointing(model)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.0)
    stepped = {}  # the gradients the optimizer steps with (train_step zeroes them afterwards)
    optimizer.register_step_pre_hook(
        lambda *_: stepped.update(grads=[None if p.grad is None else p.grad.detach().clone() for p in params])
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    sampler = make_sampler("dp", data.pairs, 3, 7, method_params(SMOKE_CONFIG, "dp"))
    batch = sampler.next_batch(0, settings.batch_size)
    docs = training.batch_documents(data, batch, settings.group_size, np.random.default_rng(1))
    env = training.Dist(rank=0, world=1, device="cpu")
    loss, scores, losses = training.train_step(
        model, data, batch, docs, settings, env, optimizer, scheduler, scaler, params
    )
    return loss, scores, losses, stepped["grads"]


@pytest.fixture(scope="module")
def data(smoke_scored) -> training.TrainingData:
    dataset = read_prepared(smoke_scored / "data")
    pairs = io.load_table(smoke_scored / "score/pairs.parquet")
    corpus = dict(zip(dataset.corpus["doc_id"], passage_texts(dataset.corpus), strict=True))
    return training.TrainingData.build(
        pairs, pairs, io.load_table(smoke_scored / "score/negatives.parquet"), dataset.queries, corpus
    )


@pytest.mark.parametrize(
    ("family", "checkpointing"), [("bert", False), ("qwen3", False), ("bert", True)], ids=["bert", "qwen3", "bert-gc"]
)
def test_cached_step_has_the_uncached_gradients_and_scores(tiny, data, family, checkpointing):
    """Also with gradient checkpointing on the cached side, which recomputes inside the second pass."""
    plain = _one_step(_settings(family, tiny[family]), data)
    cached = _one_step(
        _settings(family, tiny[family], mini_batch_size=3, gradient_checkpointing=checkpointing), data
    )  # chunks of 3, 3 and 2 queries
    assert cached[0] == pytest.approx(plain[0], rel=1e-5)
    np.testing.assert_allclose(cached[1], plain[1], **TOLERANCE)  # the cosines the sampler is fed
    np.testing.assert_allclose(cached[2], plain[2], **TOLERANCE)  # the per-query losses (InfoBatch's)
    assert sum(g is not None for g in plain[3]) > 10
    for ours, theirs in zip(cached[3], plain[3], strict=True):
        assert (ours is None) == (theirs is None)
        if theirs is not None:
            torch.testing.assert_close(ours, theirs, **TOLERANCE)


def _finetune_dp(scored: Path, settings: ModelSettings, out: Path, work: Path, stop_after: int | None = None):
    """Three steps of dp (seed 5) through the pipeline's own loop on the smoke slice."""
    return pipeline.finetune(
        data_dir=scored / "data",
        pairs_path=scored / "score/pairs.parquet",
        negatives_path=scored / "score/negatives.parquet",
        kept_pairs_path=scored / "score/pairs.parquet",
        settings=settings,
        method="dp",
        method_params=method_params(SMOKE_CONFIG, "dp"),
        seed=5,
        title_join="space",
        out_dir=out,
        work_dir=work,
        stop_after=stop_after,
    )


@pytest.mark.parametrize("family", ["bert", "qwen3"])
def test_cached_runs_end_with_the_uncached_weights_and_sampler(tiny, smoke_scored, family):
    """Three dp steps (AdamW, the pipeline's loop) with and without caching, same seed and batches."""

    def run(name: str, **changes):
        out = smoke_scored / "gc" / family / name
        _finetune_dp(
            smoke_scored, _settings(family, tiny[family], **changes), out, smoke_scored / "gc-work" / family / name
        )
        return load_file(str(next((out / "step3").rglob("model.safetensors")))), io.read_train_log(
            out / "train_log.jsonl"
        )

    (plain_weights, plain_log), (cached_weights, cached_log) = run("plain"), run("cached", mini_batch_size=2)
    assert plain_weights.keys() == cached_weights.keys()
    for name in plain_weights:
        # BERT's attention key bias adds the same q.b to every logit of a query's row, which softmax
        # ignores: its gradient is 0 up to rounding (~1e-9), and AdamW's g / sqrt(v) turns that
        # rounding into steps of up to a quarter of lr either way. Every other weight agrees closely.
        if name.endswith("attention.self.key.bias"):
            continue
        torch.testing.assert_close(cached_weights[name], plain_weights[name], rtol=1e-4, atol=1e-5)
    for ours, theirs in zip(cached_log, plain_log, strict=True):
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-4, abs=1e-6)
        for key, value in theirs["sampler"].items():
            assert ours["sampler"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_dropout_is_replayed_in_the_second_pass(tiny):
    """With dropout on, the re-encoded mini-batches are exactly the embeddings the loss saw, and the
    random state after the step is the one the first passes left."""
    path = tiny["bert"]
    model = encoders.load(_settings("bert", path).encoder, device="cpu")
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.3
    model.train()
    features = encoders.tokenize(model, [f"query number {i} about cells" for i in range(7)], 24)
    seen = []

    def encode(rows):
        out = encoders.embed(model, rows)
        if torch.is_grad_enabled():
            seen.append(out.detach())
        return out

    torch.manual_seed(3)
    cached = gradcache.CachedEncoding(encode, features, 3, "cpu")
    after_first = torch.get_rng_state()
    assert not torch.equal(encoders.embed(model, features), cached.embeddings.detach())  # dropout draws anew
    torch.set_rng_state(after_first)
    (cached.embeddings * torch.randn_like(cached.embeddings)).sum().backward()
    state = torch.get_rng_state()
    cached.backward()
    assert torch.equal(torch.cat(seen), cached.embeddings.detach())
    assert torch.equal(torch.get_rng_state(), state)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def _smoke(**model_changes) -> dict:
    config = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    config["models"]["all-MiniLM-L6-v2"].update(model_changes)
    return {**config, "results_dir": "results/gradcache-test"}


def test_a_mini_batch_that_caches_nothing_is_refused_and_the_default_adds_no_key():
    with pytest.raises(ConfigError, match=r"'models.all-MiniLM-L6-v2.mini_batch_size': 4 is not below batch_size 4"):
        validate_config(_smoke(mini_batch_size=4))
    settings = validate_config(_smoke(mini_batch_size=2))["models"]["all-MiniLM-L6-v2"]
    assert ModelSettings.from_dict(settings).mini_batch_size == 2
    plain = ModelSettings.from_dict(validate_config(_smoke())["models"]["all-MiniLM-L6-v2"])
    assert plain.mini_batch_size is None and "mini_batch_size" not in plain.to_dict()  # earlier runs keep their params


def test_the_paper_batch_on_one_gpu_validates_and_plans():
    """config/paper.yaml's one-GPU recipe for bge-large: the authors' global batch of 128 on one
    process, cached in mini-batches of 16; the plan counts one more forward pass a step."""
    from opera import cost

    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    eight = validate_config({**paper, "results_dir": "results/paper-test"})
    one_gpu = {**paper, "results_dir": "results/paper-test"}
    one_gpu["models"] = {**paper["models"], "bge-large-en-v1.5": {**paper["models"]["bge-large-en-v1.5"]}}
    one_gpu["models"]["bge-large-en-v1.5"].update(gpus=1, batch_size=128, mini_batch_size=16)
    one = validate_config(one_gpu)
    model = "bge-large-en-v1.5"
    assert global_batch(one, model) == global_batch(eight, model) == 128
    assert cost.job_resources(one, "finetune", "fiqa", model)["gpu"] == 1
    # one process does 8x the tokens of one of the 8, and forwards each once more: 6 + 2 passes instead of 6
    ratio = cost.throughput(eight, model).steps_per_s / cost.throughput(one, model).steps_per_s
    assert ratio == pytest.approx(8 * 8 / 6)
    plan = cost.format_plan(one)
    assert (
        f"- {model}: global batch 128 queries = batch_size 128 x 1 process, gradient caching in mini-batches of 16"
        in plan
    )


def test_a_cached_run_with_dropout_resumes_to_identical_weights(tiny, smoke_scored, tmp_path):
    """Killed after step 1 and resumed, a cached run with dropout on ends with the weights of an
    uninterrupted one: the random state each step leaves is the same either way."""
    path = tmp_path / "tiny-bert-dropout"
    tiny_models.build("bert", path)  # dropout 0.1, as built
    settings = _settings("bert", path, mini_batch_size=3)

    def run(name: str, stop_after=None):
        return _finetune_dp(smoke_scored, settings, tmp_path / "out" / name, tmp_path / "work" / name, stop_after)

    run("straight")
    assert run("resumed", stop_after=1) == {"stopped_at": 1}
    run("resumed")
    weights = [
        load_file(str(tmp_path / "out" / name / "step3" / "model.safetensors")) for name in ("straight", "resumed")
    ]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
