"""Tiny stand-ins for the paper's two model families, built offline in seconds with random weights.

The paper finetunes BAAI/bge-large-en-v1.5 (a BERT encoder: CLS pooling, a query instruction) and
Qwen/Qwen3-Embedding-0.6B (a Qwen3 decoder: last-token pooling, left padding, an instruction on
queries, and an EOS token appended by its tokenizer's post-processor). Their weights cannot be
downloaded everywhere the pipeline is tested, so this module writes look-alikes that share what the
pipeline must handle right, and nothing else:

- the real ``transformers`` architectures (``BertModel``, ``Qwen3Model``), a few layers, random weights;
- tokenizers trained here with the ``tokenizers`` library on the shipped SciFact corpus, saved the
  way the real ones are (``tokenizer_class`` BertTokenizer / Qwen2Tokenizer, ``tokenizer.json`` with a
  ``TemplateProcessing`` post-processor: ``[CLS] $A [SEP]`` for BERT, ``$A <|endoftext|>`` for Qwen3,
  whose ``eos_token`` is ``<|im_end|>`` and ``pad_token`` ``<|endoftext|>``, as in the real checkpoint);
- safetensors weights, in the sentence-transformers layout of the real checkpoints (Transformer,
  Pooling, Normalize, and for Qwen3 the ``prompts`` of its ``config_sentence_transformers.json``) or
  as a plain transformers checkpoint (``layout="transformers"``).

``FAMILIES`` holds, per family, the registry entry it stands in for. Metrics of these models mean
nothing (random weights); they exist to run every code path of the two families on a CPU or a GPU.

    python -m opera.models.tiny_models OUT_DIR [--layout sentence-transformers|transformers]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Qwen2's pre-tokenization regex (transformers' Qwen2Tokenizer rebuilds the backend with it).
QWEN_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
# The prompt saved in Qwen3-Embedding-0.6B's config_sentence_transformers.json (no space after "Query:").
QWEN_PROMPT = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"


@dataclass(frozen=True)
class Family:
    """One of the paper's model families: the registry entry it mimics and its tiny shape."""

    name: str  # folder name of the tiny checkpoint
    registry_key: str  # the opera/registry.yaml entry whose settings it is run with
    pooling: str  # sentence-transformers pooling mode saved in the checkpoint
    vocab_size: int


FAMILIES = {
    "bert": Family("tiny-bge", "bge-large-en-v1.5", "cls", 2000),
    "qwen3": Family("tiny-qwen3-embedding", "Qwen3-Embedding-0.6B", "lasttoken", 2000),
}
HIDDEN = 64
LAYERS = 2
MAX_POSITIONS = 512
# Wider than transformers' default (0.02), with which every text's CLS vector of a random BERT is
# almost the same (mean cosine 0.9999): at 0.3 texts embed apart (about 0.6 for BERT, 0.05 for Qwen3).
INIT_RANGE = 0.3


def _scifact() -> Path:
    """The shipped SciFact folder."""
    from opera.data.sources.beir import SHIPPED_DIR

    folder = SHIPPED_DIR / "scifact"
    if not (folder / "corpus.jsonl.gz").is_file():
        raise FileNotFoundError(f"the shipped SciFact corpus is not in {SHIPPED_DIR}")
    return folder


def training_texts(limit: int = 1500) -> list[str]:
    """Queries and the first ``limit`` documents of the shipped SciFact corpus (titles and texts)."""
    corpus = _scifact()
    texts: list[str] = []
    from opera import data

    texts.extend(query["text"] for _, query in data.iter_jsonl(corpus / "queries.jsonl.gz"))
    for count, (_, doc) in enumerate(data.iter_jsonl(corpus / "corpus.jsonl.gz")):
        if count >= limit:
            break
        texts.extend([doc.get("title", ""), doc["text"]])
    return [t for t in texts if t]


def bert_tokenizer(texts: list[str], vocab_size: int):
    """A BERT WordPiece tokenizer (lower case, ``[CLS] $A [SEP]``), trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, clean_text=True, handle_chinese_chars=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    tokenizer.train_from_iterator(
        texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    )
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    config = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": True,
        "model_max_length": MAX_POSITIONS,
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "mask_token": "[MASK]",
        "clean_up_tokenization_spaces": True,
    }
    return tokenizer, config


def qwen_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer as Qwen3-Embedding's: ``$A <|endoftext|>``, EOS ``<|im_end|>``."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokenizer = Tokenizer(models.BPE(continuing_subword_prefix="", end_of_word_suffix="", byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    end = tokenizer.token_to_id("<|endoftext|>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A:0 <|endoftext|>:0",
        pair="$A:0 <|endoftext|>:0 $B:1 <|endoftext|>:1",
        special_tokens=[("<|endoftext|>", end)],
    )
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "model_max_length": 131072,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "errors": "replace",
        "split_special_tokens": False,
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": {
            str(tokenizer.token_to_id(t)): {
                "content": t,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for t in specials
        },
    }
    return tokenizer, config


def _backbone(family: str, vocab_size: int, pad_id: int, eos_id: int):
    import torch
    from transformers import BertConfig, BertModel, Qwen3Config, Qwen3Model

    torch.manual_seed(0)
    if family == "bert":
        config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=4,
            intermediate_size=4 * HIDDEN,
            max_position_embeddings=MAX_POSITIONS,
            pad_token_id=pad_id,
            initializer_range=INIT_RANGE,
        )
        return BertModel(config, add_pooling_layer=True)
    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        initializer_range=INIT_RANGE,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        bos_token_id=None,
    )
    return Qwen3Model(config)


def _write_transformers(family: str, out: Path) -> None:
    """A plain transformers checkpoint: config.json, model.safetensors and the tokenizer files."""
    spec = FAMILIES[family]
    texts = training_texts()
    if family == "bert":
        tokenizer, tok_config = bert_tokenizer(texts, spec.vocab_size)
        pad, eos = tokenizer.token_to_id("[PAD]"), tokenizer.token_to_id("[SEP]")
    else:
        tokenizer, tok_config = qwen_tokenizer(texts, spec.vocab_size)
        pad, eos = tokenizer.token_to_id("<|endoftext|>"), tokenizer.token_to_id("<|im_end|>")
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "tokenizer.json"))
    tokenizer.model.save(str(out))  # vocab.txt, or vocab.json + merges.txt, as the real checkpoints have
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2))
    model = _backbone(family, tokenizer.get_vocab_size(), pad, eos)
    model.save_pretrained(str(out), safe_serialization=True)


def build(family: str, out: str | Path, layout: str = "sentence-transformers") -> Path:
    """Write the tiny checkpoint of ``family`` ("bert" or "qwen3") to ``out``; return its path.

    ``layout``: "sentence-transformers" (modules.json with Transformer, Pooling and Normalize, as
    the real checkpoints) or "transformers" (config.json, weights and tokenizer only).
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, not {family!r}")
    if layout not in ("sentence-transformers", "transformers"):
        raise ValueError(f"layout must be 'sentence-transformers' or 'transformers', not {layout!r}")
    out = Path(out)
    if layout == "transformers":
        _write_transformers(family, out)
        return out

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    with tempfile.TemporaryDirectory() as staging:
        _write_transformers(family, Path(staging))
        transformer = Transformer(staging, max_seq_length=MAX_POSITIONS)
        pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode=FAMILIES[family].pooling)
        prompts = {"query": QWEN_PROMPT, "document": ""} if family == "qwen3" else None
        model = SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu", prompts=prompts)
        if out.exists():
            shutil.rmtree(out)
        model.save(str(out))
    return out


def build_all(root: str | Path, layout: str = "sentence-transformers") -> dict[str, Path]:
    """Both families under ``root`` (``root/tiny-bge``, ``root/tiny-qwen3-embedding``)."""
    root = Path(root)
    return {family: build(family, root / spec.name, layout) for family, spec in FAMILIES.items()}


def registry_entry(family: str, path: str | Path, **overrides) -> dict:
    """The registry entry of the family's real model with ``path`` pointing at the tiny checkpoint."""
    from opera.config import load_registry

    entry = dict(load_registry()["models"][FAMILIES[family].registry_key])
    entry["path"] = str(path)
    entry.update(overrides)
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write the checkpoints into (one sub-folder per family)")
    parser.add_argument("--layout", default="sentence-transformers", choices=["sentence-transformers", "transformers"])
    parser.add_argument("--family", action="append", choices=sorted(FAMILIES), help="default: every family")
    args = parser.parse_args(argv)
    for family in args.family or sorted(FAMILIES):
        print(build(family, args.out / FAMILIES[family].name, args.layout))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
