"""regenerate_responses: a spec-draft job's trained spans rewritten by the target's greedy output
(regenerate.py), checked against the inference engine run independently, and a job through the CLI."""

import os
from types import SimpleNamespace

import pytest
import torch

from helpers import chat_doc, chat_docs, draft_spec, run_cli, untrained_acceptance_length, write_split
from opentune_trainer import data, regenerate, tiny
from opentune_trainer.checkpoint import load_model, read_config, save_adapter
from opentune_trainer.inference.engine import Engine, Request
from opentune_trainer.inference.offline import Collector, run
from opentune_trainer.lora import apply_lora

STOPS = frozenset({tiny.EOT, tiny.EOT_TEXT})  # the tiny model's eos ids (config.json, generation_config.json)


def two_turns() -> tuple[list[int], list[int]]:
    """A chat with two assistant turns: two trained spans, the second after the first's text."""
    t1, y1 = chat_doc("Say stone.", "stone stone!")
    t2, y2 = chat_doc("Say river.", "river river! and a tail the target never says")
    return t1 + t2[1:], y1 + y2[1:]  # one BOS; turn 1's <|eot_id|> predicts the next header: not trained


def documents(split: data.Split) -> list[tuple[list[int], list[int]]]:
    out, at = [], 0
    for n in (n for row in split.docs for n in row):
        out.append((split.tokens[at : at + n].tolist(), split.targets[at : at + n].tolist()))
        at += n
    return out


def greedy_reference(model_dir: str, adapter: str | None, tokens: list[int], targets: list[int]):
    """The document as regeneration must leave it, computed here one prompt at a time: each trained
    run [a, b) in turn becomes the engine's greedy continuation of tokens[:a+1], cut after a stop id."""
    eng = Engine(model_dir, torch.device("cpu"), torch.float32, max_batch=1, emit=Collector())
    k = 0
    while True:
        runs, start = [], None
        for i, y in enumerate(targets + [-100]):
            if y != -100 and start is None:
                start = i
            elif y == -100 and start is not None:
                runs.append((start, i))
                start = None
        if k >= len(runs):
            return tokens, targets
        a, b = runs[k]
        req = Request(id="r", weights=model_dir, adapter_path=adapter, prompt=tokens[: a + 1], max_tokens=b - a)
        new = run(eng, [req])["r"]["tokens"]
        for n, t in enumerate(new):
            if t in STOPS:
                new = new[: n + 1]
                break
        tokens = tokens[: a + 1] + new + tokens[b + 1 :]
        targets = targets[:a] + new + targets[b:]
        k += 1


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_dir):
    """A LoRA checkpoint's folder over the tiny model, random but not zero: generation must apply it."""
    out = str(tmp_path_factory.mktemp("regen-adapter") / "adapter")
    model = load_model(tiny_dir)
    apply_lora(model, 8, 16, 0.0)
    g = torch.Generator().manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data = torch.randn(p.shape, generator=g) * 0.5
    save_adapter(out, model, 8, 16, 0.0, "opentune/tiny-llama")
    return out


def regenerate_one(tmp, model_dir, adapter, docs, seq_len=160):
    src = os.path.join(str(tmp), "src")
    write_split(src, docs, seq_len=seq_len, packing=True)
    _, cfg = read_config(model_dir)
    split = data.Split(src, cfg.vocab_size, cfg.max_position_embeddings)
    spec = SimpleNamespace(output_dir=os.path.join(str(tmp), "out"), model_dir=model_dir, init_adapter=adapter)
    cpu = torch.device("cpu")
    out = regenerate.regenerate_splits(spec, {"train": (src, split)}, cfg, cpu, torch.float32, lambda: False)
    return split, out["train"]


@pytest.mark.parametrize("which", ["random", "lora", "fine-tuned"])
def test_each_trained_span_becomes_the_targets_greedy_output(tmp_path, tiny_dir, fine_tuned_target, adapter, which):
    fine_tuned = fine_tuned_target[0]
    model, lora = {"random": (tiny_dir, None), "lora": (tiny_dir, adapter), "fine-tuned": (fine_tuned, None)}[which]
    docs = chat_docs(5, seed=3) + [two_turns(), chat_doc("Say lemon.", "lemon lemon! lemon lemon lemon lemon")]
    before, after = regenerate_one(tmp_path, model, lora, docs)
    assert [len(r) for r in after.docs] == [len(r) for r in before.docs], "the same rows, the same documents"
    assert max(after.row_len) <= after.seq_len
    assert all(a <= b for a, b in zip(after.row_len, before.row_len, strict=True))
    for (t0, y0), (t, y) in zip(documents(before), documents(after), strict=True):
        assert (t, y) == greedy_reference(model, lora, t0, y0)
        assert len(t) <= len(t0) and y[-1] == -100
        assert all(y[i] in (-100, t[i + 1]) for i in range(len(t) - 1)), "targets stay pre-shifted"
        assert len(regenerate.trained_spans(y)) == len(regenerate.trained_spans(y0))
    changed = sum(a != b for a, b in zip(documents(before), documents(after), strict=True))
    assert changed >= len(docs) - 1, "the target's text, not the file's"
    if which == "fine-tuned":  # it ends its answer itself, before the long original's end, and that stop is trained
        t, y = documents(after)[-1]
        assert t[-1] == tiny.EOT and y[-2] == tiny.EOT and len(t) < len(documents(before)[-1][0])


def test_a_job_trains_on_the_regenerated_responses_and_resumes_on_them(tmp_path, fine_tuned_target):
    model, train, valid = fine_tuned_target

    def job(name, valid, **hp):
        d = tmp_path / name
        d.mkdir()
        draft_spec(d, model, train, valid, batch_size=8, learning_rate=1e-2, n_epochs=1, **hp)
        code, lines, err = run_cli("train", "--spec", str(d / "spec.json"))
        assert code == 0, err
        return d, lines

    d, lines = job("regen", valid, regenerate_responses=True)
    said = [m["message"] for m in lines if m["type"] == "log" and m["message"].startswith("regenerated")]
    assert len(said) == 2 and "of the train split" in said[0] and "of the valid split" in said[1]
    assert lines[-1] == {"type": "finished", "step": 8, "status": "succeeded"}
    assert sorted(os.listdir(d / "out" / "regenerated")) == ["train", "valid"]
    # run again on the same output_dir: the regenerated data is reused and the saved state is its own
    code, again, err = run_cli("train", "--spec", str(d / "spec.json"))
    assert code == 0, err
    messages = [m["message"] for m in again if m["type"] == "log"]
    assert sum("reusing them" in m for m in messages) == 2 and not any("different job" in m for m in messages)
    assert "resumed from step 8" in messages
    # measured, not asserted: the same drafter trained on the file's responses, scored on the same
    # (regenerated) validation data: the target's own text, what a served drafter sees
    _, plain = job("plain", str(d / "out" / "regenerated" / "valid"))
    tau = {
        k: [m for m in x if m["type"] == "checkpoint"][-1]["metrics"]["valid_acceptance_length"]
        for k, x in (("regenerated", lines), ("original", plain))
    }
    untrained = [round(untrained_acceptance_length(x), 3) for x in (lines, plain)]
    print(f"valid_acceptance_length: {tau} (untrained: {untrained})")


def test_a_sigterm_while_regenerating_stops_the_job_before_any_step(tmp_path, tiny_dir):
    from opentune_trainer.draft_train import DraftTrainer
    from opentune_trainer.spec import load_spec

    write_split(str(tmp_path / "train"), chat_docs(4))
    spec = draft_spec(tmp_path, tiny_dir, str(tmp_path / "train"), regenerate_responses=True)
    trainer = DraftTrainer(load_spec(spec))
    trainer.request_stop()  # what the SIGTERM handler does; seen at the engine's first step
    trainer.setup()
    assert trainer.train() == 3, "stopped: the runner resumes the job later"
    assert not os.path.exists(tmp_path / "out" / "regenerated" / "train"), "a split half regenerated is not kept"
