"""The spec-draft job: an EAGLE-3 drafter (drafter.py) trained against a frozen target.

    cd trainer && python3 -m opentune_trainer train --spec /abs/job-spec.json   # "method": "spec-draft"

The supervised recipe's loop, state, resume, SIGTERM and checkpoint schedule (train.Trainer), with
another model and loss: each micro-batch runs the target once without gradients (its features at
three layers and its distribution at the trained positions), then the drafter's training-time test
over `num_decoding_heads` steps. A step's loss is Σ_k 0.8^k Σ_t loss(k, t) / n, n the step's
step-0 scored positions (known from the data before the step, so the micro-batch split never changes
it). Checkpoints are drafter folders (config.json + model.safetensors) that vLLM and SGLang load.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import torch

from . import checkpoint, data, distributed, drafter, regenerate
from .batching import GIB, free_memory
from .lora import apply_lora, merge_lora
from .numerics import diverged
from .protocol import JobError, emit, log, phase
from .train import Stop, Trainer

# A micro-batch's bytes per token, beyond the frozen target's inference activations: per TTT step
# the drafter's activations (~40 hidden-sized float32 vectors) and its logits with their softmax,
# log-softmax and gradient (4 × draft vocabulary float32), plus the target's log-probabilities on
# the draft vocabulary. The attention mask adds steps × N² bytes, which is why the budget is capped.
MAX_MICRO_TOKENS = 16384


@dataclass
class DraftSums:
    """Sums over some rows, per TTT step k: what the loss and the metrics are made of."""

    steps: int
    loss: float = 0.0  # Σ_k 0.8^k Σ_t loss(k, t)
    scored0: int = 0  # step-0 scored positions (the loss's denominator)
    correct: list[float] = field(default_factory=list)
    alpha: list[float] = field(default_factory=list)
    covered: list[int] = field(default_factory=list)
    scored: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("correct", "alpha", "covered", "scored"):
            if not getattr(self, name):
                setattr(self, name, [0] * self.steps)

    def add(self, parts: list[drafter.StepLoss], loss: float) -> None:
        self.loss += loss
        for k, p in enumerate(parts):
            self.correct[k] += float(p.correct)
            self.alpha[k] += float(p.alpha)
            self.covered[k] += p.covered
            self.scored[k] += p.scored

    def ratio(self, num: list[float], k: int) -> float | None:
        return num[k] / self.covered[k] if self.covered[k] else None

    def metrics(self, prefix: str) -> dict[str, float | None]:
        """Per step k = 1..K (the k-th draft token): acceptance α and top-1 agreement with the
        target over the positions whose target token is in the draft vocabulary; the coverage of
        that vocabulary; the simulated acceptance length (drafter.acceptance_length)."""
        out: dict[str, float | None] = {}
        for k in range(self.steps):
            out[f"{prefix}_acceptance_rate_{k + 1}"] = self.ratio(self.alpha, k)
            out[f"{prefix}_top1_accuracy_{k + 1}"] = self.ratio(self.correct, k)
        cover = [c / s if s else 0.0 for c, s in zip(self.covered, self.scored, strict=True)]
        out[f"{prefix}_draft_vocab_coverage"] = cover[0] if self.scored[0] else None
        acc = [self.ratio(self.correct, k) or 0.0 for k in range(self.steps)]
        out[f"{prefix}_acceptance_length"] = drafter.acceptance_length(acc, cover) if self.scored[0] else None
        return out


def scored_per_row(split: data.Split) -> list[int]:
    """Step-0 scored positions of each row: loss tokens except a document's first position (its
    prediction is the target's at a position the drafter, one token behind, never sees)."""
    starts = []
    for r, docs in enumerate(split.docs):
        at = int(split.start[r])
        for n in docs:
            starts.append(at)
            at += n
    first_trained = (split.targets[torch.tensor(starts, dtype=torch.long)] != data.IGNORE).long()
    out, i = [], 0
    for r, docs in enumerate(split.docs):
        out.append(split.row_loss[r] - int(first_trained[i : i + len(docs)].sum()))
        i += len(docs)
    return out


class DraftTrainer(Trainer):
    # ---------------------------------------------------------------- setup
    @phase("loading")
    def setup(self) -> None:
        spec, hp = self.spec, self.hp
        assert spec.draft is not None
        self.draft = spec.draft
        if self.world.size > 1:
            raise JobError("invalid_hyperparameters", "a spec-draft job trains on one GPU", "gpus")
        want = spec.device
        if want == "cuda" and not torch.cuda.is_available():
            raise JobError("invalid_hyperparameters", "device cuda requested but CUDA is not available", "device")
        self.device = torch.device("cuda" if want in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
        cuda = self.device.type == "cuda"
        self.amp = self._compute_dtype(spec.precision)
        store = self.amp or torch.float32  # the target is frozen: kept in the compute dtype
        self.pad_multiple = 64 if cuda else 1
        torch.manual_seed(spec.seed)
        try:
            raw_cfg, cfg = checkpoint.read_config(spec.model_dir)
            files = checkpoint.weight_files(spec.model_dir)
            too_large = distributed.check_fits(checkpoint.param_count(files), True, store, self.device, self.world)
            if too_large:
                raise JobError("model_too_large", too_large)
        except checkpoint.ModelError as e:
            raise JobError("invalid_model", str(e)) from None
        if cfg.num_hidden_layers < 3:
            raise JobError(
                "invalid_model", "an EAGLE-3 drafter reads layers 2, L/2 and L-3: the target needs ≥ 3 layers"
            )
        self.target_cfg = raw_cfg
        self.train_split = self._load_split(spec.train_data, cfg, "invalid_training_file")
        self.valid_split = (
            self._load_split(spec.valid_data, cfg, "invalid_validation_file") if spec.valid_data else None
        )
        self.interrupted = False
        if self.draft.regenerate_responses:  # before the target loads: one copy of its weights at a time
            named = {"train": (spec.train_data, self.train_split)}
            if self.valid_split is not None and spec.valid_data is not None:
                named["valid"] = (spec.valid_data, self.valid_split)
            try:
                out = regenerate.regenerate_splits(spec, named, cfg, self.device, store, lambda: self.stop)
            except regenerate.Interrupted:
                self.interrupted = True  # SIGTERM: train() stops before the first step
                return
            self.train_split, self.valid_split = out["train"], out.get("valid")
        self.scored = scored_per_row(self.train_split)
        self.valid_scored = scored_per_row(self.valid_split) if self.valid_split else None
        if sum(self.scored) == 0:
            raise JobError("invalid_training_file", "the training data has no trained token after another one to draft")
        self.target = self._load_target(store)
        self.layers = drafter.aux_layers(cfg.num_hidden_layers)
        if len(set(self.layers)) < 3:
            log(
                f"the target has {cfg.num_hidden_layers} layers, so the drafter's feature layers repeat "
                f"({', '.join(map(str, self.layers))}): vLLM and SGLang capture each layer once and cannot serve it; "
                "opentune's engine can (targets of 7 layers or more have three distinct ones)",
                "warn",
            )
        used = drafter.draft_vocabulary(self.train_split.targets, cfg.vocab_size, self.draft.draft_vocab_size)
        if len(used) < self.draft.draft_vocab_size:
            log(f"draft_vocab_size {self.draft.draft_vocab_size} is capped at the target's vocabulary ({len(used)})")
        # float32 master weights trained under autocast, as a full fine-tune
        self.model = drafter.Eagle3Drafter(cfg, used).to(self.device)
        drafter.init_drafter(self.model, self.target.model.embed_tokens.weight.float().cpu(), spec.seed)
        self.model.checkpoint_every = 1  # nothing to checkpoint: an OOM at one row is out_of_memory
        self.net = self.model
        self.grad_scale = 1.0
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.weight_max = min(torch.finfo(p.dtype).max for p in self.params)
        self.model.train()
        self.compiling = False
        self.graphs = 0
        self.opt = self._optimizer()
        self.steps_per_epoch = math.ceil(len(self.train_split) / hp.batch_size)
        self.total_steps = hp.n_epochs * self.steps_per_epoch
        self.warmup = math.ceil(round(hp.warmup_ratio * self.total_steps, 9))
        self.micro = self._plan_memory()
        self.step = 0
        self.last: dict[str, float | None] = {}
        self.fingerprint = self._fingerprint()
        if spec.resume:
            self._resume()

    def train(self) -> int:
        if self.interrupted:  # stopped while regenerating the responses: no step, no state to save
            emit("finished", step=0, status="stopped")
            return 3
        return super().train()

    def _load_target(self, store: torch.dtype):
        """The frozen target: the model folder's weights, with a LoRA checkpoint's adapter merged in."""
        spec = self.spec
        try:
            target = checkpoint.load_model(spec.model_dir, self.device, store)
            if spec.init_adapter:
                with open(os.path.join(spec.init_adapter, "adapter_config.json")) as f:
                    a = json.load(f)
                apply_lora(target, int(a["r"]), float(a["lora_alpha"]), 0.0)
                checkpoint.load_adapter(target, spec.init_adapter, a["r"], a["lora_alpha"])
                merge_lora(target)
        except (checkpoint.ModelError, OSError, KeyError, ValueError) as e:
            raise JobError("invalid_model", f"the target model cannot be loaded: {e}") from None
        return target.eval().requires_grad_(False)

    def _plan_memory(self) -> int:
        K, Vd, H = self.draft.num_decoding_heads, len(self.model.d2t), self.model.config.hidden_size
        longest = self.train_split.seq_len
        self.micro_rows = self.spec.micro_batch_size
        if self.micro_rows:
            budget, how = self.micro_rows * longest, f"micro_batch_size {self.micro_rows} rows"
        else:
            free = free_memory(self.device)
            per_token = K * (4 * Vd * 4 + 40 * H * 4) + Vd * 4 + 8 * H * self.target.config.num_hidden_layers
            by_memory = int(0.5 * free / per_token)
            budget = max(longest, min(by_memory, MAX_MICRO_TOKENS, self.hp.batch_size * longest))
            how = f"estimated from {free / GIB:.1f} GiB free"
        compute = str(self.amp or torch.float32).replace("torch.", "")
        self.how = (
            f"spec-draft: EAGLE-3 drafter ({len(self.model.d2t)}-token draft vocabulary, features of target layers "
            f"{', '.join(map(str, self.layers))}), {K} training-time-test steps, loss {self.draft.loss}; "
            f"precision {compute}; micro-batches of at most {budget} tokens ({how})"
        )
        return budget

    def _fingerprint(self) -> str:
        import hashlib

        key = {"base": super()._fingerprint(), "method": "spec-draft", "draft": vars(self.draft)}
        key["adapter"] = os.path.abspath(self.spec.init_adapter) if self.spec.init_adapter else None
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()

    # ---------------------------------------------------------------- steps
    def draft_parts(self, b: data.Batch) -> tuple[torch.Tensor, list[drafter.StepLoss]]:
        """The weighted loss Σ_k 0.8^k Σ_t loss(k, t) of one micro-batch and its per-step sums."""
        tokens, targets, pos = b.tokens[0], b.targets[0], b.pos[0]
        lengths = b.doc or [tokens.shape[0]]
        doc = torch.repeat_interleave(
            torch.arange(len(lengths), device=tokens.device), torch.tensor(lengths, device=tokens.device)
        )
        with torch.no_grad(), self.autocast():
            h, aux = self.target.features(b.tokens, b.pos, b.doc, capture=self.layers)
            where = torch.full_like(tokens, -1)
            where[b.loss_idx] = torch.arange(len(b.loss_idx), device=tokens.device)
            logp, top = drafter.target_distribution(h[0, b.loss_idx], self.target.lm_head.weight, self.model.used)
        with self.autocast():
            hs = drafter.ttt_forward(
                self.model, torch.cat(aux, -1)[0].float(), tokens, pos, doc, self.draft.num_decoding_heads
            )
        total = torch.zeros((), device=self.device)
        parts = []
        for k, hk in enumerate(hs):
            t = drafter.step_positions(targets, doc, k)
            j = where[t + 1 + k]
            p = drafter.step_loss(self.model.logits(hk[t]), logp[j], top[j], self.model, self.draft.loss)
            total = total + drafter.STEP_WEIGHT**k * p.loss
            parts.append(p)
        return total, parts

    def accumulate(self, rows: list[int]) -> tuple[float, float, int]:
        """Backward over the step's micro-batches; grads = d(loss / n). Returns (Σ weighted loss,
        Σ step-0 agreement, n); the step's other sums go to self.step_sums."""
        n = sum(self.scored[r] for r in rows)
        sums = DraftSums(self.draft.num_decoding_heads, scored0=n)
        for mb in data.micro_batches(self.train_split, rows, self.micro, self.micro_rows) if n else []:
            if self._stopping():
                raise Stop()
            if sum(self.scored[r] for r in mb) == 0:
                continue
            b = data.collate(self.train_split, mb, self.pad_multiple).to(self.device)
            loss, parts = self.draft_parts(b)
            (loss / n).backward()
            sums.add(parts, float(loss.detach()))
        self.step_sums = sums
        return sums.loss, sums.correct[0], n

    def step_scores(self, loss: float, correct: float, n_loss: int) -> dict[str, float | None]:
        s = self.step_sums
        return {
            "train_loss": loss / n_loss if n_loss else None,
            "train_mean_token_accuracy": s.ratio(s.correct, 0),
            "train_acceptance_rate_1": s.ratio(s.alpha, 0),
        }

    @torch.no_grad()
    def _evaluate(self, rows: list[int], split: data.Split) -> DraftSums:  # type: ignore[override]
        self.model.eval()
        scored = self.valid_scored if split is self.valid_split else self.scored
        assert scored is not None
        sums = DraftSums(self.draft.num_decoding_heads, scored0=sum(scored[r] for r in rows))
        try:
            for mb in data.micro_batches(split, rows, self.micro, self.micro_rows):
                loss, parts = self.draft_parts(data.collate(split, mb, self.pad_multiple).to(self.device))
                sums.add(parts, float(loss))
        finally:
            self.model.train()
        return sums

    def before_training(self) -> None:
        """The untrained drafter's acceptance on the validation file: what training is measured against."""
        if self.step > 0 or self.valid_split is None:
            return
        tau = self.evaluate(list(range(len(self.valid_split)))).metrics("valid")["valid_acceptance_length"]
        if tau is not None:
            log(f"before training, the drafter's simulated acceptance length on the validation file is {tau:.3f}")

    def checkpoint_metrics(self) -> dict[str, float | None]:
        """The seven keys (loss: the job's; accuracy: step-0 top-1 agreement with the target) and,
        with a validation file, each draft step's acceptance over the whole of it (docs/metrics.md)."""
        metrics: dict[str, float | None] = {
            "step": self.step,
            "train_loss": self.last.get("train_loss"),
            "train_mean_token_accuracy": self.last.get("train_mean_token_accuracy"),
            "valid_loss": None,
            "valid_mean_token_accuracy": None,
            "full_valid_loss": None,
            "full_valid_mean_token_accuracy": None,
        }
        if self.valid_split is None:
            return metrics
        sample = data.valid_sample(len(self.valid_split), self.spec.valid_sample_rows, self.spec.seed)
        for prefix, rows in (("valid", sample), ("full_valid", list(range(len(self.valid_split))))):
            s = self.evaluate(rows)
            loss = s.loss / s.scored0 if s.scored0 else None
            if loss is not None and not math.isfinite(loss):
                raise diverged(self.step, "the validation loss is not finite", self.hp)
            metrics[f"{prefix}_loss"] = loss
            metrics[f"{prefix}_mean_token_accuracy"] = s.ratio(s.correct, 0)
            if prefix == "full_valid":
                metrics.update(s.metrics("valid"))
        return metrics

    def write_checkpoint(self, out: str) -> list[str]:
        os.makedirs(os.path.dirname(out), exist_ok=True)
        tmp = out + ".tmp"
        files = drafter.save_drafter(tmp, self.model, self.target_cfg, self.draft.num_decoding_heads)
        checkpoint.publish(tmp, out)
        return files
