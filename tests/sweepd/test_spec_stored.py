"""A validated spec travels as data: ``to_stored()`` (with its schema version and the pruner's
resolved options) and ``SweepSpec.from_stored()``, which rebuilds it without judging it again,
on a trial's worker included. The spec is frozen; the pruner's defaults come from its class."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

import sweepd.spec
from sweepd.pruners import DEFAULT_PRUNER_TYPE, make_pruner, option_defaults
from sweepd.spec import SCHEMA_VERSION, SpecError, SweepSpec, parse_spec, parse_spec_text
from tests.sweepd.test_spec import CAP, DELETE, good, patched, root  # noqa: F401 - root is a fixture


def resolved(spec: SweepSpec) -> dict:
    return make_pruner(spec.pruner_config()).config()


def test_the_stored_document_has_its_version_and_the_resolved_pruner(root):
    spec = parse_spec(patched({"pruner": {"type": "asha", "grace": 128}}), capacity=CAP)
    doc = spec.to_stored()
    assert doc["schema_version"] == SCHEMA_VERSION
    assert json.loads(json.dumps(doc)) == doc
    defaults = option_defaults("asha")
    assert doc["pruner"] == {"type": "asha", "grace": 128, "signal": defaults["signal"],
                             "reduction_factor": defaults["reduction_factor"], "time_attr": defaults["time_attr"],
                             "window": defaults["window"], "smooth": defaults["smooth"],
                             "min_completed": defaults["min_completed"], "interval": None, "min_samples": None}
    again = SweepSpec.from_stored(doc)
    assert resolved(again) == resolved(spec)
    assert again.model_dump(exclude={"pruner"}) == spec.model_dump(exclude={"pruner"})
    assert SweepSpec.from_stored(json.dumps(doc)) == again


def test_from_stored_judges_nothing_again(root, monkeypatch):
    """Paths that do not exist here, a cluster this machine is not, a grace past the budget:
    all judged where the spec was validated; a worker only rebuilds it."""
    import sweepd.spec.model as model

    doc = parse_spec(good(), capacity=CAP).to_stored()
    doc["data"]["train"][0]["path"] = "/on/another/node/train.jsonl"
    doc["model"]["path"] = "/on/another/node/model"
    doc["resources"]["gpus_per_worker"] = 8
    doc["pruner"]["grace"] = 10**9

    def judged(*args, **kwargs):
        raise AssertionError("a stored spec was checked again")

    monkeypatch.setattr(model, "run_checks", judged)
    monkeypatch.setattr(model, "resolve_path", judged)
    spec = SweepSpec.from_stored(doc)
    assert spec.data.train[0].path == "/on/another/node/train.jsonl"
    assert spec.model.path == "/on/another/node/model" and spec.resources.gpus_per_worker == 8


def test_a_document_without_a_version_is_version_1(root):
    spec = parse_spec(good(), capacity=CAP)
    legacy = json.loads(spec.model_dump_json())  # what was stored before the key existed
    assert "schema_version" not in legacy
    assert SweepSpec.from_stored(legacy) == spec


def test_an_unknown_version_is_refused(root):
    doc = {**parse_spec(good(), capacity=CAP).to_stored(), "schema_version": 99}
    with pytest.raises(SpecError) as info:
        SweepSpec.from_stored(doc)
    (path, msg), = info.value.errors
    assert path == "schema_version" and "unknown stored spec version 99" in msg


def test_a_stored_document_is_still_a_spec():
    with pytest.raises(ValidationError):
        SweepSpec.from_stored({"schema_version": SCHEMA_VERSION, "search": {"num_trials": "many"}})
    with pytest.raises(SpecError, match="expected a stored spec"):
        SweepSpec.from_stored("[1, 2]")


def test_a_trial_rebuilds_the_spec_without_checking_it(root, monkeypatch):
    """engine/trainable.py: the trial gets the stored document and runs its trial config."""
    import sweepd.spec.model as model
    from sweepd.engine import trainable

    doc = parse_spec(good(), capacity=CAP).to_stored()
    doc["data"]["train"][0]["path"] = "/on/the/driver/only.jsonl"
    ran = []
    monkeypatch.setattr(model, "run_checks", lambda *a: pytest.fail("the trial checked the spec again"))
    monkeypatch.setattr("trainer.loop.run_trial", lambda cfg, reporter, **_checkpoints: ran.append(cfg))
    monkeypatch.setattr("torch.set_num_threads", lambda n: None)  # the test process keeps its threads
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)  # restored afterwards
    trainable.run_trial_in_tune({"learning_rate": 1e-3, "effective_batch_size": 8}, spec_doc=doc,
                                db_url="sqlite://", sweep_id="s")
    (cfg,) = ran
    assert cfg.data.train[0].path == "/on/the/driver/only.jsonl" and cfg.hparams.learning_rate == 1e-3


def test_the_spec_is_frozen(root):
    spec = parse_spec(good(), capacity=CAP)
    with pytest.raises(ValidationError):
        spec.name = "other"
    with pytest.raises(ValidationError):
        spec.search.num_trials = 1
    with pytest.raises(ValidationError):
        spec.pruner.grace = 1


# ---- the pruner: its class's defaults ---------------------------------------------------------


def test_no_pruner_section_is_the_default_pruner_on_the_samples_axis(root):
    spec = parse_spec(patched({"pruner": DELETE}), capacity=CAP)
    assert spec.pruner.type == DEFAULT_PRUNER_TYPE and spec.pruner_config()["type"] == DEFAULT_PRUNER_TYPE
    assert spec.pruner_time_attr == option_defaults("asha")["time_attr"] == "samples"
    assert spec.max_time() == 1024
    steps = parse_spec(patched({"pruner": {"type": "none", "time_attr": "steps"}}), capacity=CAP)
    assert steps.pruner_time_attr == "steps" and steps.max_time() == 128


def test_asha_with_nothing_set_is_todays_asha(root):
    spec = parse_spec(patched({"pruner": {"type": "asha"}, "budget": {"max_samples": 8192}}), capacity=CAP)
    assert spec.pruner_config() == {"type": "asha", "max_t": 8192, "metric": "eval_loss", "mode": "min"}
    assert resolved(spec) == {"signal": option_defaults("asha")["signal"], "grace": 1024, "reduction_factor": 3, "time_attr": "samples",
                              "max_t": 8192, "window": 5, "smooth": "median", "metric": "eval_loss",
                              "mode": "min", "min_completed": 4}
    median = parse_spec(patched({"pruner": {"type": "median"}, "budget": {"max_samples": 8192}}), capacity=CAP)
    config = resolved(median)
    assert (config["interval"], config["min_samples"]) == (1024, 3)


def test_explicit_pruner_values_are_still_checked(root):
    for changes, path in (({"pruner.grace": 0}, "pruner.grace"), ({"pruner.window": 0}, "pruner.window"),
                          ({"pruner.min_completed": 2}, "pruner.min_completed")):
        with pytest.raises(SpecError) as info:
            parse_spec(patched(changes), capacity=CAP)
        assert path in [p for p, _ in info.value.errors]


# ---- the public surface ---------------------------------------------------------------------


def test_text_is_read_by_a_public_function():
    assert parse_spec_text("a: 1e-5\n") == {"a": 1e-5}
    with pytest.raises(SpecError, match="duplicate key 'a'"):
        parse_spec_text("a: 1\na: 2\n", "request body")


def test_parse_spec_takes_text_too(root):
    assert parse_spec(json.dumps(good()), capacity=CAP).name == "t"


def test_dead_code_is_gone():
    for name in ("PRUNER_TYPES", "spec_json_schema", "dumps_spec", "_parse_text", "_semantic_errors"):
        assert not hasattr(sweepd.spec, name)
    assert not hasattr(SweepSpec, "num_trials_to_run")
    assert all(not name.startswith("_") for name in sweepd.spec.__all__)
