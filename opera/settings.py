"""Typed settings: one frozen dataclass per resolved model entry of the config, and the validation
pool's blocks (opera.retrieval.validation).

The config stays plain YAML (Snakemake compares params by their text); :func:`ModelSettings.from_dict`
turns a resolved entry into this object once, at validation and at the start of every job, and the
library reads fields, never keys. The per-side rule (a query or a passage gets its own instruction
and maximum length) lives in :meth:`ModelSettings.side` and nowhere else.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

# The config's pooling names -> sentence-transformers pooling modes. A model family that pools another
# way (max, weightedmean, ...) is one entry here; the config schema takes its names from this table.
POOLINGS = {"mean": "mean", "cls": "cls", "last": "lasttoken"}


class ModelLoadError(RuntimeError):
    """A model could not be located or loaded; ``field`` is the model entry's key at fault (path,
    pooling, ...) when one is. Defined here, without torch, so that job plumbing names the config
    key without importing the encoders."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field

    def __reduce__(self):  # keeps ``field`` across processes (multi-GPU encoding workers)
        return type(self), (str(self), self.field)


Side = Literal["query", "passage"]


@dataclass(frozen=True)
class Mining:
    """Hard negatives: the base model's ranks lo..hi of a query's non-positive documents."""

    lo: int
    hi: int


@dataclass(frozen=True)
class SideEncoding:
    instruction: str
    max_length: int


@dataclass(frozen=True)
class EncoderSettings:
    """Everything that changes embeddings: a change here reruns scoring, indexing and evaluation."""

    path: str
    pooling: str
    padding_side: str
    query_instruction: str
    passage_instruction: str
    query_max_length: int
    passage_max_length: int
    encode_precision: str
    trust_remote_code: bool

    @classmethod
    def from_dict(cls, entry: dict) -> EncoderSettings:
        return cls(**{f.name: entry[f.name] for f in dataclasses.fields(cls)})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def side(self, side: Side) -> SideEncoding:
        """The instruction and maximum length of one side: the only place this rule is written."""
        if side == "query":
            return SideEncoding(self.query_instruction, self.query_max_length)
        if side == "passage":
            return SideEncoding(self.passage_instruction, self.passage_max_length)
        raise ValueError(f"side must be 'query' or 'passage', not {side!r}")


@dataclass(frozen=True)
class ModelSettings:
    """A resolved model entry: the encoder, and how it is finetuned."""

    encoder: EncoderSettings
    precision: str
    lr: float
    max_steps: int
    batch_size: int
    group_size: int
    temperature: float
    warmup_ratio: float
    weight_decay: float
    grad_clip: float
    eval_every: int
    mining: Mining
    gradient_checkpointing: bool
    gpus: int
    # In-batch passages that are known positives of a query are masked out of its loss.
    mask_false_negatives: bool
    # Keep the EOS token the tokenizer appends (Qwen3) in training (evaluation always keeps it).
    train_append_eos: bool
    # Gradient caching (opera.training.gradcache): encode a process's batch this many queries (and their
    # passages) at a time, with the full batch's loss and in-batch negatives. None: one pass.
    mini_batch_size: int | None = None
    # Validate on the dataset's pool (opera.retrieval.validation) every this many steps and at the last.
    # None: no validation during training.
    validate_every: int | None = None

    # Optional keys: absent from a model entry means their default, and a default is left out of
    # to_dict, so that runs made before the key existed keep their parameters (and rerun nothing).
    OPTIONAL = ("mini_batch_size", "validate_every")

    @classmethod
    def from_dict(cls, entry: dict) -> ModelSettings:
        """From a flat resolved model entry (the config's form); every field must be there, no other."""
        own = {f.name for f in dataclasses.fields(cls)} - {"encoder"}
        expected = own | {f.name for f in dataclasses.fields(EncoderSettings)}
        missing, unknown = sorted(expected - set(entry) - set(cls.OPTIONAL)), sorted(set(entry) - expected)
        if missing or unknown:
            raise ValueError(f"model settings: missing keys {missing}, unknown keys {unknown}")
        values = {name: entry[name] for name in own if name in entry}
        values["mining"] = Mining(**entry["mining"])
        return cls(encoder=EncoderSettings.from_dict(entry), **values)

    def to_dict(self) -> dict:
        """The flat form of the config."""
        flat = dataclasses.asdict(self)
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name in self.OPTIONAL:
            if flat[name] == defaults[name]:
                del flat[name]
        return {**flat.pop("encoder"), **flat}

    @property
    def warmup_steps(self) -> int:
        return int(math.ceil(self.warmup_ratio * self.max_steps))

    def checkpoint_steps(self) -> list[int]:
        """Steps at which a finetuning run writes (and the workflow evaluates) a checkpoint."""
        return _every(self.eval_every, self.max_steps)

    def validation_steps(self) -> list[int]:
        """Steps at which a finetuning run validates on the pool; none without ``validate_every``."""
        return _every(self.validate_every, self.max_steps) if self.validate_every else []


def _every(interval: int, last: int) -> list[int]:
    """Every ``interval`` steps up to ``last``, and ``last``."""
    steps = list(range(interval, last + 1, interval))
    return steps if steps and steps[-1] == last else [*steps, last]


@dataclass(frozen=True)
class PoolSettings:
    """The config's ``validation`` block: what goes into a dataset's pool."""

    candidates: int  # each validation query's top documents under the base model
    random: float | int  # the rest: a fraction (< 1) of the corpus, or a count
    queries: int | None  # a seeded sample of the evaluation split's judged queries; None: all
    seed: int

    @classmethod
    def from_dict(cls, block: dict) -> PoolSettings:
        return cls(**{f.name: block[f.name] for f in dataclasses.fields(cls)})

    def random_count(self, corpus_size: int) -> int:
        """How many random documents the pool asks for in a corpus of ``corpus_size``."""
        if isinstance(self.random, float):
            return int(round(self.random * corpus_size))
        return int(self.random)


class TypedBlock:
    """A config block as a frozen dataclass: :meth:`of` builds it from the resolved block (every
    key the schema fills in; lists become tuples) and passes an already typed one through."""

    @classmethod
    def of(cls, block):
        if isinstance(block, cls):
            return block
        fields = dataclasses.fields(cls)
        required = {f.name for f in fields if f.default is dataclasses.MISSING}
        unknown, missing = set(block) - {f.name for f in fields}, required - set(block)
        if unknown or missing:  # the schema and the dataclass must name the same keys
            raise TypeError(f"{cls.__name__}: keys {sorted(unknown)} are no fields; fields {sorted(missing)} missing")
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in block.items()})


@dataclass(frozen=True)
class Evaluation(TypedBlock):
    """The config's ``evaluation`` block (opera/schema.yaml describes each key)."""

    split: str
    top_k: int
    cutoffs: tuple[int, ...]
    mrr_cutoff: int
    authors_ndcg: bool
    index_factory: str
    shard_passages: int
    embedding_dtype: str
    encode_batch_size: int
    # deletes index's stores once evaluated, or not: no param of evaluate (its block comes without it)
    keep_embeddings: bool = False


@dataclass(frozen=True)
class Scoring(TypedBlock):
    """The config's ``scoring`` block: how the base model scores pairs and builds the negative pool."""

    encode_batch_size: int
    judged_negatives_first: bool
    negative_pool_cap: int | None


@dataclass(frozen=True)
class Resources(TypedBlock):
    """The config's ``resources`` block: the floor of every job's request (opera.cost sizes above it)."""

    threads: int
    eval_threads: int | None
    mem_mb: int
    finetune_mem_mb: int
    runtime: int
    finetune_runtime: int
    gpu: bool
    encode_gpus: int


@dataclass(frozen=True)
class PoolMetrics:
    """How a pool is scored: the evaluation's cutoffs and search depth (the config's ``evaluation``)."""

    cutoffs: tuple[int, ...]
    mrr_cutoff: int
    top_k: int
    authors_ndcg: bool

    @classmethod
    def from_evaluation(cls, evaluation: Evaluation | dict) -> PoolMetrics:
        evaluation = Evaluation.of(evaluation)
        return cls(evaluation.cutoffs, evaluation.mrr_cutoff, evaluation.top_k, evaluation.authors_ndcg)


@dataclass(frozen=True)
class Validation:
    """How a finetune job validates (its model's ``validate_every`` says when): on which split's
    queries, scored how, encoded in batches of how many, passages joined how."""

    split: str
    scoring: PoolMetrics
    encode_batch_size: int
    title_join: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, entry: dict) -> Validation:
        scoring = entry["scoring"]
        return cls(**{**entry, "scoring": PoolMetrics(**{**scoring, "cutoffs": tuple(scoring["cutoffs"])})})
