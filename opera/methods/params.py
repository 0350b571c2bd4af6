"""Each ``method_params`` block of the config (opera/schema.yaml describes every key) as a frozen
dataclass, by block name (a method's ``params_key``). Pruners and samplers read these; the config
and the rules keep the blocks as plain dicts (Snakemake passes and hashes them)."""

from __future__ import annotations

from dataclasses import dataclass

from opera.settings import TypedBlock


@dataclass(frozen=True)
class SpParams(TypedBlock):
    kept_pct: float
    mine_after_prune: bool = False


@dataclass(frozen=True)
class RandomParams(TypedBlock):
    kept_pct: float
    seed: int | None = None  # None: each training run's seed draws its own subset


@dataclass(frozen=True)
class InfoBatchParams(TypedBlock):
    prune_ratio: float
    delta: float
    anneal: bool


@dataclass(frozen=True)
class DpParams(TypedBlock):
    r0: float
    x0: float
    x_start: float
    x_end: float
    c_start: float
    c_end: float
    doc_weight: float


# the config's method_params block name -> its dataclass
PARAMS: dict[str, type[TypedBlock]] = {
    "sp": SpParams,
    "random": RandomParams,
    "infobatch": InfoBatchParams,
    "dp": DpParams,
}
