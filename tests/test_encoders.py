"""opera.encoders on the shipped offline all-MiniLM-L6-v2 (CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from opera import encoders
from opera.encoders import ModelLoadError
from opera.settings import EncoderSettings

MODEL = "all-MiniLM-L6-v2"
MAX_LENGTH = 64

TEXTS = [
    "hi",
    "What is dense retrieval?",
    "A dog.",
    "The quick brown fox jumps over the lazy dog near the river bank at dawn.",
    "Pruning training data can speed up finetuning of retrieval models without hurting quality.",
    "x",
    "Vitamin D deficiency and its association with cardiovascular disease in older adults: a cohort study.",
    "How do I open a savings account?",
    " ".join(["long"] * 100),  # truncated at MAX_LENGTH tokens
    "FAISS builds an inner product index over normalized embeddings.",
    "¿Dónde está la biblioteca?",
    "stocks bonds ETFs",
    "The mitochondria is the powerhouse of the cell, producing ATP through oxidative phosphorylation "
    "in a process that involves the electron transport chain and ATP synthase.",
    "Is it safe to take ibuprofen with coffee?",
    "1 2 3 4 5 6 7 8 9 10",
    "Graded relevance judgments range from zero to two.",
    "Snakemake turns the configuration into a directed acyclic graph of jobs.",
    "a " * 40,
    "Tax implications of selling inherited property",
    "Who wrote the novel 'One Hundred Years of Solitude'?",
]

SHORT = "what causes rain"
LONG = "a considerably longer passage about the water cycle, evaporation, condensation and precipitation over mountains"


@pytest.fixture(scope="module")
def model():
    return encoders.load_model(MODEL, device="cpu")


@pytest.fixture(scope="module")
def reference(model):
    """fp32 embeddings of TEXTS, one batch."""
    return encoders.encode(model, TEXTS, max_length=MAX_LENGTH, batch_size=64, show_progress=False)


def _encode(model, texts, **kw):
    kw.setdefault("max_length", MAX_LENGTH)
    kw.setdefault("show_progress", False)
    return encoders.encode(model, texts, **kw)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_encode_normalized_float32_matches_sentence_transformers(model, reference):
    ours = reference
    assert ours.dtype == np.float32
    assert ours.shape == (len(TEXTS), model.get_embedding_dimension())
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)

    previous = model.max_seq_length
    model.max_seq_length = MAX_LENGTH
    try:
        reference = model.encode(
            TEXTS, normalize_embeddings=True, convert_to_numpy=True, batch_size=32, show_progress_bar=False
        )
    finally:
        model.max_seq_length = previous
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_encode_keeps_input_order_and_is_batch_independent(model, reference):
    permutation = np.random.default_rng(0).permutation(len(TEXTS))
    shuffled = _encode(model, [TEXTS[i] for i in permutation], batch_size=3)
    np.testing.assert_allclose(shuffled, reference[permutation], atol=1e-5)
    single = _encode(model, [TEXTS[3]])
    np.testing.assert_allclose(single[0], reference[3], atol=1e-5)


def test_instruction_prefix_changes_query_embeddings(model):
    queries = ["what is a savings account", "side effects of ibuprofen"]
    instruction = "Represent this sentence for searching relevant passages: "
    plain = _encode(model, queries)
    instructed = _encode(model, queries, instruction=instruction)
    assert np.all(_cos(plain, instructed) < 0.999)
    np.testing.assert_allclose(instructed, _encode(model, [instruction + q for q in queries]), atol=1e-6)
    encoder = EncoderSettings(
        path=MODEL,
        pooling="mean",
        padding_side="right",
        query_instruction=instruction,
        passage_instruction="",
        query_max_length=MAX_LENGTH,
        passage_max_length=MAX_LENGTH,
        encode_precision="fp32",
        trust_remote_code=False,
    )
    via_settings = encoders.encode_side(
        model, encoder, "query", queries, batch_size=4, desc="queries", show_progress=False
    )
    np.testing.assert_allclose(via_settings, instructed, atol=1e-6)


def test_empty_input_raises(model):
    with pytest.raises(ValueError, match="empty"):
        _encode(model, [])


@pytest.mark.parametrize("path", ["/nonexistent/model", "./no-such-dir", "~/no-such-model-dir"])
def test_missing_local_model_raises_naming_path(path):
    with pytest.raises(ModelLoadError, match=path.lstrip("./~").split("/")[-1]) as info:
        encoders.load_model(path, device="cpu")
    assert path in str(info.value)


def test_directory_without_config_raises(tmp_path):
    with pytest.raises(ModelLoadError, match="config.json"):
        encoders.load_model(str(tmp_path), device="cpu")


def test_unknown_pooling_raises():
    with pytest.raises(ModelLoadError, match="pooling"):
        encoders.load_model(MODEL, pooling="max-ish", device="cpu")


def test_cls_and_last_pooling_differ_from_mean(model):
    mean = _encode(model, TEXTS[:6])
    for pooling in ("cls", "last"):
        other_model = encoders.load_model(MODEL, pooling=pooling, device="cpu")
        other = _encode(other_model, TEXTS[:6])
        np.testing.assert_allclose(np.linalg.norm(other, axis=1), 1.0, atol=1e-5)
        assert np.all(_cos(mean, other) < 0.99), pooling


def test_last_token_pooling_with_left_padding():
    left = encoders.load_model(MODEL, pooling="last", padding_side="left", device="cpu")
    right = encoders.load_model(MODEL, pooling="last", padding_side="right", device="cpu")
    # The batch really is left-padded.
    ids = left.tokenizer([SHORT, LONG], padding=False)["input_ids"]
    padded = left.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")
    assert padded["attention_mask"][0, 0] == 0 and padded["attention_mask"][0, -1] == 1

    batched = _encode(left, [SHORT, LONG], batch_size=2)
    alone = _encode(left, [SHORT])
    np.testing.assert_allclose(batched[0], alone[0], atol=1e-5)
    # Unpadded, the side does not matter; padded, both sides give the text's own embedding.
    np.testing.assert_allclose(alone[0], _encode(right, [SHORT])[0], atol=1e-5)
    np.testing.assert_allclose(_encode(right, [SHORT, LONG], batch_size=2)[0], alone[0], atol=1e-5)

    # The training path (tokenize + embed) pads the same way and agrees with encode.
    features = encoders.tokenize(left, [SHORT, LONG], MAX_LENGTH)
    assert features["attention_mask"][0, 0] == 0
    with torch.inference_mode():
        trained_path = encoders.embed(left, features).float().cpu().numpy()
    np.testing.assert_allclose(trained_path, batched, atol=1e-5)


def test_bf16_encoding_close_to_fp32(model, reference):
    fp32 = reference
    bf16 = _encode(model, TEXTS, precision="bf16")
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(bf16, axis=1), 1.0, atol=1e-3)
    assert not np.array_equal(fp32, bf16)  # autocast actually ran in reduced precision
    assert np.all(_cos(fp32, bf16) > 0.99)


def test_autocast_contexts():
    assert isinstance(encoders.autocast("cpu", "fp32"), type(encoders.autocast("cuda", "fp32")))
    with encoders.autocast("cpu", "fp16"):  # falls back to bf16 on CPU
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
