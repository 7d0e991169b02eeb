"""The ``learned`` signal: which early feature predicts the final objective, learned from evidence.

Features of a trial at a rung (all from its smoothed window, recorded by the rung pruner):
``loss``, ``grad_norm``, their slopes over the window per time unit (``loss_slope``,
``grad_norm_slope``: Theil-Sen with the median smoother, least squares with the mean one) and
``objective``, the latest interim eval of the objective metric where the trainer reports one.

A trial's score is the weighted mean of its per-feature ranks in the cohort (1 = best; lower
is better, as for every signal). A weight's sign is the feature's direction, ``+`` ranking
LOWER values first (so it reads like Spearman's rho with a minimised objective); its size is
how much the feature counts. A missing loss or grad norm (a diverged run) ranks worst; a missing
slope or interim eval ranks in the middle (no evidence either way).

Weights start from the prior ``loss`` (+1 on loss, 0 on everything else: what measured best on
every bank) and move with three kinds of evidence, each a Spearman rho per feature over a set
of trials, computed only for sets of at least ``min_completed`` trials:

- ``rung_pairs`` (a): for each rung k, the trials recorded at k and k+1 in this sweep: their
  rung-k features against their rung-(k+1) objective (when at least ``min_completed`` of them
  report one; the objective feature itself is then left out, as a stale eval would predict
  itself) or else their rung-(k+1) loss. Pooled over all rungs; there from the second rung on,
  long before any trial finishes.
- ``finished`` (b): this sweep's finished (never stopped) trials: their features at the
  deciding rung against their final objective.
- ``history`` (c): earlier sweeps' curves (``RungPruner.add_history``), replayed through this
  pruner's own windows and rungs: features at the deciding rung against the final objective,
  one rho per earlier sweep.

Every set s of kind c adds ``PER_PAIR[c] * n_s * |v_s|`` pseudo-observations of its rho (times
the sign of v_s) to the prior's ``PRIOR_STRENGTH``, per feature f (n_s,f: the trials with both
the feature and the target):

    w_f = (PRIOR_STRENGTH * prior_f + sum_s PER_PAIR[c_s] * n_s,f * v_s * rho_s,f)
          / (PRIOR_STRENGTH + sum_s PER_PAIR[c_s] * n_s,f * |v_s|)

i.e. each kind's rho is shrunk toward the prior by n_kind / (n_kind + k). The final objective
is the real target, so a finished or earlier trial counts as one observation (v = 1); a rung
pair, whose target is only a proxy for it, as half of one, times the proxy's validity v: how
well the proxy (loss, or the interim objective, at rung k+1) ranks the FINAL objective, itself
learned from (b) and (c) at rung k+1 and shrunk toward +1 (the loss prior's own assumption):

    v = (PRIOR_STRENGTH + sum_s n_s * rho_s(proxy, final)) / (PRIOR_STRENGTH + sum_s n_s)

So before any trial finishes a rung pair counts as half a finished trial; where finished trials
show that a low loss later goes with a WORSE final (the paper's setting), v turns negative and
the rung pairs (whose loss ranking always persists from rung to rung) stop holding the loss
prior up and start pulling the other way. The prior is worth four finished trials. With no
evidence at all, the score IS the loss (lower first), exactly the ``loss`` signal's ranking and
cut-offs.

Every decision's sentence says which evidence set the weights (``weights from 9 rung pairs and
31 trials of 2 earlier sweeps: loss +0.80, grad norm -0.10``, or ``prior: loss``), and
``Decision.detail`` holds the weights, the prior, the evidence counts and the rho per kind.

Cost: rho per set is O(n log n); a set is recomputed only when it changed (a rung gained a trial,
a trial finished, history was added), so a decision recomputes at most two sets (the rung pair
and the finished trials at its rung; after a trial finished, the finished trials at each rung)
and ranks the cohort once per weighted feature: about 0.5 ms for a cohort of 100.
"""

from __future__ import annotations

import math
from typing import Any

from sweepd.pruners.base import fmt_num
from sweepd.pruners.signals import (
    FEATURES,
    OBJECTIVE,
    SLOPE,
    Signal,
    _label,
    rank_correlation,
    ranks,
)

LEARNED_FEATURES = (*FEATURES, *(f + SLOPE for f in FEATURES), OBJECTIVE)
DIVERGED_WORST = FEATURES  # missing = non-finite: the worst; others missing: the middle
PRIOR = {"loss": 1.0}
PRIOR_STRENGTH = 4.0  # the prior counts as this many finished trials
PER_PAIR = {"rung_pairs": 0.5, "finished": 1.0, "history": 1.0}


class LearnedSignal(Signal):
    name = "learned"
    needs = ("loss",)
    slopes = True
    learns = True

    def __init__(self, metric: str = "eval_loss", mode: str = "min", min_completed: int = 4):
        self.metric, self.mode, self.min_completed = metric, mode, min_completed
        self.sign = 1.0 if mode == "min" else -1.0  # objective -> lower is better
        self._cache: dict[tuple, tuple[Any, tuple[int, dict]]] = {}  # set -> (version, stats)

    # ---- scoring ----------------------------------------------------------------------------

    def rung_scores(
        self,
        index: int,
        ids: list[str],
        rungs: list[dict[str, dict]],
        finals: dict[str, float],
        history: dict[str, list[dict]],
        version: tuple[int, int] = (0, 0),
    ) -> tuple[list[float], dict[str, Any]]:
        """Score the cohort ``ids`` at rung ``index`` from all the pruner's evidence: ``rungs``
        (rung -> trial -> inputs), ``finals`` (trial -> final objective), ``history`` (sweep id
        -> [{"rungs": [inputs per rung], "objective": final or None}]). ``version`` (finals,
        history) changes whenever those two change: it keys the cache."""
        sets = self._final_sets(index, rungs, finals, history, version)
        validity = []
        for k in range(len(rungs) - 1):
            before, after = rungs[k], rungs[k + 1]
            n, rho, proxy = self._cached(
                ("pair", k), len(after), lambda: self._rung_pair(before, after)
            )
            if n:
                v = proxy_validity(proxy, self._final_sets(k + 1, rungs, finals, history, version))
                sets.append(("rung_pairs", n, rho, v))
                validity.append(round(v, 4))
        scores, detail = self._score([rungs[index][t] for t in ids], sets)
        if validity:
            detail["proxy_validity"] = validity
        return scores, detail

    def _final_sets(self, index, rungs, finals, history, version) -> list[tuple]:
        """Evidence against the final objective at rung ``index``: (b) and (c), one set each
        earlier sweep, as (kind, n, {feature: (pairs, rho)}, 1.0)."""
        out = []
        if index < len(rungs):
            recorded = rungs[index]
            finished = [t for t in recorded if t in finals]
            n, rho = self._cached(
                ("finished", index),
                (version[0], len(recorded)),
                lambda: self._stats([recorded[t] for t in finished],
                                    [self.sign * finals[t] for t in finished]),
            )  # fmt: skip
            if n:
                out.append(("finished", n, rho, 1.0))
        for sweep_id in sorted(history):
            n, rho = self._cached(
                ("history", index, sweep_id),
                version[1],
                lambda: self._history_set(history[sweep_id], index),
            )
            if n:
                out.append(("history", n, rho, 1.0))
        return out

    def scores(self, cohort, history):
        """The plain interface: evidence from ``history`` (finished trials at this rung) only."""
        rows, finals = [h[0] for h in history], [self.sign * h[1] for h in history]
        n, rho = self._stats(rows, finals)
        return self._score(cohort, [("finished", n, rho, 1.0)] if n else [])

    def _score(self, cohort: list[dict], sets: list[tuple]):
        weights, counts, rho = combine(sets)
        detail: dict[str, Any] = {
            "weights": {f: round(w, 4) for f, w in weights.items()},
            "prior": dict(PRIOR),
            "evidence": counts,
            "rho": rho,
            "orientation": "a positive weight ranks lower values first",
        }
        if not any(counts.values()):  # the prior itself: the loss, as the `loss` signal has it
            detail["source"] = "prior"
            return [math.inf if c.get("loss") is None else c["loss"] for c in cohort], detail
        detail["source"] = "evidence"
        return weighted_score(cohort, weights), detail

    # ---- evidence ---------------------------------------------------------------------------

    def _cached(self, key: tuple, version: Any, compute) -> tuple[int, dict]:
        hit = self._cache.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        stats = compute()
        self._cache[key] = (version, stats)
        return stats

    def _rung_pair(self, before: dict[str, dict], after: dict[str, dict]) -> tuple[int, dict, str]:
        """Rung-k features against the rung-(k+1) proxy: (n, rho per feature, the proxy)."""
        ids = [t for t in after if t in before]
        objective = [after[t].get(OBJECTIVE) for t in ids]
        if sum(v is not None for v in objective) >= self.min_completed:
            target = [None if v is None else self.sign * v for v in objective]
            return (*self._stats([before[t] for t in ids], target, skip=(OBJECTIVE,)), OBJECTIVE)
        return (*self._stats([before[t] for t in ids], [after[t].get("loss") for t in ids]), "loss")

    def _history_set(self, trials: list[dict], index: int) -> tuple[int, dict]:
        used = [t for t in trials if t["objective"] is not None and len(t["rungs"]) > index]
        return self._stats([t["rungs"][index] for t in used],
                           [self.sign * t["objective"] for t in used])  # fmt: skip

    def _stats(
        self, rows: list[dict], target: list[float | None], skip: tuple[str, ...] = ()
    ) -> tuple[int, dict[str, tuple[int, float]]]:
        """(trials counted, {feature: (pairs, rho with the target oriented lower-is-better)});
        (0, {}) for a set smaller than ``min_completed``."""
        kept = [(row, y) for row, y in zip(rows, target) if y is not None]
        if len(kept) < self.min_completed:
            return 0, {}
        out: dict[str, tuple[int, float]] = {}
        for feature in LEARNED_FEATURES:
            if feature in skip:
                continue
            pairs = [(row[feature], y) for row, y in kept if row.get(feature) is not None]
            if len(pairs) < self.min_completed:
                continue
            xs, ys = zip(*pairs)
            rho = rank_correlation(list(xs), list(ys))
            if rho is not None:
                out[feature] = (len(pairs), rho)
        return (len(kept) if out else 0), out

    # ---- words ------------------------------------------------------------------------------

    def label(self, feature: str) -> str:
        if feature == OBJECTIVE:
            return _label(self.metric)
        if feature.endswith(SLOPE):
            return _label(feature[: -len(SLOPE)]) + " slope"
        return _label(feature)

    def describe(self, values, score, detail):
        if detail["source"] == "prior":
            return f"loss {fmt_num(values.get('loss'))} (prior: loss, no evidence yet)"
        parts = [f"{self.label(f)} {w:+.2f}" for f, w in detail["weights"].items()
                 if round(w, 2) != 0]  # fmt: skip
        return (
            f"learned score {fmt_num(score)} (loss {fmt_num(values.get('loss'))}, grad norm "
            f"{fmt_num(values.get('grad_norm'))}; weights from "
            f"{evidence_words(detail['evidence'])}: {', '.join(parts) or 'all near 0'})"
        )


# ---- pure helpers ---------------------------------------------------------------------------


def combine(sets: list[tuple[str, int, dict, float]]):
    """Weights (the module docstring's formula) from sets (kind, n, {feature: (pairs, rho)}, v),
    the evidence counts, and each kind's pooled rho (pair-weighted, before v)."""
    num = {f: PRIOR_STRENGTH * PRIOR.get(f, 0.0) for f in LEARNED_FEATURES}
    den = dict.fromkeys(LEARNED_FEATURES, PRIOR_STRENGTH)
    counts = {"rung_pairs": 0, "finished": 0, "history_trials": 0, "history_sweeps": 0}
    pooled: dict[str, dict[str, list[float]]] = {}  # kind -> feature -> [sum n*rho, sum n]
    for kind, n, per_feature, v in sets:
        if kind == "history":
            counts["history_trials"] += n
            counts["history_sweeps"] += 1
        else:
            counts[kind] += n
        c = PER_PAIR[kind]
        for feature, (pairs, r) in per_feature.items():
            num[feature] += c * pairs * v * r
            den[feature] += c * pairs * abs(v)
            acc = pooled.setdefault(kind, {}).setdefault(feature, [0.0, 0.0])
            acc[0] += pairs * r
            acc[1] += pairs
    rho = {kind: {f: round(s / n, 4) for f, (s, n) in by.items()} for kind, by in pooled.items()}
    return {f: num[f] / den[f] for f in LEARNED_FEATURES}, counts, rho


def proxy_validity(proxy: str, final_sets: list[tuple]) -> float:
    """How well ``proxy`` (at a rung) ranks the final objective: the module docstring's v."""
    num = den = PRIOR_STRENGTH
    for _kind, _n, per_feature, _v in final_sets:
        if proxy in per_feature:
            pairs, r = per_feature[proxy]
            num += pairs * r
            den += pairs
    return num / den


def weighted_score(cohort: list[dict], weights: dict[str, float]) -> list[float]:
    """Weighted mean rank per trial (1 = best), a positive weight ranking low values first. A
    missing loss or grad norm ranks worst; any other missing feature ranks in the middle."""
    n = len(cohort)
    used = {f: w for f, w in weights.items() if abs(w) > 1e-12}
    total = sum(abs(w) for w in used.values())
    scores = [0.0] * n
    for feature, weight in used.items():
        values = [c.get(feature) for c in cohort]
        if feature in DIVERGED_WORST:
            feature_ranks = ranks(values, lower_is_better=weight > 0)
        else:
            feature_ranks = _ranks_missing_middle(values, weight > 0)
        for i, r in enumerate(feature_ranks):
            scores[i] += abs(weight) * r / total
    return scores


def _ranks_missing_middle(values: list[float | None], lower_is_better: bool) -> list[float]:
    n = len(values)
    present = [i for i, v in enumerate(values) if v is not None]
    out = [(n + 1) / 2] * n
    if len(present) > 1:
        sub = ranks([values[i] for i in present], lower_is_better)
        scale = (n - 1) / (len(present) - 1)
        for i, r in zip(present, sub):
            out[i] = 1 + (r - 1) * scale
    return out


def evidence_words(counts: dict[str, int]) -> str:
    """'9 rung pairs, 4 finished trials and 31 trials of 2 earlier sweeps'."""
    parts = []
    if counts["rung_pairs"]:
        parts.append(_plural(counts["rung_pairs"], "rung pair"))
    if counts["finished"]:
        parts.append(_plural(counts["finished"], "finished trial"))
    if counts["history_trials"]:
        parts.append(f"{_plural(counts['history_trials'], 'trial')} of "
                     f"{_plural(counts['history_sweeps'], 'earlier sweep')}")  # fmt: skip
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
