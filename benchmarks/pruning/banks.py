"""The banks ``make bench-pruning`` replays (issue 12): what each holds and how it is searched.

- ``curve_bank``: the issue-7 grid (48 configs, seed 0), TPE over the grid, eval loss.
- ``night1`` / ``night2``: the night bank (``generate --bank night``): 40 configs (10 learning
  rates x 4 batch sizes) fine-tuned on two disjoint halves of the same data, TPE over the grid,
  eval loss. ``night2`` also replays ``learned_history``: the learned signal given the trials of
  the night-1 sweep that ran with the same seed and size (what a nightly warm start hands over).
- ``vit`` / ``conformer``: converted AlgoPerf curves (``curve_bank/algoperf.py``), one config per
  trial, so random sampling over the bank's configs (not TPE), the objective the meta names.

Every bank's first rung is at 1/16 of its budget (samples), reduction factor 3, 4 workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmarks.curve_bank.bank import ALGOPERF_DIR, BANK_PATH, NIGHT_BANK_PATH, Run, load_bank

GRACE_FRACTION = 1 / 16  # first rung, as a fraction of the budget (256 of 4,096 on the curve bank)


@dataclass
class BankCase:
    name: str
    label: str
    runs: list[Run]
    sampler: str  # tpe | random
    objective: str
    tiny: bool  # a recorded tiny-model bank (the <= 1% at <= 20% target applies)
    history_from: str | None = None  # the bank whose sweeps are this one's history
    path: str = ""
    grace_fraction: float = GRACE_FRACTION

    @property
    def budget(self) -> int:
        return max(r.budget for r in self.runs)

    @property
    def grace(self) -> float:
        return self.budget * self.grace_fraction


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path(__file__).resolve().parents[2]))
    except ValueError:
        return str(path)


def load_cases(names: list[str] | None = None, sampler: str = "tpe", paths: dict | None = None,
               grace_fraction: float = GRACE_FRACTION) -> list[BankCase]:
    """The banks by name (all of ``BANKS`` by default) whose data is there, in ``BANKS`` order;
    ``night2`` brings ``night1`` (its history) along. ``paths``: name -> file, for tests."""
    paths = {**DEFAULT_PATHS, **(paths or {})}
    wanted = list(names or BANKS)
    if "night2" in wanted and "night1" not in wanted:
        wanted.insert(wanted.index("night2"), "night1")
    cases: list[BankCase] = []
    night = None
    for name in BANKS:
        if name not in wanted:
            continue
        path = Path(paths[name])
        if not path.exists():
            continue
        if name == "curve_bank":
            bank = load_bank(path)
            cases.append(BankCase(name, "curve bank (issue 7): 48-config grid, tiny model", bank.grid(0),
                                  sampler, "eval_loss", tiny=True, path=_rel(path)))
        elif name in ("night1", "night2"):
            night = night or load_bank(path)
            n = int(name[-1])
            runs = night.night(n)
            if not runs:
                continue
            cases.append(BankCase(name, f"night {n}: 10 LRs x 4 batch sizes, data half {n}, tiny model",
                                  runs, sampler, "eval_loss", tiny=True,
                                  history_from="night1" if n == 2 else None, path=_rel(path)))
        else:
            bank = load_bank(path)
            meta = bank.meta
            cases.append(BankCase(name, f"AlgoPerf {meta.get('workload', name)}: {len(bank.runs)} trials, "
                                  f"{meta.get('objective')} at {meta.get('budget_steps')} steps",
                                  bank.runs, "random", meta.get("objective", "val_loss"), tiny=False,
                                  path=_rel(path)))
    for case in cases:
        case.grace_fraction = grace_fraction
    return cases


BANKS = ("curve_bank", "night1", "night2", "vit", "conformer")
DEFAULT_PATHS = {"curve_bank": BANK_PATH, "night1": NIGHT_BANK_PATH, "night2": NIGHT_BANK_PATH,
                 "vit": ALGOPERF_DIR / "vit.jsonl.gz", "conformer": ALGOPERF_DIR / "conformer.jsonl.gz"}
