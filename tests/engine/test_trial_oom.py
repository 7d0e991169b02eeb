"""A trial that runs out of memory: trial state ``oom``, its config and what to change in the reason,
no retry (a final result, not an exception), FAIL in Optuna, a failure for the sweep's
same-failure verdict and for JUnit. Fast: Tune's report is a list, the store a SQLite file; one
test runs a real tiny trial in-process with the out-of-memory error injected at step 3."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch

from sweepd.engine import trainable
from sweepd.engine.finalize import uniform_failure
from sweepd.engine.recorder import StoreRecorder
from sweepd.engine.search import SweepOptunaSearch, make_sampler, optuna_storage
from sweepd.protocol import FINAL_MARKER, TrialState
from sweepd.spec import Capacity, load_spec, parse_spec
from tests.engine.test_recorder import FakeTrial, stored, sweep_id  # noqa: F401 - sweep_id is a fixture
from trainer.synthetic import make_data

REPO = Path(__file__).resolve().parents[2]
CUDA_OOM = ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which "
            "1.06 GiB is free.\nIncluding non-PyTorch memory, this process has 78.1 GiB memory in use.")


@pytest.fixture
def tune_calls(monkeypatch) -> list[dict]:
    reported: list[dict] = []
    monkeypatch.setattr(trainable.tune, "report", lambda metrics, **kw: reported.append(metrics))
    monkeypatch.setattr(trainable.tune, "get_checkpoint", lambda: None)
    return reported


def demo_doc() -> dict:
    return load_spec(REPO / "examples" / "demo.yaml", check_paths=False).to_stored()


@pytest.mark.parametrize("error", [torch.OutOfMemoryError(CUDA_OOM), torch.cuda.OutOfMemoryError(CUDA_OOM),
                                   MemoryError()], ids=["torch", "torch.cuda", "MemoryError"])
def test_the_trainable_ends_an_oom_trial_with_its_config_in_the_reason(monkeypatch, tune_calls, error):
    import trainer.loop

    def run(cfg, reporter, **kw):
        reporter.step({"step": 1, "samples": 8, "loss": 2.0})
        reporter.step({"step": 2, "samples": 16, "loss": 1.9})
        raise error

    monkeypatch.setattr(trainer.loop, "run_trial", run)
    trainable.run_trial_in_tune({"learning_rate": 1e-3, "effective_batch_size": 16}, spec_doc=demo_doc(),
                                db_url="sqlite://", sweep_id="x")  # returns: no exception, so no retry
    final = tune_calls[-1]
    assert final[FINAL_MARKER] == "oom" and final["status"] == "oom" and final["steps"] == 2
    assert "eval_loss" not in final
    reason = final["reason"]
    assert reason.startswith("out of memory at step 3 with micro_batch_tokens auto, max_seq_len 512, zero_stage 2, "
                             "offload none, activation checkpointing off, 1 worker (estimated ~")
    first = CUDA_OOM.splitlines()[0].rstrip(".") + ";" if str(error) else "MemoryError;"
    assert f"): {first}" in reason and "Including non-PyTorch" not in reason  # the error's first line only
    assert reason.endswith("; try resources.activation_checkpointing: true, a smaller resources.micro_batch_tokens, "
                           "resources.zero_stage: 3, resources.offload: optimizer, more resources.workers_per_trial")


def test_other_crashes_still_raise(monkeypatch, tune_calls):
    import trainer.loop

    monkeypatch.setattr(trainer.loop, "run_trial", lambda cfg, rep, **kw: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        trainable.run_trial_in_tune({"learning_rate": 1e-3}, spec_doc=demo_doc(), db_url="sqlite://", sweep_id="x")


def test_a_real_trial_that_runs_out_of_memory_at_step_3(monkeypatch, tune_calls, tmp_path):
    """The trainer's own loop on builtin:tiny; its decoder raises torch's OutOfMemoryError in the
    third step (a forward pre-hook counts the micro-batches)."""
    import trainer.models as models

    make_data(tmp_path, seed=0)
    spec = parse_spec({
        "name": "oom", "model": {"path": "builtin:tiny"},
        "data": {"train": [{"path": str(tmp_path / "train.jsonl")}], "max_seq_len": 512},
        "search": {"num_trials": 1, "space": {"learning_rate": {"choice": [1e-3]}}},
        "budget": {"max_steps": 5}, "pruner": {"type": "none"}, "objective": {"metric": "train_loss"},
        "resources": {"micro_batch_tokens": 1024, "zero_stage": 1},
    }, check_paths=False, capacity=Capacity(cpus=4, gpus=0))
    original = models.build_tiny
    calls = {"n": 0}

    def build(seed):
        loaded = original(seed)

        def hook(module, args):
            if len([m for m in tune_calls if "loss" in m]) >= 2:  # two steps reported: this is step 3
                calls["n"] += 1
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB (injected)")

        loaded.model.get_decoder().register_forward_pre_hook(hook)
        return loaded

    monkeypatch.setattr(models, "build_tiny", build)
    trainable.run_trial_in_tune({"learning_rate": 1e-3}, spec_doc=spec.to_stored(), db_url="sqlite://",
                                sweep_id="x")
    final = tune_calls[-1]
    assert calls["n"] == 1 and final[FINAL_MARKER] == "oom" and final["steps"] == 2
    assert final["reason"].startswith("out of memory at step 3 with micro_batch_tokens 1024, max_seq_len 512, "
                                      "zero_stage 1, offload none, activation checkpointing off, 1 worker")
    assert "Tried to allocate 20.00 MiB (injected)" in final["reason"]


# ---- the store, Optuna and the sweep's verdict ---------------------------------------------------

OOM_REASON = "out of memory at step 3 with micro_batch_tokens 16384, zero_stage 2: CUDA out of memory; try ..."


def test_an_oom_final_result_is_an_oom_trial_with_its_reason(engine, sqlite_url, sweep_id):
    rec = StoreRecorder(sqlite_url, sweep_id, "eval_loss")
    trial = FakeTrial(3)
    rec.on_trial_start(0, [trial], trial)
    trial.last_result = {FINAL_MARKER: "oom", "status": "oom", "reason": OOM_REASON, "steps": 2, "samples": 16}
    rec.on_trial_complete(1, [trial], trial)
    row, _ = stored(engine, sweep_id, 3)
    assert (row.state, row.reason, row.objective, row.error) == ("oom", OOM_REASON, None, None)
    assert TrialState.oom.terminal


def test_optuna_records_an_oom_trial_as_fail_with_its_reason(tmp_path):
    from ray import tune

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    s = SweepOptunaSearch(space={"learning_rate": tune.loguniform(1e-4, 1e-2)}, sampler=make_sampler("random", 0),
                          storage=optuna_storage(url), study_name="oom", metric="eval_loss", mode="min")
    s.suggest("a")
    s.on_trial_result("a", {"loss": 2.0, "samples": 8})
    s.on_trial_complete("a", {FINAL_MARKER: "oom", "status": "oom", "reason": OOM_REASON})
    [t] = optuna.load_study(study_name="oom", storage=url).get_trials()
    assert t.state == optuna.trial.TrialState.FAIL and t.system_attrs["sweepd_oom"] == OOM_REASON


def test_trials_that_all_ran_out_of_memory_alike_fail_the_sweep():
    trials = [SimpleNamespace(number=1, state="oom", error=None, reason=OOM_REASON),
              SimpleNamespace(number=2, state="oom", error=None, reason=OOM_REASON)]
    assert uniform_failure(trials, 2) == (2, OOM_REASON)
    trials[1].reason = OOM_REASON.replace("step 3", "step 4")
    assert uniform_failure(trials, 2) is None


def test_junit_counts_an_oom_trial_as_a_failure():
    from sweepd.cli.ci import junit_xml

    xml = junit_xml({"id": "s1", "name": "n", "state": "succeeded", "objective": {"metric": "eval_loss", "mode": "min"}},
                    [{"number": 1, "state": "oom", "reason": OOM_REASON, "seconds": 1.0}])
    assert 'failures="1"' in xml and 'type="oom"' in xml and "out of memory at step 3" in xml


def test_the_api_counts_oom_trials():
    from api.schemas import ProgressOut

    assert ProgressOut(planned=2, oom=1, finished=1).oom == 1
    assert json.loads(ProgressOut(planned=1).model_dump_json())["oom"] == 0
