"""Online samplers: which query, and which of its positives, the trainer sees next.

One small interface (:class:`Sampler`): ``next_batch`` draws a batch, ``update`` learns from the
trained batch (the current model's detached positive cosines and per-query losses), and
``state_dict`` / ``load_state_dict`` make it resumable bit for bit. Implementations:

A method's ``sampler`` and ``sampler_options`` (opera.methods) pick one of :data:`SAMPLERS`:

- ``uniform`` (basic, sp, random): epochs are shuffles of all queries; positives drawn uniformly.
- ``dp`` (OPERA dynamic pruning; options ``query_level`` and ``doc_level`` make the ablations):
  query level: fixed epoch length n0 = n (1 - r0) / x0 + r0 n; at each epoch start the strength
  x(t) (cosine schedule) sets r(t) = (x n0 - n) / (n (x - 1)); queries at or above the (1 - r)
  quantile of query scores are all in the epoch, the remaining slots are filled uniformly from
  the others, so a high-score query is x times as likely to be visited and none is excluded.
  Document level: positives scoring above the (1 - c(t)) quantile of all pair scores weigh
  ``doc_weight``, others 1. Pair scores start as base-model cosines and are overwritten by the
  current model's cosine whenever a pair is trained; a query's score is the mean of its pairs'.
- ``infobatch``: per-query loss from the last visit (unseen queries count as high loss). At each
  epoch start, a random ``prune_ratio`` of the queries below the mean loss is skipped and the
  kept ones are up-weighted by 1 / (1 - prune_ratio); no pruning after ``delta`` of max_steps
  (unless ``anneal`` is false, as in the authors' runs).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import pandas as pd

from opera import methods
from opera.methods.params import DpParams, InfoBatchParams


def cosine_schedule(step: float, total: float, start: float, end: float) -> float:
    """``end + (start - end) (1 + cos(pi t / T)) / 2``: start at t = 0, end at t = T."""
    t = min(max(step, 0.0), total)
    return end + (start - end) * (1.0 + math.cos(math.pi * t / total)) / 2.0


class PairIndex:
    """Training pairs grouped by query (CSR layout): pairs of query i are rows offsets[i]:offsets[i+1]."""

    def __init__(self, pairs: pd.DataFrame):
        pairs = pairs.sort_values(["query_id", "doc_id"], kind="stable").reset_index(drop=True)
        self.query_ids = pairs["query_id"].drop_duplicates().to_numpy()
        self.doc_ids = pairs["doc_id"].to_numpy()
        self.base_scores = pairs["score"].to_numpy(dtype=np.float64)
        counts = pairs.groupby("query_id", sort=False).size().to_numpy()
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        self.pair_query = np.repeat(np.arange(len(counts)), counts)

    @property
    def n_queries(self) -> int:
        return len(self.query_ids)

    @property
    def n_pairs(self) -> int:
        return len(self.doc_ids)


@dataclass
class Batch:
    queries: np.ndarray  # query indices into PairIndex.query_ids
    pairs: np.ndarray  # the positive pair drawn for each query (row of the pair table)
    weights: np.ndarray  # per-query loss weight


class _EpochQueue:
    """Queries left in the current epoch; a batch never holds the same query twice.

    When an epoch runs out mid-batch, the next one is appended; a query already in the batch is
    deferred to the front of the queue instead of being trained twice in one step.
    """

    def __init__(self):
        self.items: deque[tuple[int, float]] = deque()
        self.epochs = 0

    def take(self, size: int, new_epoch) -> list[tuple[int, float]]:
        batch, members, deferred, refills = [], set(), [], 0
        while len(batch) < size:
            if not self.items:
                if refills > 100:
                    raise RuntimeError(
                        "sampler cannot fill a batch of distinct queries; batch_size exceeds the queries available"
                    )
                self.items.extend(new_epoch())
                self.epochs += 1
                refills += 1
            query, weight = self.items.popleft()
            if query in members:
                deferred.append((query, weight))
                continue
            batch.append((query, weight))
            members.add(query)
        self.items.extendleft(reversed(deferred))
        return batch

    def state_dict(self) -> dict:
        return {"items": [list(item) for item in self.items], "epochs": self.epochs}

    def load_state_dict(self, state: dict) -> None:
        self.items = deque((int(q), float(w)) for q, w in state["items"])
        self.epochs = int(state["epochs"])


class Sampler:
    """Uniform sampler, and the base of the others: epochs are shuffles, positives uniform."""

    # The fields of its train-log entry (``sampler``) that trace its schedule over training: the
    # report draws a schedules plot for a config whose samplers have some (opera.report.sampler_plots).
    schedule_keys: tuple[str, ...] = ()

    def __init__(self, pairs: PairIndex, max_steps: int, seed: int, params: dict | None = None):
        if pairs.n_queries == 0:
            raise ValueError("no training pairs: nothing to sample")
        self.pairs = pairs
        self.max_steps = max_steps
        self.params = dict(params or {})
        self.rng = np.random.default_rng(seed)
        self.queue = _EpochQueue()
        self.scores = pairs.base_scores.copy()  # current pair scores (dp) / unused otherwise
        self.seen = np.zeros(pairs.n_queries, dtype=bool)
        self.step = 0
        # diagnostics (logged, never used to sample): visits per query, pairs trained at least once
        # (their score is "fresh": written back by training, not the base model's), and the
        # total-variation distance from uniform of the last batch's positive draws
        self.visits = np.zeros(pairs.n_queries, dtype=np.int64)
        self.trained_pairs = np.zeros(pairs.n_pairs, dtype=bool)
        self.positive_tv = 0.0

    # --- what subclasses override -------------------------------------------------------------
    def new_epoch(self) -> list[tuple[int, float]]:
        return [(int(q), 1.0) for q in self.rng.permutation(self.pairs.n_queries)]

    def positive_weights(self, query: int) -> np.ndarray | None:
        """Weights of the query's positives (None: uniform)."""
        return None

    def learn(self, batch: Batch, pos_scores: np.ndarray, losses: np.ndarray) -> None:
        pass

    def extra_log(self) -> dict:
        return {}

    # --- the interface -------------------------------------------------------------------------
    def next_batch(self, step: int, batch_size: int) -> Batch:
        if batch_size > self.pairs.n_queries:
            raise ValueError(f"batch_size {batch_size} exceeds the {self.pairs.n_queries} training queries")
        self.step = step
        drawn = self.queue.take(batch_size, self.new_epoch)
        queries = np.array([q for q, _ in drawn], dtype=np.int64)
        weights = np.array([w for _, w in drawn], dtype=np.float64)
        chosen = np.empty(len(queries), dtype=np.int64)
        distances = np.zeros(len(queries))
        for i, query in enumerate(queries):
            lo, hi = self.pairs.offsets[query], self.pairs.offsets[query + 1]
            w = self.positive_weights(query)
            if w is None:
                chosen[i] = lo + self.rng.integers(hi - lo)
                continue
            p = w / w.sum()
            chosen[i] = lo + self.rng.choice(hi - lo, p=p)
            distances[i] = 0.5 * np.abs(p - 1.0 / (hi - lo)).sum()
        self.positive_tv = float(distances.mean())
        return Batch(queries, chosen, weights)

    def update(self, batch: Batch, pos_scores: np.ndarray, losses: np.ndarray) -> None:
        self.seen[batch.queries] = True
        np.add.at(self.visits, batch.queries, 1)
        self.trained_pairs[batch.pairs] = True
        self.learn(batch, np.asarray(pos_scores, dtype=np.float64), np.asarray(losses, dtype=np.float64))

    def log_state(self) -> dict:
        return {
            "epoch": self.queue.epochs,
            "queries_seen": int(self.seen.sum()),
            "n_queries": self.pairs.n_queries,
            **self.diagnostics(),
            **self.extra_log(),
        }

    def diagnostics(self) -> dict:
        """How the sampler has spread training so far (docs/methods.md, "Sampler diagnostics").

        ``positive_tv``: mean over the last batch of the total-variation distance between the
        positive draw and a uniform one (0 for a uniform draw); ``visit_cv``: coefficient of
        variation of the visits per training query (0 when every query is visited equally
        often); ``distinct_positives``: pairs trained at least once."""
        mean = float(self.visits.mean())
        return {
            "positive_tv": round(self.positive_tv, 6),
            "visit_cv": round(float(self.visits.std()) / mean, 6) if mean > 0 else None,
            "distinct_positives": int(self.trained_pairs.sum()),
            "n_pairs": self.pairs.n_pairs,
        }

    def state_dict(self) -> dict:
        return {
            "rng": self.rng.bit_generator.state,
            "queue": self.queue.state_dict(),
            "scores": self.scores.tolist(),
            "seen": self.seen.tolist(),
            "step": self.step,
            "visits": self.visits.tolist(),
            "trained_pairs": np.flatnonzero(self.trained_pairs).tolist(),
            "positive_tv": self.positive_tv,
            **self.extra_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.queue.load_state_dict(state["queue"])
        self.scores = np.asarray(state["scores"], dtype=np.float64)
        self.seen = np.asarray(state["seen"], dtype=bool)
        self.step = int(state["step"])
        # state written before the diagnostics existed resumes the same draws; its counts restart here
        self.visits = np.asarray(state.get("visits", np.zeros(self.pairs.n_queries)), dtype=np.int64)
        self.trained_pairs = np.zeros(self.pairs.n_pairs, dtype=bool)
        self.trained_pairs[np.asarray(state.get("trained_pairs", []), dtype=np.int64)] = True
        self.positive_tv = float(state.get("positive_tv", 0.0))
        self.load_extra_state(state)

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass


class DynamicPruningSampler(Sampler):
    """OPERA's dynamic pruning; ``query_level`` / ``doc_level`` switch the two halves (ablations)."""

    schedule_keys = ("x", "c", "query_threshold")

    def __init__(
        self,
        pairs: PairIndex,
        max_steps: int,
        seed: int,
        params: dict,
        query_level: bool = True,
        doc_level: bool = True,
    ):
        super().__init__(pairs, max_steps, seed, params)
        self.query_level = query_level
        self.doc_level = doc_level
        self.params = DpParams.of(params)
        n, r0, x0 = pairs.n_queries, self.params.r0, self.params.x0
        self.n0 = max(1, int(round(n * (1 - r0) / x0 + r0 * n))) if query_level else n
        self.epoch_stats = {}
        self._tau_step = None
        self._tau = None

    def query_scores(self) -> np.ndarray:
        sums = np.add.reduceat(self.scores, self.pairs.offsets[:-1])
        return sums / np.diff(self.pairs.offsets)

    def strength(self, step: int) -> float:
        return cosine_schedule(step, self.max_steps, self.params.x_start, self.params.x_end)

    def cutoff(self, step: int) -> float:
        return cosine_schedule(step, self.max_steps, self.params.c_start, self.params.c_end)

    def new_epoch(self) -> list[tuple[int, float]]:
        if not self.query_level:
            return super().new_epoch()
        n, n0 = self.pairs.n_queries, self.n0
        x = self.strength(self.step)
        r = float(np.clip((x * n0 - n) / (n * (x - 1)), 0.0, n0 / n))
        scores = self.query_scores()
        threshold = float(np.quantile(scores, 1 - r)) if r > 0 else math.inf
        top = np.flatnonzero(scores >= threshold)
        if len(top) > n0:  # ties at the threshold: keep the n0 best, deterministic order
            top = top[np.argsort(-scores[top], kind="stable")[:n0]]
        rest = np.setdiff1d(np.arange(n), top, assume_unique=True)
        fill = self.rng.choice(rest, size=min(n0 - len(top), len(rest)), replace=False)
        epoch = self.rng.permutation(np.concatenate([top, fill]))
        # the threshold is logged as None when no query is forced in (r = 0): JSON has no infinity
        self.epoch_stats.update(
            x=x, r=r, n0=n0, n_top=int(len(top)), query_threshold=threshold if math.isfinite(threshold) else None
        )
        return [(int(q), 1.0) for q in epoch]

    def tau(self) -> float:
        """(1 - c) quantile of all pair scores at the current step (computed once per step)."""
        if self._tau_step != self.step:
            c = self.cutoff(self.step)
            self._tau = float(np.quantile(self.scores, 1 - c))
            self._tau_step = self.step
            self.epoch_stats.update(c=c, tau=self._tau)
        return self._tau

    def positive_weights(self, query: int) -> np.ndarray | None:
        if not self.doc_level:
            return None
        lo, hi = self.pairs.offsets[query], self.pairs.offsets[query + 1]
        return np.where(self.scores[lo:hi] > self.tau(), self.params.doc_weight, 1.0)

    def learn(self, batch: Batch, pos_scores: np.ndarray, losses: np.ndarray) -> None:
        self.scores[batch.pairs] = pos_scores
        self._tau_step = None  # scores changed: tau must be recomputed, even at the same step

    def extra_log(self) -> dict:
        log = {key: (round(value, 6) if isinstance(value, float) else value) for key, value in self.epoch_stats.items()}
        if self.doc_level:  # which scores decide the weighting: fresh ones, or the base model's
            above = self.scores > np.quantile(self.scores, 1 - self.cutoff(self.step))  # tau, without its cache
            log["fresh_above_tau"] = round(float(self.trained_pairs[above].mean()), 6) if above.any() else None
        return log

    def extra_state(self) -> dict:
        return {"last": dict(self.epoch_stats)}  # so a resumed run logs the same sampler fields

    def load_extra_state(self, state: dict) -> None:
        self.epoch_stats = dict(state.get("last", {}))
        self._tau_step = None


class InfoBatchSampler(Sampler):
    """InfoBatch (Qin et al., ICLR 2024) at the query level, with the loss re-weighting returned per query."""

    schedule_keys = ("pruned",)

    def __init__(self, pairs: PairIndex, max_steps: int, seed: int, params: dict):
        super().__init__(pairs, max_steps, seed, params)
        self.params = InfoBatchParams.of(params)
        self.losses = np.full(pairs.n_queries, np.inf)  # unseen queries count as not yet learned
        self.epoch_stats = {}

    def pruning_active(self) -> bool:
        """InfoBatch anneals: no pruning in the last (1 - delta) of training, unless annealing is off."""
        return not self.params.anneal or self.step < self.params.delta * self.max_steps

    def new_epoch(self) -> list[tuple[int, float]]:
        n, ratio = self.pairs.n_queries, self.params.prune_ratio
        order = self.rng.permutation(n)
        seen = np.isfinite(self.losses)
        if not self.pruning_active() or not seen.any():
            self.epoch_stats.update(pruned=0, well_learned=0, pruning=self.pruning_active())
            return [(int(q), 1.0) for q in order]
        mean = float(self.losses[seen].mean())
        well = np.flatnonzero(seen & (self.losses < mean))
        skipped = self.rng.choice(well, size=int(round(ratio * len(well))), replace=False)
        weight = np.ones(n)
        weight[well] = 1.0 / (1.0 - ratio)
        keep = np.ones(n, dtype=bool)
        keep[skipped] = False
        self.epoch_stats.update(
            pruned=int(len(skipped)), well_learned=int(len(well)), mean_loss=round(mean, 6), pruning=True
        )
        return [(int(q), float(weight[q])) for q in order if keep[q]]

    def learn(self, batch: Batch, pos_scores: np.ndarray, losses: np.ndarray) -> None:
        self.losses[batch.queries] = losses

    def extra_log(self) -> dict:
        return dict(self.epoch_stats)

    def extra_state(self) -> dict:
        return {
            "losses": [None if not np.isfinite(v) else float(v) for v in self.losses],
            "last": dict(self.epoch_stats),
        }

    def load_extra_state(self, state: dict) -> None:
        self.losses = np.array([np.inf if v is None else v for v in state["losses"]], dtype=np.float64)
        self.epoch_stats = dict(state.get("last", {}))


# sampler name -> class; a method's sampler_options are passed as keyword arguments
SAMPLERS = {"uniform": Sampler, "infobatch": InfoBatchSampler, "dp": DynamicPruningSampler}


def schedule_keys(method: str) -> tuple[str, ...]:
    """The train-log fields that trace ``method``'s sampler schedule (none for a method that does not train)."""
    entry = methods.get(method)
    return SAMPLERS[entry.sampler].schedule_keys if entry.sampler else ()


def make_sampler(method: str, pairs: PairIndex, max_steps: int, seed: int, params: dict) -> Sampler:
    """The sampler of ``method`` as its registry entry (opera.methods) names it."""
    entry = methods.get(method)
    if entry.sampler is None:
        raise ValueError(f"method {method!r} does not train, so it has no sampler")
    return SAMPLERS[entry.sampler](pairs, max_steps, seed, params, **entry.sampler_options)
