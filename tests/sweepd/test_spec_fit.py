"""The fit check (sweepd/spec/fit.py, ``check_fit``): a GPU spec whose largest trial cannot fit in
``resources.gpu_memory_gb`` (else this server's GPU) is refused with the fields to change; one
that fits passes; CPU-only specs are never refused; ``sweepd validate`` prints the estimate per
extreme of the space, and ``--no-check-paths`` does so for the 7B recipe (a model not on this
machine: its shape comes from trainer/known_shapes.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sweepd.cli import app
from sweepd.spec import Capacity, SpecError, load_spec, parse_spec
from sweepd.spec.capacity import Context
from sweepd.spec.checks import Sections, check_fit
from sweepd.spec.fit import FIELDS_TO_CHANGE, fit_report, format_fit
from sweepd.spec.loading import valid_sections
from tests.sweepd.test_spec import CAP, SPACE, patched, root  # noqa: F401 - root is a fixture
from trainer.known_shapes import KNOWN_SHAPES

REPO = Path(__file__).resolve().parents[2]
GPUS = Capacity(cpus=64, gpus=8)


@pytest.fixture
def llama8b(root):
    """A model folder with Llama-3-8B's config.json (no weights: the check reads the shape only)."""
    folder = root / "models" / "llama8b"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(KNOWN_SHAPES["meta-llama/Meta-Llama-3-8B"]))
    return folder


def gpu_spec(**changes) -> dict:
    base = {"model.path": "models/llama8b", "resources.gpus_per_worker": 1, "resources.workers_per_trial": 8,
            "resources.micro_batch_tokens": 16384, "data.max_seq_len": 4096,
            f"{SPACE}.effective_batch_size": {"choice": [64, 128]}}
    return patched({**base, **changes})


def problems(raw: dict, root: Path, capacity: Capacity = GPUS) -> list[tuple[str, str]]:
    return list(check_fit(Sections.of(valid_sections(raw)), Context(capacity=capacity, base_dir=root)))


def test_an_oversize_trial_is_refused_naming_the_fields_to_change(llama8b, root):
    raw = gpu_spec(**{"resources.gpu_memory_gb": 40, "resources.zero_stage": 1})
    [(path, message)] = problems(raw, root)
    assert path == "resources"
    assert "more than the 40.0 GiB of resources.gpu_memory_gb" in message
    assert "with activation checkpointing" in message  # auto: it would not fit without, nor with
    assert "16,384 tokens per micro-batch, ZeRO-1 over 8 workers" in message
    for field in FIELDS_TO_CHANGE:
        assert field in message
    # and the single changes that would fit, each with its estimate
    assert "each of these alone would fit: resources.zero_stage: 2 (~39.5 GiB)" in message
    assert "resources.offload: optimizer+params with resources.zero_stage: 3 (~" in message
    with pytest.raises(SpecError) as err:  # and through the whole validation, as the API and the CLI do it
        parse_spec(raw, capacity=GPUS, base_dir=root)
    assert [p for p, _ in err.value.errors] == ["resources"]


def test_a_trial_nothing_single_can_save_still_names_the_fields(llama8b, root):
    [(_, message)] = problems(gpu_spec(**{"resources.gpu_memory_gb": 24, "resources.zero_stage": 0}), root)
    assert "Change resources.zero_stage, resources.activation_checkpointing, resources.offload" in message


def test_a_fitting_trial_passes(llama8b, root):
    assert problems(gpu_spec(**{"resources.gpu_memory_gb": 80}), root) == []  # ZeRO-2 + auto checkpointing
    spec = parse_spec(gpu_spec(**{"resources.gpu_memory_gb": 80}), capacity=GPUS, base_dir=root)
    report = fit_report(spec, Context(capacity=GPUS))
    assert report.fits and report.worst.chosen.checkpointing  # auto: on, since it would not fit without
    assert report.worst.without.gib > 80 > report.worst.with_ckpt.gib


def test_checkpointing_off_by_hand_is_judged_as_set(llama8b, root):
    [(path, message)] = problems(gpu_spec(**{"resources.gpu_memory_gb": 80,
                                             "resources.activation_checkpointing": False}), root)
    assert "without activation checkpointing" in message
    assert "resources.activation_checkpointing: true (~" in message


def test_the_server_s_gpu_is_the_default_memory(llama8b, root):
    raw = gpu_spec(**{"resources.zero_stage": 0})
    [(_, message)] = problems(raw, root, Capacity(cpus=64, gpus=8, gpu_memory_gb=24.0))
    assert "of this server's GPU" in message
    assert problems(raw, root, GPUS) == []  # no GPU here and no gpu_memory_gb: not judged


def test_cpu_only_specs_are_never_refused(llama8b, root):
    raw = gpu_spec(**{"resources.gpus_per_worker": 0, "resources.gpu_memory_gb": 0.001})
    assert problems(raw, root) == []


def test_a_model_without_a_usable_config_is_skipped_with_a_note(root):
    raw = gpu_spec(**{"model.path": "models/m", "resources.gpu_memory_gb": 1})  # its config.json is {}
    assert problems(raw, root) == []
    report = fit_report(Sections.of(valid_sections(raw)), Context(capacity=GPUS, base_dir=root))
    assert report.rows == [] and report.note.startswith("no memory estimate")


def test_the_largest_micro_batch_of_the_space_is_the_one_judged(llama8b, root):
    raw = gpu_spec(**{"resources.gpu_memory_gb": 80, f"{SPACE}.resources.micro_batch_tokens": {"choice": [4096, 65536]}})
    report = fit_report(Sections.of(valid_sections(raw)), Context(capacity=GPUS, base_dir=root))
    # batch 64 over 8 workers: 8 samples of up to 4096 tokens each, so at most 32,768 tokens
    assert [r.tokens for r in report.rows] == [65536, 32768, 4096]
    assert report.worst.tokens == 65536 and report.worst.label.startswith("batch 128, micro_batch_tokens 65536")
    text = "\n".join(format_fit(report.as_dict()))
    assert "65,536 tokens per micro-batch" in text and "4,096 tokens per micro-batch" in text


def recipe_estimates() -> tuple[float, float]:
    from trainer.fit import estimate

    mistral = KNOWN_SHAPES["mistralai/Mistral-7B-v0.3"]
    return tuple(estimate(mistral, tokens=16384, zero_stage=2, world=8, checkpointing=c).gib for c in (False, True))


def test_validate_no_check_paths_prints_the_7b_recipe_s_estimate_and_verdict():
    out = CliRunner().invoke(app, ["validate", "--no-check-paths", str(REPO / "examples" / "recipe_7b.yaml")])
    assert out.exit_code == 0, out.output
    text = out.output
    without, with_ckpt = recipe_estimates()
    assert without > 80 > with_ckpt
    assert "memory per GPU: model /models/Mistral-7B-v0.3, 7.25B parameters" in text
    assert "known shapes (mistralai/Mistral-7B-v0.3" in text
    assert (f"16,384 tokens per micro-batch: ~{without:.1f} GiB without activation checkpointing, "
            f"~{with_ckpt:.1f} GiB with it (the trial runs with it on)") in text
    assert (f"verdict: fits: the largest trial needs ~{with_ckpt:.1f} GiB per GPU with activation "
            f"checkpointing, of 80.0 GiB (resources.gpu_memory_gb)") in text


def test_the_7b_recipe_would_not_fit_without_checkpointing(tmp_path):
    text = (REPO / "examples" / "recipe_7b.yaml").read_text().replace(
        "gpu_memory_gb: 80", "gpu_memory_gb: 80\n  activation_checkpointing: false")
    spec_file = tmp_path / "recipe_7b_no_ckpt.yaml"
    spec_file.write_text(text)
    out = CliRunner().invoke(app, ["validate", "--no-check-paths", str(spec_file)])
    without, with_ckpt = recipe_estimates()
    assert out.exit_code == 2
    assert f"needs ~{without:.1f} GiB per GPU without activation checkpointing" in out.output
    assert f"resources.activation_checkpointing: true (~{with_ckpt:.1f} GiB)" in out.output


def test_a_cpu_spec_prints_its_estimate_per_worker(root):
    spec = load_spec(json.dumps(patched({})), capacity=CAP, base_dir=root)
    from sweepd.spec.plan import describe_plan, format_plan

    text = format_plan(describe_plan(spec, capacity=CAP))
    assert "memory per worker (CPU trial, fp32): model builtin:tiny" in text
    assert "verdict" not in text  # nothing to refuse on a CPU
