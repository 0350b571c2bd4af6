"""opera.models.encoders on the shipped offline all-MiniLM-L6-v2 (CPU)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from opera.models import encoders
from opera.models.encoders import ModelLoadError
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


@pytest.mark.slow
def test_bf16_encoding_close_to_fp32(model, reference):
    fp32 = reference
    bf16 = _encode(model, TEXTS, precision="bf16")
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(bf16, axis=1), 1.0, atol=1e-3)
    assert not np.array_equal(fp32, bf16)  # autocast actually ran in reduced precision
    assert np.all(_cos(fp32, bf16) > 0.99)


# --- the bound on long texts (bounded_texts) -------------------------------------------------------------

_PIECES = ["alpha", "Béta", "中文字", "dog.", "(x)", "it's", "—", "🙂ok", "end,", "12.5%", "naïve", "...", "ß"]
_GAPS = [" ", "  ", "\n", " \n ", "\n\n", "\t", " " * 40, ".\n", "!! "]
GIANT_WORD = "x" * 30_000


def _long_texts() -> list[str]:
    """Short texts, a few 100 KB of multi-sentence text (punctuation, unicode, newlines, runs of
    spaces), a giant single word, and texts cut mid-word, mid-run-of-spaces or with few words."""
    rng = np.random.default_rng(0)

    def prose(n: int) -> str:
        pieces = rng.choice(len(_PIECES), n), rng.choice(len(_GAPS), n, p=[0.6] + [0.05] * 8)
        return "".join(_PIECES[p] + _GAPS[g] for p, g in zip(*pieces, strict=True))

    texts = ["hi", "What is dense retrieval?", prose(30)]
    texts += [prose(n) for n in (5_000, 10_000, 25_000)]  # about 30, 70 and 170 KB
    texts.append(GIANT_WORD)
    for cut_at in (1024, 2048, 8192):  # a word, a run of spaces, a newline-only stretch across a bound
        texts.append(prose(150)[: cut_at - 10] + "y" * 50 + " " + prose(2000))
        texts.append(prose(150)[: cut_at - 10] + " " * 3000 + prose(2000))
        texts.append(prose(150)[: cut_at - 10] + "\n".join(["line"] * 2000) + " " + prose(2000))
    texts.append("one " + " " * 30_000 + prose(1000))  # the first bound characters hold one word
    return texts


LONG_TEXTS = _long_texts()


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory):
    """A tiny Qwen3 checkpoint (byte-level BPE tokenizer, appended EOS) from opera.models.tiny_models."""
    from opera.models import tiny_models

    return tiny_models.build("qwen3", tmp_path_factory.mktemp("tiny") / "qwen3")


def _settings(family: str, tiny_qwen) -> EncoderSettings:
    """Query and passage sides with different lengths; an instruction on queries."""
    from opera.models import tiny_models

    if family == "wordpiece":
        entry = {"path": MODEL, "pooling": "mean", "padding_side": "right", "query_instruction": "Represent: "}
        entry |= {"passage_instruction": "", "trust_remote_code": False}
    else:
        entry = tiny_models.registry_entry("qwen3", tiny_qwen)
    entry |= {"query_max_length": 24, "passage_max_length": 96, "encode_precision": "fp32"}
    return EncoderSettings.from_dict(entry)


@pytest.fixture(scope="module")
def family_models(model, tiny_qwen):
    """family -> (encoder settings, model): a WordPiece and a byte-level BPE tokenizer."""
    qwen = _settings("bpe", tiny_qwen)
    return {"wordpiece": (_settings("wordpiece", None), model), "bpe": (qwen, encoders.load(qwen, device="cpu"))}


def _unbounded(monkeypatch):
    monkeypatch.setattr(encoders, "BOUND_MIN_CHARS", sys.maxsize)


@pytest.mark.parametrize("family", ["wordpiece", "bpe"])
@pytest.mark.slow
def test_bounded_texts_keep_the_token_ids_of_the_whole_text(family, family_models):
    tokenizer = family_models[family][1].tokenizer
    for max_length in (8, 32, 512):
        bound = max(encoders.BOUND_MIN_CHARS, encoders.BOUND_CHARS_PER_TOKEN * max_length)
        for prefix in ("", "Instruct: Given a query\nQuery: "):
            texts = [prefix + text for text in LONG_TEXTS]
            bounded = encoders.bounded_texts(tokenizer, texts, max_length)
            whole = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
            assert tokenizer(bounded, truncation=True, max_length=max_length)["input_ids"] == whole
            cut_rows = [i for i, (text, kept) in enumerate(zip(texts, bounded, strict=True)) if kept != text]
            assert all(len(bounded[i]) <= bound and texts[i].startswith(bounded[i]) for i in cut_rows)
            assert {3, 4, 5} <= set(cut_rows)  # the long multi-word texts are cut
            if not prefix:  # no space to cut at (after a prefix, a cut within it may hold enough tokens)
                assert bounded[LONG_TEXTS.index(GIANT_WORD)] == GIANT_WORD


def test_bounded_texts_leave_left_truncation_alone(model):
    tokenizer = model.tokenizer
    previous = tokenizer.truncation_side
    tokenizer.truncation_side = "left"
    try:
        assert encoders.bounded_texts(tokenizer, LONG_TEXTS, 32) == LONG_TEXTS
    finally:
        tokenizer.truncation_side = previous


def _every_path(model, encoder, texts) -> list:
    """tokenize_side with and without the appended EOS, and encode_side, on both sides."""
    out = []
    for side in ("query", "passage"):
        out += [encoders.tokenize_side(model, encoder, side, texts, append_eos=eos) for eos in (True, False)]
        out.append(encoders.encode_side(model, encoder, side, texts, 8, "bound", show_progress=False))
    return out


@pytest.mark.parametrize("family", ["wordpiece", "bpe"])
@pytest.mark.slow
def test_every_tokenization_path_gives_the_same_tensors_and_embeddings(family, family_models, monkeypatch):
    encoder, model = family_models[family]
    bounded = _every_path(model, encoder, LONG_TEXTS)
    _unbounded(monkeypatch)
    whole = _every_path(model, encoder, LONG_TEXTS)
    for ours, reference in zip(bounded, whole, strict=True):
        if isinstance(ours, dict):
            assert ours.keys() == reference.keys()
            assert all(torch.equal(ours[name], reference[name]) for name in ours)
        else:
            assert np.array_equal(ours, reference)


@pytest.mark.parametrize("family", ["wordpiece", "bpe"])
def test_the_tokenizer_never_sees_more_than_the_bound_of_a_long_document(family, family_models, monkeypatch):
    encoder, model = family_models[family]
    seen: list[int] = []
    call = type(model.tokenizer).__call__

    def spy(self, text=None, *args, **kwargs):
        seen.extend(len(t) for t in ([text] if isinstance(text, str) else text or []))
        return call(self, text, *args, **kwargs)

    monkeypatch.setattr(type(model.tokenizer), "__call__", spy)
    documents = ["hi", *LONG_TEXTS[3:6]]  # up to 300 KB of words
    _every_path(model, encoder, documents)
    longest = max(encoder.query_max_length, encoder.passage_max_length)
    assert seen and max(seen) <= max(encoders.BOUND_MIN_CHARS, encoders.BOUND_CHARS_PER_TOKEN * longest)
    seen.clear()
    _unbounded(monkeypatch)  # the spy does see whole texts without the bound
    encoders.tokenize_side(model, encoder, "passage", documents[:2])
    assert max(seen) == len(documents[1])


def test_a_saved_model_encodes_long_queries_as_the_pipeline_with_its_query_length(tmp_path):
    """sentence-transformers holds one max_seq_length (the longer side's); a query longer than the
    query side's length is embedded as the pipeline embeds it when encode_query gets that length
    (the README's recipe), and differs without it."""
    from sentence_transformers import SentenceTransformer

    from opera.settings import EncoderSettings

    encoder = EncoderSettings(MODEL, "mean", "right", "", "", 24, 48, "fp32", False)
    model = encoders.load(encoder, device="cpu")
    model.save(str(tmp_path / "ckpt"))
    saved = SentenceTransformer(str(tmp_path / "ckpt"), device="cpu")
    query = ["vitamin d deficiency and bone density fractures falls and muscle weakness in nursing homes " * 3]
    ours = encoders.encode_side(model, encoder, "query", query, 8, desc="query")
    recipe = {"text": {"max_length": encoder.query_max_length, "truncation": True}}
    np.testing.assert_allclose(saved.encode_query(query, processing_kwargs=recipe), ours, atol=1e-6)
    assert float(_cos(saved.encode_query(query), ours)[0]) < 0.99  # cut at 48 tokens: another embedding
