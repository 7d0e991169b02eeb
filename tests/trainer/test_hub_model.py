"""model.path as a Hugging Face Hub name (``Org/Name``), resolved offline from a local Hugging
Face cache built here in the Hub's layout (models--Org--Name/snapshots/<rev>/ + refs/main): the
trainer loads it, the spec resolves it (the data-roots rule on the resolved folder), and a name not
in the cache is an error that says how to put it there. Nothing touches the network."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from sweepd.spec import SpecError, load_spec
from trainer.hub import hf_hub_cache, is_hub_name
from trainer.models import ModelLoadError, load_model, resolve_model_path

REPO = Path(__file__).resolve().parents[2]
REV = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hf_home(tmp_path, monkeypatch) -> Path:
    """HF_HOME with builtin:tiny cached as the Hub model ``acme/tiny-chat``; no network."""
    home = tmp_path / "hf"
    repo = home / "hub" / "models--acme--tiny-chat"
    snapshot = repo / "snapshots" / REV
    loaded = load_model("builtin:tiny")
    loaded.model.save_pretrained(snapshot)
    loaded.tokenizer.save_pretrained(snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REV)
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))

    def no_network(*args, **kwargs):
        raise AssertionError("the Hugging Face cache lookup tried the network")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    return home


@pytest.mark.parametrize("path, hub", [
    ("Qwen/Qwen2.5-1.5B", True), ("acme/tiny-chat", True), ("meta-llama/Llama-3.2-1B-Instruct", True),
    ("builtin:tiny", False), ("/models/qwen", False), ("./qwen/x", False), ("a/b/c", False), ("../x", False),
    ("qwen", False),
])
def test_what_counts_as_a_hub_name(path, hub):
    assert is_hub_name(path) is hub


def test_the_cache_location_follows_the_environment(monkeypatch, tmp_path):
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hf_hub_cache() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hf_hub_cache() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert hf_hub_cache() == tmp_path / "cache"


def test_a_cached_hub_name_resolves_to_its_snapshot_and_loads(hf_home):
    snapshot = hf_home / "hub" / "models--acme--tiny-chat" / "snapshots" / REV
    assert Path(resolve_model_path("acme/tiny-chat")) == snapshot
    loaded = load_model("acme/tiny-chat")
    assert loaded.model.config.hidden_size == 64 and loaded.tokenizer.chat_template


def test_a_hub_name_not_in_the_cache_says_how_to_put_it_there(hf_home):
    with pytest.raises(ModelLoadError) as err:
        load_model("acme/not-cached")
    text = str(err.value)
    assert text.startswith("model.path: 'acme/not-cached' does not exist as a folder and is not a model in the "
                           f"local Hugging Face cache ({hf_home / 'hub'}")
    assert "never downloads" in text and "`huggingface-cli download acme/not-cached`" in text and "HF_HOME" in text


def _spec(tmp_path: Path, model_path: str) -> Path:
    spec = yaml.safe_load((REPO / "examples" / "demo.yaml").read_text())
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    for name in ("train.jsonl", "eval.jsonl"):
        (data / name).write_text('{"messages": [{"role": "user", "content": "hi"}, '
                                 '{"role": "assistant", "content": "hello"}]}\n')
    spec["data"]["train"] = [{"path": str(data / "train.jsonl")}]
    spec["data"]["eval"] = [{"path": str(data / "eval.jsonl")}]
    spec["model"] = {**spec.get("model", {}), "path": model_path}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_the_spec_resolves_a_hub_name_inside_the_data_roots(hf_home, tmp_path):
    spec = load_spec(_spec(tmp_path, "acme/tiny-chat"), data_roots=[tmp_path], base_dir=tmp_path)
    assert Path(spec.model.path) == (hf_home / "hub" / "models--acme--tiny-chat" / "snapshots" / REV).resolve()


def test_the_data_roots_rule_applies_to_the_resolved_folder(hf_home, tmp_path):
    with pytest.raises(SpecError) as err:
        load_spec(_spec(tmp_path, "acme/tiny-chat"), data_roots=[tmp_path / "data"], base_dir=tmp_path)
    assert "model.path" in str(err.value) and "outside the data roots" in str(err.value)
    assert f"snapshots/{REV}" in str(err.value)  # says where the name resolved to


def test_the_spec_rejects_a_hub_name_not_in_the_cache(hf_home, tmp_path):
    with pytest.raises(SpecError) as err:
        load_spec(_spec(tmp_path, "acme/not-cached"), data_roots=[tmp_path], base_dir=tmp_path)
    text = str(err.value)
    assert "model.path" in text and "huggingface-cli download acme/not-cached" in text
