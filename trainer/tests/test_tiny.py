"""The built-in opentune/tiny-llama: committed files are what tiny.py generates; weights are
byte-identical on every run and every machine."""

import hashlib
import json
import os

from helpers import run_cli
from opentune_trainer import tiny

REPO_FILES = os.path.join(os.path.dirname(__file__), "..", "..", "models", "opentune", "tiny-llama")
WEIGHTS_SHA256 = "6d9cf84b3f2c543816e460657b46c067610b2793e061ffa74e159bce7a7b6f2c"  # seed 0


def test_committed_files_are_generated_ones():
    for name, text in tiny.static_files().items():
        with open(os.path.join(REPO_FILES, name), encoding="utf-8") as f:
            assert f.read() == text, (
                f"{name}: run `python3 -m opentune_trainer tiny-files --out ../models/opentune/tiny-llama`"
            )


def test_init_tiny_is_deterministic(tmp_path):
    for d in ("a", "b"):
        code, lines, err = run_cli("init-tiny", "--out", str(tmp_path / d))
        assert code == 0 and lines == [], err
    blobs = [open(tmp_path / d / "model.safetensors", "rb").read() for d in ("a", "b")]
    assert blobs[0] == blobs[1]
    assert hashlib.sha256(blobs[0]).hexdigest() == WEIGHTS_SHA256
    assert sorted(os.listdir(tmp_path / "a")) == sorted(list(tiny.static_files()) + ["model.safetensors"])


def test_tokenizer_is_byte_level_with_llama3_specials():
    tok = json.load(open(os.path.join(REPO_FILES, "tokenizer.json"), encoding="utf-8"))
    vocab = tok["model"]["vocab"]
    assert sorted(vocab.values()) == list(range(256)) and tok["model"]["merges"] == []
    assert vocab["A"] == ord("A") and vocab["Ġ"] == ord(" ") and vocab["Ċ"] == ord("\n")
    added = {t["content"]: t["id"] for t in tok["added_tokens"]}
    assert added == {
        "<|begin_of_text|>": 256,
        "<|end_of_text|>": 257,
        "<|start_header_id|>": 258,
        "<|end_header_id|>": 259,
        "<|eot_id|>": 260,
    }
    cfg = json.load(open(os.path.join(REPO_FILES, "tokenizer_config.json")))
    assert cfg["eos_token"] == "<|eot_id|>" and "add_generation_prompt" in cfg["chat_template"]
    model_cfg = json.load(open(os.path.join(REPO_FILES, "config.json")))
    assert model_cfg["vocab_size"] >= 261 and model_cfg["tie_word_embeddings"]
