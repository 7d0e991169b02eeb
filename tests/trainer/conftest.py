import os

import pytest

from trainer.config import parse_trial_config
from trainer.synthetic import make_data

os.environ.setdefault("DS_ACCELERATOR", "cpu")


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("synthetic")
    make_data(d, seed=0)
    return d


@pytest.fixture
def trial_cfg(synth_dir):
    """Build a TrialConfig for builtin:tiny on the synthetic data, with overrides per section."""

    def make(**sections):
        raw = {
            "model": {"path": "builtin:tiny"},
            "data": {"train": [{"path": str(synth_dir / "train.jsonl")}], "max_seq_len": 512},
            "hparams": {"effective_batch_size": 16, "learning_rate": 1e-3, "warmup_steps": 0,
                        "lr_scheduler": "constant"},
            "budget": {"max_steps": 1},
            "resources": {"num_workers": 1, "zero_stage": 2},
            "seed": 0,
        }
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(raw.get(key), dict):
                raw[key] = {**raw[key], **value}
            else:
                raw[key] = value
        return parse_trial_config(raw)

    return make
