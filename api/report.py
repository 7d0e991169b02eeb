"""A sweep's summary as Markdown (GET /sweeps/{id}/report?format=markdown): best config,
objective, the top trials, the compute ledger and the trial counts. Built from the same result
document as the JSON report."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

TOP_N = 5


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        text = f"{value:.4g}" if math.isfinite(value) else str(value)
    else:
        text = str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _cell(value)
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def markdown_report(doc: dict[str, Any], *, metric: str, mode: str) -> str:
    trials: list[dict[str, Any]] = doc.get("trials") or []
    ledger: dict[str, Any] = doc.get("ledger") or {}
    best = doc.get("best")
    lines = [f"# Sweep {doc.get('name')} (`{doc.get('sweep_id')}`)", "",
             f"- state: **{doc.get('state')}**",
             f"- objective: `{metric}` ({'lower' if mode == 'min' else 'higher'} is better)", ""]  # fmt: skip

    lines += ["## Best trial", ""]
    if best:
        lines += [f"Trial {best.get('number')} (`{best.get('trial_id')}`): "
                  f"**{metric} = {_cell(best.get('objective'))}**", ""]  # fmt: skip
        config = best.get("config") or {}
        lines += _table(["parameter", "value"], [[k, v] for k, v in sorted(config.items())]) if config else ["(no config)"]
    else:
        lines += ["No trial has been chosen as best yet."]
    lines.append("")

    scored = [t for t in trials if t.get("state") == "completed" and isinstance(t.get("objective"), (int, float))
              and math.isfinite(t["objective"])]  # fmt: skip
    scored.sort(key=lambda t: ((t["objective"] if mode == "min" else -t["objective"]), t.get("number", 0)))
    lines += [f"## Top {TOP_N} trials", ""]
    if scored:
        keys = sorted({k for t in scored[:TOP_N] for k in (t.get("config") or {})})
        rows = [[i + 1, t.get("number"), t.get("objective"), *[(t.get("config") or {}).get(k) for k in keys]]
                for i, t in enumerate(scored[:TOP_N])]  # fmt: skip
        lines += _table(["rank", "trial", metric, *keys], rows)
    else:
        lines.append("No completed trial with an objective yet.")
    lines.append("")

    lines += ["## Compute", ""]
    if ledger:
        spent = ledger.get("spent") or {}
        would = ledger.get("stopped_trials_would_have_spent") or {}
        full = ledger.get("without_pruning") or {}
        rows = [[what, _num(spent.get(what)), _num(would.get(what)), _num(full.get(what))]
                for what in ("samples", "tokens", "seconds")]  # fmt: skip
        lines += _table(["", "spent", "saved by early stopping", "without pruning"], rows)
        if "fraction_saved" in ledger:
            lines += ["", f"Early stopping saved {float(ledger['fraction_saved']) * 100:.1f}% of the samples "
                          f"({_num(ledger.get('trials_stopped', 0))} trials stopped)."]  # fmt: skip
        extra = {k: v for k, v in ledger.items() if k not in
                 ("spent", "stopped_trials_would_have_spent", "without_pruning", "fraction_saved", "trials_stopped")}
        for k, v in sorted(extra.items()):
            lines.append(f"- {k}: {_cell(v)}")
    else:
        lines.append("No ledger yet (it is written when the sweep finishes).")
    lines.append("")

    counts = Counter(t.get("state") for t in trials)
    lines += ["## Trials by state", ""]
    lines += _table(["state", "trials"], [[s, n] for s, n in sorted(counts.items(), key=lambda kv: str(kv[0]))]
                    + [["total", len(trials)]])  # fmt: skip
    return "\n".join(lines) + "\n"
