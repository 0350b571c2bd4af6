"""Typed model settings: one frozen dataclass per resolved model entry of the config.

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
    # Gradient caching (opera.gradcache): encode a process's batch this many queries (and their
    # passages) at a time, with the full batch's loss and in-batch negatives. None: one pass.
    mini_batch_size: int | None = None

    # Optional keys: absent from a model entry means their default, and a default is left out of
    # to_dict, so that runs made before the key existed keep their parameters (and rerun nothing).
    OPTIONAL = ("mini_batch_size",)

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
        steps = list(range(self.eval_every, self.max_steps + 1, self.eval_every))
        if not steps or steps[-1] != self.max_steps:
            steps.append(self.max_steps)
        return steps
