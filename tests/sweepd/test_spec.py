"""The sweep spec: every validation rule with its message, all errors at once, conversion to Ray
Tune and to trial configs, grid search, the plan, `validate_command`, and every example."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sweepd.spec.plan import describe_plan, format_plan, validate_command
from sweepd.settings import get_settings
from sweepd.spec import Capacity, SpecError, SweepSpec, load_spec, parse_spec
from trainer.config import TrialConfig, load_trial_config
from trainer.synthetic import make_data

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
CAP = Capacity(cpus=4, gpus=0)

LINE = json.dumps({"messages": [{"role": "user", "content": "What is 2+2?"},
                                {"role": "assistant", "content": "4"}]})


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A data root (the cwd) with data/train.jsonl, data/eval.jsonl and a model folder; a file
    outside it; SWEEPD_DATA_ROOTS pointing at it."""
    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    (root / "data" / "train.jsonl").write_text("\n".join([LINE] * 40) + "\n")
    (root / "data" / "eval.jsonl").write_text("\n".join([LINE] * 10) + "\n")
    (root / "models" / "m").mkdir(parents=True)
    (root / "models" / "m" / "config.json").write_text("{}")
    (root / "models" / "empty").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jsonl").write_text(LINE + "\n")
    (root / "data" / "escape.jsonl").symlink_to(outside / "secret.jsonl")
    (root / "data" / "inside_link.jsonl").symlink_to(root / "data" / "train.jsonl")
    monkeypatch.setenv("SWEEPD_DATA_ROOTS", str(root))
    monkeypatch.chdir(root)
    get_settings.cache_clear()
    yield root
    get_settings.cache_clear()


def good() -> dict:
    return {
        "name": "t",
        "model": {"path": "builtin:tiny"},
        "data": {"train": [{"path": "data/train.jsonl"}], "eval": [{"path": "data/eval.jsonl"}], "max_seq_len": 512},
        "search": {
            "algorithm": "tpe", "num_trials": 6, "max_concurrent": 2, "seed": 0,
            "space": {
                "effective_batch_size": {"choice": [8, 16]},
                "learning_rate": {"loguniform": [1e-4, 1e-2]},
                "warmup_steps": {"choice": [0, 10]},
                "lr_scheduler": {"choice": ["constant", "cosine"]},
            },
        },
        "fixed": {"eval": {"max_items": 10}},
        "budget": {"max_samples": 1024},
        "pruner": {"type": "asha", "signal": "grad_norm", "grace": 128, "reduction_factor": 3,
                   "time_attr": "samples", "window": 5},
        "objective": {"metric": "eval_loss", "mode": "min"},
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 1, "gpus_per_worker": 0, "zero_stage": 2,
                      "max_failures": 1},
        "save_best_model": False,
    }  # fmt: skip


DELETE = object()


def patched(changes: dict) -> dict:
    """good() with dotted-path changes ("data.train.0.path": ...); DELETE removes a key."""
    raw = good()
    for dotted, value in changes.items():
        if dotted.startswith("search.space."):  # the rest is one key, dots and all
            parents, leaf = ["search", "space"], dotted.removeprefix("search.space.")
        else:
            *parents, leaf = dotted.split(".")
        node = raw
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is DELETE:
            del node[leaf]
        elif isinstance(node, list):
            node[int(leaf)] = value
        else:
            node[leaf] = value
    return raw


def errors_of(raw, **kw) -> list[tuple[str, str]]:
    kw.setdefault("capacity", CAP)
    with pytest.raises(SpecError) as info:
        parse_spec(raw, **kw)
    return info.value.errors


SPACE = "search.space"
BAD_SPECS = [
    # (id, changes, expected field path, fragment of the message)
    ("num_trials_zero", {"search.num_trials": 0}, "search.num_trials", "greater than or equal to 1 (got 0)"),
    ("num_trials_too_many", {"search.num_trials": 5001}, "search.num_trials", "less than or equal to 5000"),
    ("max_concurrent_zero", {"search.max_concurrent": 0}, "search.max_concurrent", "greater than or equal to 1"),
    ("unknown_algorithm", {"search.algorithm": "bayes"}, "search.algorithm", "'tpe', 'random' or 'grid' (got 'bayes')"),
    ("lr_zero_in_choice", {f"{SPACE}.learning_rate": {"choice": [1e-3, 0]}},
     f"{SPACE}.learning_rate.choice[1]", "greater than 0 (got 0)"),
    ("lr_fixed_above_one", {f"{SPACE}.learning_rate": 2}, f"{SPACE}.learning_rate", "less than or equal to 1 (got 2)"),
    ("low_not_below_high", {f"{SPACE}.learning_rate": {"loguniform": [1e-2, 1e-4]}},
     f"{SPACE}.learning_rate.loguniform", "low must be less than high (got low=0.01, high=0.0001)"),
    ("loguniform_low_zero", {f"{SPACE}.weight_decay": {"loguniform": [0, 0.1]}},
     f"{SPACE}.weight_decay.loguniform", "loguniform needs low > 0 (got low=0)"),
    ("zero_batch_size", {f"{SPACE}.effective_batch_size": {"choice": [8, 0]}},
     f"{SPACE}.effective_batch_size.choice[1]", "greater than or equal to 1 (got 0)"),
    ("negative_batch_size", {f"{SPACE}.effective_batch_size": {"choice": [-4]}},
     f"{SPACE}.effective_batch_size.choice[0]", "(got -4)"),
    ("int_bounds_not_integers", {f"{SPACE}.warmup_steps": {"int": [0, 2.5]}}, f"{SPACE}.warmup_steps.int[1]",
     "fractional part (got 2.5)"),
    ("choice_of_lists", {f"{SPACE}.optimizer.betas": {"choice": [[0.9, 0.95], [0.9, 0.999]]}},
     f"{SPACE}.optimizer.betas.choice[0]", "a choice must be a number, string or boolean"),
    ("empty_choice", {f"{SPACE}.warmup_steps": {"choice": []}}, f"{SPACE}.warmup_steps.choice", "empty"),
    ("two_domain_kinds", {f"{SPACE}.warmup_steps": {"choice": [0], "int": [0, 5]}},
     f"{SPACE}.warmup_steps", "exactly one of"),
    ("uniform_on_int_field", {f"{SPACE}.warmup_steps": {"uniform": [0, 10]}},
     f"{SPACE}.warmup_steps.uniform", "is an integer: use {int: [low, high]}"),
    ("unknown_scheduler", {f"{SPACE}.lr_scheduler": {"choice": ["constant", "step"]}},
     f"{SPACE}.lr_scheduler.choice[1]", "(got 'step')"),
    ("unknown_space_key", {f"{SPACE}.learnin_rate": {"choice": [1e-3]}},
     f"{SPACE}.learnin_rate", "not a trial-config field"),
    ("unknown_dotted_key", {f"{SPACE}.optimizer.momentum": {"choice": [0.9]}},
     f"{SPACE}.optimizer.momentum", "'momentum' is not in optimizer"),
    ("section_as_key", {f"{SPACE}.optimizer": {"choice": [1]}}, f"{SPACE}.optimizer", "is a section, not a field"),
    ("reserved_key", {f"{SPACE}.model.path": {"choice": ["builtin:tiny"]}}, f"{SPACE}.model.path", "cannot be searched"),
    ("alias_twice", {f"{SPACE}.optimizer.weight_decay": {"choice": [0.0, 0.1]}, f"{SPACE}.weight_decay": 0.1},
     f"{SPACE}.weight_decay", "same field as search.space.optimizer.weight_decay"),
    ("nothing_searched", {"search.space": {"learning_rate": 1e-3}}, "search.space", "nothing is searched"),
    ("grid_needs_choice", {"search.algorithm": "grid"}, f"{SPACE}.learning_rate", "grid search needs {choice: [...]}"),
    ("grace_not_below_budget", {"pruner.grace": 1024}, "pruner.grace", "1,024 samples is not below the trial budget"),
    ("grace_steps", {"pruner.time_attr": "steps", "pruner.grace": 200}, "pruner.grace",
     "200 steps is not below the trial budget (128 steps at most)"),
    ("reduction_factor_one", {"pruner.reduction_factor": 1}, "pruner.reduction_factor", "greater than 1 (got 1)"),
    ("option_of_other_type", {"pruner.type": "median"}, "pruner", "reduction_factor (asha only)"),
    ("unknown_pruner_type", {"pruner.type": "hyperband"}, "pruner.type", "(got 'hyperband')"),
    ("unknown_signal", {"pruner.signal": "gradnorm"}, "pruner.signal", "unknown signal 'gradnorm'; known: grad_norm"),
    ("unknown_time_attr", {"pruner.time_attr": "epochs"}, "pruner.time_attr", "'samples' or 'steps' (got 'epochs')"),
    ("objective_signal_no_eval_during_training", {"pruner.signal": "objective"}, "pruner.signal",
     "set fixed.eval.every_steps"),
    ("unknown_metric", {"objective.metric": "accuracy"}, "objective.metric", "unknown metric 'accuracy'; known: eval_loss"),
    ("bad_mode", {"objective.mode": "minimize"}, "objective.mode", "'min' or 'max' (got 'minimize')"),
    ("eval_metric_without_eval_data", {"data.eval": []}, "objective.metric", "data.eval is empty"),
    ("unknown_top_field", {"searchh": {}}, "searchh", "unknown field 'searchh' (did you mean 'search'?)"),
    ("unknown_nested_field", {"pruner.eta": 3}, "pruner.eta", "unknown field 'eta'"),
    ("unknown_data_field", {"data.train.0.weight": 2}, "data.train[0].weight", "unknown field 'weight'"),
    ("missing_section", {"budget": DELETE}, "budget", "missing (required)"),
    ("budget_two_units", {"budget": {"max_samples": 1024, "max_steps": 10}}, "budget", "give exactly one of"),
    ("bad_name", {"name": "my sweep!"}, "name", "(got 'my sweep!')"),
    ("max_seq_len_tiny", {"data.max_seq_len": 4}, "data.max_seq_len", "greater than or equal to 8 (got 4)"),
    ("path_traversal", {"data.train.0.path": "../../../../../../etc/passwd"}, "data.train[0].path",
     "resolves to /etc/passwd, outside the data roots"),
    ("absolute_outside", {"data.eval.0.path": "/etc/hostname"}, "data.eval[0].path", "outside the data roots"),
    ("symlink_escape", {"data.train.0.path": "data/escape.jsonl"}, "data.train[0].path",
     "'data/escape.jsonl' resolves to"),
    ("missing_data_file", {"data.eval.0.path": "data/nope.jsonl"}, "data.eval[0].path", "does not exist"),
    ("data_path_is_dir", {"data.train.0.path": "data"}, "data.train[0].path", "is not a file"),
    ("missing_model_dir", {"model.path": "models/nope"}, "model.path", "does not exist"),
    ("model_dir_no_config", {"model.path": "models/empty"}, "model.path", "has no config.json"),
    ("model_outside_roots", {"model.path": "/tmp"}, "model.path", "outside the data roots"),
    ("unknown_builtin", {"model.path": "builtin:huge"}, "model", "unknown builtin model 'builtin:huge'"),
    ("too_many_cpus", {"resources.workers_per_trial": 4, "resources.cpus_per_worker": 2}, "resources.cpus_per_worker",
     "a trial needs 8 CPU(s) (workers_per_trial 4 x cpus_per_worker 2), the cluster has 4"),
    ("gpus_on_cpu_cluster", {"resources.gpus_per_worker": 1}, "resources.gpus_per_worker",
     "a trial needs 1 GPU(s) (workers_per_trial 1 x gpus_per_worker 1), the cluster has 0"),
    ("zero_stage_four", {"resources.zero_stage": 4}, "resources.zero_stage", "0, 1, 2 or 3 (got 4)"),
    ("negative_gpus", {"resources.gpus_per_worker": -1}, "resources.gpus_per_worker", "greater than or equal to 0"),
    ("micro_batch_tokens_tiny", {"resources.micro_batch_tokens": 4}, "resources.micro_batch_tokens",
     "'auto' or an integer from 8 to 10,000,000 (got 4)"),
    ("batch_below_workers", {"resources.workers_per_trial": 4, f"{SPACE}.effective_batch_size": {"choice": [2, 8]}},
     f"{SPACE}.effective_batch_size.choice[0]", "batch size 2 is smaller than resources.workers_per_trial (4)"),
    ("fixed_elsewhere", {"fixed.model": {"path": "builtin:tiny"}}, "fixed.model", "set it in model:"),
    ("fixed_bad_value", {"fixed.optimizer": {"weight_decay": -1}}, "fixed.optimizer.weight_decay",
     "greater than or equal to 0 (got -1)"),
    ("fixed_unknown_field", {"fixed.eval": {"max_itemz": 3}}, "fixed.eval.max_itemz", "did you mean 'eval.max_items'"),
    ("fixed_and_searched", {"fixed.hparams": {"learning_rate": 1e-3}}, "fixed.hparams.learning_rate",
     "also in search.space.learning_rate"),
]  # fmt: skip


def test_table_has_enough_cases():
    assert len(BAD_SPECS) >= 20


@pytest.mark.parametrize("changes,path,fragment", [c[1:] for c in BAD_SPECS], ids=[c[0] for c in BAD_SPECS])
def test_bad_spec(root, changes, path, fragment):
    errors = errors_of(patched(changes))
    matching = [m for p, m in errors if p == path]
    assert matching, f"no error at {path}; got {errors}"
    assert any(fragment in m for m in matching), f"{fragment!r} not in {matching}"


def test_good_spec_is_good(root):
    spec = parse_spec(good(), capacity=CAP)
    assert spec.objective.mode == "min"
    # paths come back absolute, symlinks resolved, inside the root
    assert spec.data.train[0].path == str(root / "data" / "train.jsonl")
    spec = parse_spec(patched({"data.train.0.path": "data/inside_link.jsonl"}), capacity=CAP)
    assert spec.data.train[0].path == str(root / "data" / "train.jsonl")  # a link inside the roots is fine


def test_real_model_dir_inside_roots(root):
    spec = parse_spec(patched({"model.path": "models/m"}), capacity=CAP)
    assert spec.model.path == str(root / "models" / "m")


def test_all_errors_at_once(root):
    raw = patched({
        "search.num_trials": 0,                                  # a range (structure)
        "searchh": 1,                                            # an unknown field (structure)
        "objective.metric": "accuracy",                          # an unknown name (structure)
        "data.train.0.path": "../../etc/passwd",                 # a path (across sections)
        f"{SPACE}.learning_rate": {"loguniform": [1e-2, 1e-4]},  # a domain
        "resources.gpus_per_worker": 2,                          # capacity
    })  # fmt: skip
    with pytest.raises(SpecError) as info:
        parse_spec(raw, capacity=CAP)
    paths = [p for p, _ in info.value.errors]
    for expected in ("search.num_trials", "searchh", "objective.metric", "data.train[0].path",
                     f"{SPACE}.learning_rate.loguniform", "resources.gpus_per_worker"):
        assert expected in paths
    text = str(info.value)
    assert len(text.splitlines()) == len(info.value.errors)
    assert all(": " in line for line in text.splitlines())
    assert info.value.format().startswith("spec: 6 problems")


def test_not_a_mapping():
    with pytest.raises(SpecError, match=r"\(top level\): expected a mapping, got list"):
        parse_spec([1, 2])


def test_yaml_syntax_error_has_line_number(root):
    text = "name: t\nsearch:\n  num_trials: 3\n  space: {learning_rate: [1e-3\nbudget: {max_samples: 64}\n"
    with pytest.raises(SpecError) as info:
        load_spec(text, capacity=CAP)
    (path, msg), = info.value.errors
    assert path == "yaml" and "line 5" in msg


def test_yaml_duplicate_key_is_an_error(root):
    text = yaml.safe_dump(good(), sort_keys=False) + "name: again\n"
    with pytest.raises(SpecError, match=r"duplicate key 'name' \(first on line 1\)"):
        load_spec(text, capacity=CAP)


def test_yaml_reads_1e_minus_5_as_a_float(root):
    text = yaml.safe_dump(good(), sort_keys=False).replace("0.0001", "1e-4")
    assert "1e-4" in text
    spec = load_spec(text, capacity=CAP)
    assert spec.domains["learning_rate"][1].low == pytest.approx(1e-4)


def test_json_text_and_file(root, tmp_path):
    assert load_spec(json.dumps(good()), capacity=CAP).name == "t"
    f = tmp_path / "s.json"
    f.write_text(json.dumps(good()))
    assert load_spec(f, capacity=CAP).name == "t"
    assert load_spec(str(f), capacity=CAP).name == "t"
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml", capacity=CAP)
    with pytest.raises(SpecError, match="is not a file here, nor a YAML/JSON mapping"):
        load_spec("specs/missing", capacity=CAP)


def test_check_paths_off_is_structure_only(root):
    raw = patched({"data.train.0.path": "/nowhere/train.jsonl", "model.path": "/models/none"})
    spec = parse_spec(raw, capacity=CAP, check_paths=False)
    assert spec.data.train[0].path == "/nowhere/train.jsonl"
    assert spec.data.eval[0].path == str(root / "data" / "eval.jsonl")  # relative: made absolute


def test_pydantic_entry_point_reports_the_same(root):
    """An API body model embedding SweepSpec gets the errors as a pydantic ValidationError."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        SweepSpec.model_validate(patched({"data.train.0.path": "../../etc/passwd"}),
                                 context={"sweepd": None})
    assert "data.train[0].path" in str(info.value)
    spec = parse_spec(good(), capacity=CAP)
    again = SweepSpec.from_stored(spec.model_dump_json())
    assert again == spec


# ---- conversion -----------------------------------------------------------------------------


def test_to_tune_space(root):
    from ray.tune.search.sample import Categorical, Float, Integer

    raw = patched({f"{SPACE}.optimizer.grad_clip": {"uniform": [0.5, 2.0]},
                   f"{SPACE}.eval.max_new_tokens": {"int": [8, 16]},
                   f"{SPACE}.weight_decay": 0.05})
    space = parse_spec(raw, capacity=CAP).to_tune_space()
    assert set(space) == {"effective_batch_size", "learning_rate", "warmup_steps", "lr_scheduler",
                          "optimizer.grad_clip", "eval.max_new_tokens"}  # plain values are not searched
    assert isinstance(space["effective_batch_size"], Categorical)
    assert space["effective_batch_size"].categories == [8, 16]
    lr = space["learning_rate"]
    assert isinstance(lr, Float) and (lr.lower, lr.upper) == (1e-4, 1e-2)
    assert "LogUniform" in type(lr.get_sampler()).__name__
    assert isinstance(space["optimizer.grad_clip"], Float)
    assert type(space["optimizer.grad_clip"].get_sampler()).__name__.lstrip("_") == "Uniform"
    mnt = space["eval.max_new_tokens"]
    assert isinstance(mnt, Integer) and (mnt.lower, mnt.upper) == (8, 17)  # inclusive 16


def test_trial_config_puts_params_in_place(root):
    raw = patched({f"{SPACE}.weight_decay": {"choice": [0.0, 0.1]}, f"{SPACE}.strategy": {"choice": ["stacked", "phased"]},
                   f"{SPACE}.optimizer.grad_clip": 0.5, "fixed.optimizer": {"eps": 1e-6},
                   "resources.workers_per_trial": 2, "resources.zero_stage": 3})
    spec = parse_spec(raw, capacity=CAP)
    cfg = spec.trial_config({"effective_batch_size": 16, "learning_rate": 3e-3, "warmup_steps": 10,
                             "lr_scheduler": "cosine", "weight_decay": 0.1, "strategy": "phased"},
                            output_dir="/tmp/out")
    assert isinstance(cfg, TrialConfig)
    assert (cfg.hparams.effective_batch_size, cfg.hparams.learning_rate) == (16, 3e-3)
    assert (cfg.hparams.warmup_steps, cfg.hparams.lr_scheduler) == (10, "cosine")
    assert cfg.optimizer.weight_decay == 0.1 and cfg.optimizer.grad_clip == 0.5 and cfg.optimizer.eps == 1e-6
    assert cfg.data.strategy == "phased"
    assert cfg.eval.max_items == 10
    assert cfg.budget.max_samples == 1024
    assert (cfg.resources.num_workers, cfg.resources.zero_stage, cfg.resources.device) == (2, 3, "cpu")
    assert cfg.output_dir == "/tmp/out"
    assert cfg.seed == spec.search.seed
    assert all(Path(f.path).is_absolute() for f in [*cfg.data.train, *cfg.data.eval])
    # dotted names work as well as short ones; numpy scalars (Ray's samples) are fine
    import numpy as np

    cfg = spec.trial_config({"hparams.learning_rate": np.float64(1e-3), "effective_batch_size": np.int64(8)})
    assert cfg.hparams.learning_rate == 1e-3 and cfg.hparams.effective_batch_size == 8
    with pytest.raises(SpecError, match="params.momentum: not a key of this sweep's space"):
        spec.trial_config({"momentum": 0.9})


def test_searched_epochs_replaces_the_budget(root):
    spec = parse_spec(patched({f"{SPACE}.epochs": {"choice": [1, 2]}, "pruner.grace": 16}), capacity=CAP)
    cfg = spec.trial_config({"epochs": 2})
    assert cfg.budget.epochs == 2 and cfg.budget.max_samples is None
    assert spec.max_time() == 80  # 2 epochs of 40 lines


def test_grid_space(root):
    raw = patched({"search.algorithm": "grid", "search.num_trials": 100,
                   f"{SPACE}.learning_rate": {"choice": [1e-3, 1e-2]}})
    spec = parse_spec(raw, capacity=CAP)
    assert spec.grid_space() == {"effective_batch_size": [8, 16], "learning_rate": [1e-3, 1e-2],
                                 "warmup_steps": [0, 10], "lr_scheduler": ["constant", "cosine"]}
    assert spec.grid_size() == 16 and spec.planned_trials == 16  # num_trials above the grid: the full grid
    assert spec.grid_points()[0] == {"effective_batch_size": 8, "learning_rate": 1e-3, "warmup_steps": 0,
                                     "lr_scheduler": "constant"}
    raw["search"]["num_trials"] = 5
    assert parse_spec(raw, capacity=CAP).planned_trials == 5
    tpe = parse_spec(good(), capacity=CAP)
    with pytest.raises(SpecError, match=r"search.space.learning_rate: grid search needs"):
        tpe.grid_space()


def test_pruner_config_feeds_make_pruner(root):
    from sweepd.pruners import make_pruner

    spec = parse_spec(good(), capacity=CAP)
    cfg = spec.pruner_config()
    assert cfg["max_t"] == 1024 and cfg["metric"] == "eval_loss" and cfg["mode"] == "min"
    assert make_pruner(cfg).rung_times() == [128, 384]
    median = parse_spec(patched({"pruner.type": "median", "pruner.reduction_factor": DELETE}), capacity=CAP)
    assert make_pruner(median.pruner_config()).rung_times() == [128 * k for k in range(1, 8)]
    assert parse_spec(patched({"pruner": {"type": "none"}}), capacity=CAP).pruner_config() == {"type": "none"}


# ---- the plan -------------------------------------------------------------------------------


def test_plan_numbers(root):
    spec = parse_spec(patched({"budget": {"max_samples": 1000}}), capacity=CAP)
    plan = describe_plan(spec)
    rows = {r["effective_batch_size"]: r for r in plan["batches"]}
    assert set(rows) == {8, 16}
    assert rows[8]["steps_per_trial"] == 1000 // 8 and rows[16]["steps_per_trial"] == 1000 // 16
    assert rows[16]["samples_per_trial"] == 62 * 16
    assert plan["pruner"]["rungs"] == [128, 384]
    assert rows[16]["rung_steps"] == [8, 24]
    assert plan["data"]["train_samples"] == 40 and plan["data"]["measured_lines"] == 40
    assert plan["data"]["mean_sample_tokens"] > 5
    assert rows[8]["micro_batches"] == 1 and rows[8]["micro_batch_tokens"] == 4096
    assert plan["compute"]["max_samples"] == 6 * 125 * 8
    assert plan["compute"]["max_tokens"] == int(6 * 1000 * plan["data"]["mean_sample_tokens"])
    text = format_plan(plan)
    for fragment in ("learning_rate", "log-uniform", "batch     8: 1 x 8 x ~1", "125 steps", "rungs (samples): 128, 384",
                     "maximum compute"):
        assert fragment in text


def test_plan_micro_batches(root):
    spec = parse_spec(patched({"resources.workers_per_trial": 2, "resources.micro_batch_size": 3,
                               f"{SPACE}.effective_batch_size": {"choice": [16, 32]}}), capacity=CAP)
    rows = {r["effective_batch_size"]: r for r in describe_plan(spec)["batches"]}
    assert (rows[16]["workers"], rows[16]["samples_per_worker"], rows[16]["micro_batches"]) == (2, 8, 3)
    assert rows[32]["micro_batches"] == 6 and rows[32]["micro_batches_exact"]
    spec = parse_spec(patched({"resources.micro_batch_tokens": 64}), capacity=CAP)
    plan = describe_plan(spec)
    mean = plan["data"]["mean_sample_tokens"]
    rows = {r["effective_batch_size"]: r for r in plan["batches"]}
    assert rows[16]["micro_batches"] == -(-16 * mean // 64)


def test_validate_command(root, tmp_path):
    f = tmp_path / "ok.yaml"
    f.write_text(yaml.safe_dump(good(), sort_keys=False))
    code, text = validate_command(f, capacity=CAP)
    assert code == 0 and "rungs (samples): 128, 384" in text
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(patched({"search.num_trials": 0, "pruner.signal": "x"}), sort_keys=False))
    code, text = validate_command(bad, capacity=CAP)
    assert code == 2
    assert text.splitlines()[0] == f"{bad}: 2 problems"
    assert "search.num_trials" in text and "pruner.signal" in text
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [\n")
    code, text = validate_command(broken, capacity=CAP)
    assert code == 2 and "line 2" in text
    assert validate_command(tmp_path / "missing.yaml")[0] == 2


# ---- examples -------------------------------------------------------------------------------

# Specs written for another machine: validated for structure only (check_paths=False: their
# model and data live on the GPU cluster), against the cluster they are written for.
ELSEWHERE = {"recipe_7b.yaml": Capacity(cpus=64, gpus=8)}


@pytest.fixture
def builtin_data_root(tmp_path, monkeypatch):
    """A cwd with data/builtin as `python -m trainer make-data data/builtin` writes it."""
    make_data(tmp_path / "data" / "builtin", seed=0)
    monkeypatch.setenv("SWEEPD_DATA_ROOTS", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def _example_files() -> list[Path]:
    return sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".yaml", ".yml", ".json"))


@pytest.mark.parametrize("path", _example_files(), ids=lambda p: p.name)
def test_every_example_validates(builtin_data_root, path):
    raw = yaml.safe_load(path.read_text())
    if "search" not in raw:  # a single trial config (examples/trial_demo.yaml): the trainer's schema
        load_trial_config(path)
        return
    if path.name in ELSEWHERE:
        spec = load_spec(path, check_paths=False, capacity=ELSEWHERE[path.name])
    else:
        spec = load_spec(path, capacity=Capacity(cpus=2, gpus=0))  # the laptop the demo promises
        assert spec.model.path in ("builtin:tiny", "builtin:replay")  # nothing to download
    code, text = validate_command(path, check_paths=path.name not in ELSEWHERE,
                                  capacity=ELSEWHERE.get(path.name, Capacity(cpus=2, gpus=0)))
    assert code == 0, text
    params = {k: d.candidates()[0] for k, (_, d) in spec.domains.items() if d.searched}
    assert isinstance(spec.trial_config(params), TrialConfig)


def test_demo_fits_a_laptop(builtin_data_root):
    spec = load_spec(EXAMPLES / "demo.yaml", capacity=Capacity(cpus=2, gpus=0))
    plan = describe_plan(spec)
    assert spec.search.max_concurrent * spec.resources.cpus_per_worker <= 2
    assert plan["compute"]["max_samples"] <= 8 * 4096
    assert len(plan["pruner"]["rungs"]) >= 2  # something to stop trials at


def test_recipe_7b_is_the_papers(builtin_data_root):
    spec = load_spec(EXAMPLES / "recipe_7b.yaml", check_paths=False, capacity=ELSEWHERE["recipe_7b.yaml"])
    assert set(spec.batch_sizes()) <= set(range(3840, 7681))
    _, lr = spec.domains["learning_rate"]
    assert (lr.low, lr.high) == (1e-6, 2e-5)
    assert spec.resources.zero_stage == 2 and spec.resources.workers_per_trial * spec.resources.gpus_per_worker == 8
    # on this machine (no such paths, no 8 GPUs) the full check refuses it, naming every field
    with pytest.raises(SpecError) as info:
        load_spec(EXAMPLES / "recipe_7b.yaml", capacity=Capacity(cpus=2, gpus=0))
    paths = {p for p, _ in info.value.errors}
    assert {"model.path", "data.train[0].path", "resources.gpus_per_worker"} <= paths
