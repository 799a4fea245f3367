import os
import sys

import pytest

# before anything imports torch (see opentune_trainer/__init__.py: spinning OpenMP threads make
# torch 2.x on 2 cores ~20× slower)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# tests that check the exact sequence of protocol lines get no heartbeat lines in a slow phase on a
# loaded machine; test_heartbeat.py sets its own interval
os.environ.setdefault("OPENTUNE_HEARTBEAT_S", "3600")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the trainer/ folder: import opentune_trainer
sys.path.insert(0, HERE)  # helpers


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """The built-in tiny model with its seeded weights (what init-tiny writes)."""
    from opentune_trainer.tiny import init_tiny

    d = str(tmp_path_factory.mktemp("tiny-llama"))
    init_tiny(d)
    return d


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    """A small chat training split and a packed validation split (tests/helpers.py formats)."""
    from helpers import chat_docs, write_split

    d = tmp_path_factory.mktemp("data")
    write_split(str(d / "train"), chat_docs(16, seed=1))
    write_split(str(d / "valid"), chat_docs(8, seed=2), packing=True, split="valid")
    return str(d / "train"), str(d / "valid")


@pytest.fixture(scope="session")
def fine_tuned_target(tmp_path_factory, tiny_dir):
    """A full fine-tune of the tiny model on chat data, and that data (train, packed valid): a target
    for spec-draft jobs whose distribution is learnt, not the near-uniform noise of random weights,
    and whose answers end with <|eot_id|>. Returns (checkpoint folder, train split, valid split)."""
    from helpers import chat_docs, make_spec, run_cli, write_split

    d = tmp_path_factory.mktemp("target")
    write_split(str(d / "train"), chat_docs(64, seed=1))
    write_split(str(d / "valid"), chat_docs(16, seed=2), packing=True, split="valid")
    spec = make_spec(str(d), tiny_dir, str(d / "train"), None, lora=False, learning_rate=3e-3, n_epochs=3, batch_size=8)
    code, lines, err = run_cli("train", "--spec", spec)
    assert code == 0, err
    return [m for m in lines if m["type"] == "checkpoint"][-1]["dir"], str(d / "train"), str(d / "valid")
