"""Golden losses of builtin:tiny on the built-in data, seed 0 (torchtune's habit).

If these move, something changed the model init, the tokenizer, the data order, packing, the
loss or the optimizer: find out which before updating the numbers.
"""

import pytest

from trainer.loop import run_trial
from trainer.reporting import InMemoryReporter

GOLDEN_LOSS = [5.743644, 5.5945, 5.492326, 5.385792, 5.269389]
GOLDEN_GRAD_NORM = [2.264493, 2.262444, 2.038499, 2.086148, 2.026313]


def test_first_steps_match_the_golden_values(trial_cfg):
    rep = InMemoryReporter()
    run_trial(trial_cfg(hparams={"effective_batch_size": 8}, budget={"max_steps": 5}), rep)
    assert [s["loss"] for s in rep.steps] == pytest.approx(GOLDEN_LOSS, rel=1e-4)
    assert [s["grad_norm"] for s in rep.steps] == pytest.approx(GOLDEN_GRAD_NORM, rel=1e-4)
    assert [s["step"] for s in rep.steps] == [1, 2, 3, 4, 5]
    assert set(rep.steps[0]) >= {"step", "samples", "tokens", "loss", "grad_norm", "lr", "seconds"}
