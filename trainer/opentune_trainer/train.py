"""The training job: spec + token shards in, checkpoints + protocol lines out.

    cd trainer && python3 -m opentune_trainer train --spec /abs/job-spec.json

Recipe shape after torchtune: `Trainer(spec).setup()` → `.train()`; one optimizer step =
`batch_size` rows split into micro-batches, loss = Σ CE over all loss tokens of the step / their
count (so the split never changes the result), AdamW, linear warmup then linear decay.
Under torchrun the same loop runs on every rank (distributed.py: DDP for LoRA, FSDP2 for full).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import math
import os
import signal
import time

import torch

from . import attention, checkpoint, data, distributed, state
from .batching import CHECKPOINT_STEPS, GIB, checkpoint_words, free_memory, memory_plan
from .lora import apply_lora
from .loss import linear_cross_entropy
from .model import compile_blocks, compile_stats
from .numerics import check_finite, diverged, is_oom, lr_at, update_overflow
from .protocol import JobError, emit, first_call_phase, log, phase
from .protocol import line as protocol_line
from .spec import Spec

STATE_EVERY_S = float(os.environ.get("OPENTUNE_STATE_EVERY_S", "900"))  # mid-epoch state saves
# from SIGTERM to the runner's SIGKILL (src/runner/trainer-launch.ts sets it): a state write that
# would not fit is not started (the last whole state is kept)
STOP_BUDGET_S = 0.8 * float(os.environ.get("OPENTUNE_STOP_GRACE_S", "10"))


class Stop(Exception):
    """SIGTERM arrived mid-step: drop the half-done step, save the state before it."""


class Trainer:
    def __init__(self, spec: Spec):
        self.spec, self.hp = spec, spec.hp
        self.stop = False
        self.rng_at_step = None
        self.saved_step: int | None = None  # step of the state on disk, if any
        self.world = distributed.world_from_env()  # rank and world size under torchrun
        self.writer = state.Writer(os.path.abspath(spec.output_dir))  # background state writes

    # ---------------------------------------------------------------- setup
    @phase("loading")
    def setup(self) -> None:
        spec, hp = self.spec, self.hp
        want = spec.device
        if want == "cuda" and not torch.cuda.is_available():
            raise JobError("invalid_hyperparameters", "device cuda requested but CUDA is not available", "device")
        self.device = torch.device("cuda" if want in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
        if self.device.type == "cuda":  # one GPU per rank, of those the runner made visible
            self.device = torch.device("cuda", self.world.local_rank)
        distributed.init(self.world, self.device.type)
        cuda = self.device.type == "cuda"
        self.amp = self._compute_dtype(spec.precision)
        # LoRA: frozen base stored in the compute dtype. Full: float32 master weights + autocast.
        store = self.amp if (self.amp and hp.lora) else torch.float32
        self.pad_multiple = 64 if cuda else 1
        torch.manual_seed(spec.seed)

        try:
            _, cfg = checkpoint.read_config(spec.model_dir)
            files = checkpoint.weight_files(spec.model_dir)
            too_large = distributed.check_fits(checkpoint.param_count(files), hp.lora, store, self.device, self.world)
            if too_large:
                raise JobError("model_too_large", too_large)
        except checkpoint.ModelError as e:
            raise JobError("invalid_model", str(e)) from None
        self.train_split = self._load_split(spec.train_data, cfg, "invalid_training_file")
        self.valid_split = (
            self._load_split(spec.valid_data, cfg, "invalid_validation_file") if spec.valid_data else None
        )
        if sum(self.train_split.row_loss) == 0:
            raise JobError("invalid_training_file", "the training data has no loss tokens")
        try:
            self.model = checkpoint.load_model(spec.model_dir, self.device, store)
        except checkpoint.ModelError as e:
            raise JobError("invalid_model", str(e)) from None
        if hp.lora:
            apply_lora(self.model, hp.lora_r, hp.lora_alpha, hp.lora_dropout)
        if spec.init_adapter:  # continuing a LoRA checkpoint: its adapter, not a fresh one
            if not hp.lora:
                raise JobError("invalid_hyperparameters", "continuing a LoRA adapter needs lora: true", "lora")
            try:
                checkpoint.load_adapter(self.model, spec.init_adapter, hp.lora_r, hp.lora_alpha)
            except checkpoint.ModelError as e:
                raise JobError("invalid_model", str(e)) from None
        # what a step calls (DDP / FSDP2 under torchrun); its parameters are the model's (sharded by FSDP2)
        self.net = distributed.wrap(self.model, batch_stats, hp.lora, self.world, self.device)
        self.grad_scale = distributed.grad_scale(self.net, self.world)  # FSDP2 averages: × W to sum
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.weight_max = min(torch.finfo(p.dtype).max for p in self.params)  # largest trainable value
        self.model.train()
        self.compiling = cuda and os.environ.get("OPENTUNE_COMPILE", "1") != "0" and compile_blocks(self.model)
        self.graphs = 0  # torch.compile's graphs so far: a new one after the first step is a recompile
        self.opt = self._optimizer()
        n = len(self.train_split)
        self.steps_per_epoch = math.ceil(n / hp.batch_size)
        self.total_steps = hp.n_epochs * self.steps_per_epoch
        # round first: 0.07 × 100 is 7.000000000000001 in binary floating point, and ceil made it 8
        self.warmup = math.ceil(round(hp.warmup_ratio * self.total_steps, 9))
        self.micro = self._plan_memory()  # a micro-batch's token budget (batching.py)
        self.step = 0
        self.last: dict[str, float | None] = {}  # metrics of the latest step
        self.fingerprint = self._fingerprint()
        if spec.resume:
            self._resume()

    def _compute_dtype(self, precision: str) -> torch.dtype | None:
        """bf16 autocast dtype, or None for plain float32. bf16 on a GPU only where it is native
        (compute capability ≥ 8.0): `is_bf16_supported()` also counts emulation, which is slower
        than float32. Older GPUs train in float32 (float16 would need a gradient scaler)."""
        if precision == "float32":
            return None
        if self.device.type != "cuda":  # CPU autocast has bf16 too (slowly, without AMX): only when asked
            return torch.bfloat16 if precision == "bfloat16" else None
        major, minor = torch.cuda.get_device_capability(self.device)
        if major >= 8:
            return torch.bfloat16
        if precision == "bfloat16":
            log(
                f"bfloat16 asked for, but this GPU (compute capability {major}.{minor}) has no native bf16: float32",
                "warn",
            )
        return None

    def _plan_memory(self) -> int:
        """The token budget of a micro-batch and how many blocks to checkpoint, from the model and
        the free memory (batching.memory_plan), and one line saying how the job runs: precision,
        attention kernel, micro-batches. spec.micro_batch_size (rows) overrides the estimate."""
        hp, longest = self.hp, self.train_split.seq_len
        compute = self.amp or torch.float32
        self.micro_rows = self.spec.micro_batch_size  # exact rows per micro-batch; an OOM lifts it
        if self.spec.micro_batch_size:
            budget, how = self.spec.micro_batch_size * longest, f"micro_batch_size {self.spec.micro_batch_size} rows"
        else:
            trainable = sum(p.numel() for p in self.params)
            free = free_memory(self.device)
            itemsize = torch.finfo(compute).bits // 8
            plan = memory_plan(self.model.config, itemsize, hp.lora, free, trainable, longest, hp.batch_size * longest)
            budget, how = plan.token_budget, f"estimated from {free / GIB:.1f} GiB free"
            self.model.checkpoint_every = plan.checkpoint_every
        ckpt = checkpoint_words(self.model.checkpoint_every)
        self.how = (  # logged right after `started` (train)
            f"precision {str(compute).replace('torch.', '')}; {attention.describe(self.device, compute)}; "
            f"micro-batches of at most {budget} tokens ({how}), activation checkpointing: {ckpt}; "
            f"torch.compile: {self._compile_words()}"
        )
        return budget

    def _compile_words(self) -> str:
        if not self.compiling:
            return "off"
        cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR")  # the runner's: under the data directory
        return f"on, cache {cache}" if cache else "on"

    def _report_compiles(self) -> None:
        """torch.compile's graphs and graph breaks, in the job's log: after the first step, then at
        each recompile (one is expected per shape family: train, eval, checkpointed blocks)."""
        if not self.compiling:
            return
        s = compile_stats()
        if s["graphs"] > self.graphs:
            what = "compiled" if self.graphs == 0 else "recompiled"
            log(f"torch.compile {what} at step {self.step}: {s['graphs']} graphs, {s['graph_breaks']} graph breaks")
            self.graphs = s["graphs"]

    def _load_split(self, path: str, cfg, code: str) -> data.Split:
        try:
            return data.Split(path, cfg.vocab_size, cfg.max_position_embeddings)
        except data.DataError as e:
            raise JobError(code, f"{os.path.basename(path.rstrip('/'))}: {e}") from None

    def _optimizer(self) -> torch.optim.Optimizer:
        decay = [p for p in self.params if p.dim() >= 2]  # matrices decay; norms and biases do not
        rest = [p for p in self.params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": self.hp.weight_decay}, {"params": rest, "weight_decay": 0.0}]
        kw = {}
        if self.device.type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters:
            kw["fused"] = True
        return torch.optim.AdamW(
            [g for g in groups if g["params"]], lr=self.hp.learning_rate, betas=(0.9, 0.999), eps=1e-8, **kw
        )

    def _fingerprint(self) -> str:
        s = self.spec
        key = {
            "model": os.path.abspath(s.model_dir),
            "hp": vars(self.hp),
            "seed": s.seed,
            "rows": len(self.train_split),
            "tokens": int(self.train_split.start[-1]),
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()

    def _resume(self) -> None:
        payload = state.load(self.spec.output_dir, self.fingerprint)
        if payload is None:
            if os.path.isdir(os.path.join(self.spec.output_dir, "state")):
                log("saved state belongs to a different job configuration; starting over", "warn")
            return
        distributed.load_state(self.model, self.net, self.opt, payload)
        self.step, self.micro, self.last = payload["step"], payload["micro"], payload["last"]
        state.set_rng_state(payload["rng"])
        self.saved_step = self.writer.step = self.step
        log(f"resumed from step {self.step}")

    # ---------------------------------------------------------------- steps
    def autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp)

    def forward_stats(self, split: data.Split, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(Σ CE, Σ correct) over the loss tokens of `rows`; gradients flow when grad is enabled."""
        b = data.collate(split, rows, self.pad_multiple).to(self.device)
        with self.autocast():
            return self.net(b)  # batch_stats, through DDP/FSDP2 when there are several ranks

    def accumulate(self, rows: list[int]) -> tuple[float, float, int]:
        """Backward over all micro-batches of a step; grads = d(Σ CE / n_loss). Returns sums.
        With several ranks each takes its share of the same plan (distributed.my_share); None is a
        zero-weight stand-in, so every rank runs as many passes (and collectives) as the others."""
        n_loss = sum(self.train_split.row_loss[r] for r in rows)
        loss = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        plan = data.micro_batches(self.train_split, rows, self.micro, self.micro_rows)
        share = distributed.my_share(plan, self.world)
        for i, mb in enumerate(share if n_loss else []):  # no loss tokens in the step: no pass at all
            if self._stopping():
                raise Stop()
            if self.world.size == 1 and sum(self.train_split.row_loss[r] for r in mb) == 0:
                continue  # no loss tokens: contributes nothing to loss or gradient
            with distributed.no_sync(self.net, last=i == len(share) - 1):
                ls, c = self.forward_stats(self.train_split, mb if mb is not None else plan[0])
                (ls / n_loss * self.grad_scale if mb is not None else ls * 0.0).backward()
            if mb is not None:
                loss += ls.detach()
                correct += c
        loss_sum, correct_sum = distributed.all_sum([float(loss), float(correct)], self.device, self.world)
        return loss_sum, correct_sum, n_loss

    def _stopping(self) -> bool:
        """SIGTERM seen (by any rank: they all stop at the same micro-batch, or collectives would hang)."""
        if self.world.size == 1:
            return self.stop
        return distributed.all_sum([float(self.stop)], self.device, self.world)[0] > 0

    @first_call_phase("the first step")  # torch.compile, CUDA kernels
    def train_step(self, rows: list[int]) -> dict:
        t0 = time.perf_counter()
        while True:
            try:
                loss, correct, n_loss = self.accumulate(rows)
                break
            except Exception as e:  # noqa: BLE001 - only OOM is retried
                if not is_oom(e):
                    raise
            # shrink outside the except block: until it ends, the traceback keeps every frame of
            # the failed forward/backward alive, activations included, and empty_cache frees nothing
            self._shrink()
        lr = lr_at(self.step + 1, self.total_steps, self.warmup, self.hp.learning_rate)
        norm = None
        if n_loss:
            # Divergence fails the job before its update is applied (and so before any checkpoint
            # or state holds it): a non-finite loss or gradient would turn every weight to NaN.
            n = self.step + 1
            if not math.isfinite(loss):
                raise diverged(n, "the loss is not finite", self.hp)
            norm = float(distributed.full_tensor(torch.nn.utils.clip_grad_norm_(self.params, self.hp.max_grad_norm)))
            if not math.isfinite(norm):
                raise diverged(n, "the gradient norm is not finite", self.hp)
            dtype = str(self.params[0].dtype).replace("torch.", "")
            overflow = update_overflow(lr, self.weight_max, self.hp.weight_decay, dtype)
            if overflow:
                raise diverged(n, overflow, self.hp)
            for g in self.opt.param_groups:
                g["lr"] = lr
            try:
                self.opt.step()
            except RuntimeError as e:  # a scalar beyond the weights' dtype that update_overflow missed
                if "overflow" not in str(e):
                    raise
                raise diverged(n, f"the optimizer's update overflows ({e})", self.hp) from None
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        self._report_compiles()
        return {
            **self.step_scores(loss, correct, n_loss),
            "learning_rate": lr,
            "tokens": sum(self.train_split.row_len[r] for r in rows),
            "loss_tokens": n_loss,
            "grad_norm": norm,
            "step_time_s": round(time.perf_counter() - t0, 4),
        }

    def step_scores(self, loss: float, correct: float, n_loss: int) -> dict[str, float | None]:
        """A step's train_loss and train_mean_token_accuracy from accumulate's sums."""
        return {
            "train_loss": loss / n_loss if n_loss else None,
            "train_mean_token_accuracy": correct / n_loss if n_loss else None,
        }

    def _shrink(self, retry_step: bool = True) -> None:
        """OOM (the estimate was off): halve the token budget down to one longest row, then
        checkpoint more blocks (every 4th, every 2nd, all), then give up."""
        if retry_step:
            self.opt.zero_grad(set_to_none=True)
            if self.rng_at_step is not None:
                state.set_rng_state(self.rng_at_step)  # the retry must draw the same dropout masks
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        m, floor = self.model, self.train_split.seq_len
        self.micro_rows = None  # from here the budget decides
        if self.micro > floor:
            self.micro = max(floor, self.micro // 2)
            log(f"out of memory: micro-batches now of at most {self.micro} tokens", "warn")
        elif m.checkpoint_every != 1:
            m.checkpoint_every = CHECKPOINT_STEPS[CHECKPOINT_STEPS.index(m.checkpoint_every) + 1]
            what = checkpoint_words(m.checkpoint_every)
            log(f"out of memory at one row per micro-batch: activation checkpointing of {what}", "warn")
        else:
            raise JobError("out_of_memory", f"one row of {self.train_split.seq_len} tokens does not fit in memory")

    def evaluate(self, rows: list[int], split: data.Split | None = None) -> tuple[float | None, float | None]:
        """(Σ CE / n, accuracy) over `rows` of `split` (default: the validation split), without
        gradients; an OOM shrinks the micro-batch and retries."""
        while True:
            try:
                return self._evaluate(rows, split or self.valid_split)
            except Exception as e:  # noqa: BLE001 - only OOM is retried
                if not is_oom(e):
                    raise
            self._shrink(retry_step=False)  # outside the except block, as in train_step

    @torch.no_grad()
    def _evaluate(self, rows: list[int], split: data.Split) -> tuple[float | None, float | None]:
        self.model.eval()
        try:
            loss, correct, n = 0.0, 0.0, 0
            plan = data.micro_batches(split, rows, self.micro, self.micro_rows)
            for mb in distributed.my_share(plan, self.world):  # None: a stand-in pass (FSDP2 gathers)
                ls, c = self.forward_stats(split, mb if mb is not None else plan[0])
                if mb is not None:
                    loss, correct = loss + float(ls), correct + float(c)
                    n += sum(split.row_loss[r] for r in mb)
            loss, correct, n = distributed.all_sum([loss, correct, n], self.device, self.world)
        finally:
            self.model.train()
        return (loss / n, correct / n) if n else (None, None)

    # ---------------------------------------------------------------- the loop
    def train(self) -> int:
        """Run the remaining steps; returns the exit code (0 done, 3 stopped by SIGTERM)."""
        emit(
            "started",
            total_steps=self.total_steps,
            steps_per_epoch=self.steps_per_epoch,
            start_step=self.step,
            device=self.device.type,
            dtype=str(self.amp or torch.float32).replace("torch.", ""),
            trainable_params=sum(p.numel() for p in self.params),
            total_params=sum(p.numel() for p in self.model.parameters()),
            world_size=self.world.size,
            # what a SIGTERM costs: the runner waits this long (plus a margin) before SIGKILL
            stop_s=round(self.writer.estimate_s(self._state_bytes()), 1),
        )
        log(self.how)  # how this job runs: precision, attention kernel, micro-batches, checkpointing, compile
        self.before_training()
        last_save = time.time()
        order: list[int] = []
        order_epoch = -1
        while self.step < self.total_steps:
            if self._stopping():
                return self._stopped()
            epoch, k = divmod(self.step, self.steps_per_epoch)
            if order_epoch != epoch:  # the order depends on the epoch only: not one randperm per step
                order, order_epoch = data.epoch_order(len(self.train_split), self.spec.seed, epoch), epoch
            rows = order[k * self.hp.batch_size : (k + 1) * self.hp.batch_size]
            self.rng_at_step = state.rng_state()
            try:
                m = self.train_step(rows)
            except Stop:
                self.opt.zero_grad(set_to_none=True)
                state.set_rng_state(self.rng_at_step)
                return self._stopped()
            self.last, self.last_rows = m, rows
            emit("metrics", step=self.step, total_steps=self.total_steps, epoch=epoch + 1, **m)
            if self.step % self.steps_per_epoch == 0:
                self._check_finite()
                self.save_checkpoint(epoch + 1)
                self.save_state()
                last_save = time.time()
            elif distributed.any_rank(time.time() - last_save > STATE_EVERY_S, self.device, self.world):
                self._check_finite()
                self.save_state()
                last_save = time.time()
        self.writer.wait()  # the last state is on disk before `finished`
        emit("finished", step=self.step, status="succeeded")
        return 0

    def before_training(self) -> None:
        """After `started`, before the first step (draft_train.py reports its baseline here)."""

    def _check_finite(self) -> None:
        if self.world.size == 1:
            return check_finite(self.params, self.step, self.hp)
        local = [distributed.local(p) for p in self.params]  # FSDP2: this rank's shard of each
        ok = all(bool(torch.isfinite(p).all()) for p in local)
        if distributed.any_rank(not ok, self.device, self.world):
            check_finite([torch.tensor(float("nan"))], self.step, self.hp)  # the same error on every rank

    def _state_bytes(self) -> int:
        """Bytes of a resumable state: trainable weights and AdamW's two moments, in float32."""
        return sum(p.numel() for p in self.params) * 12

    def _stopped(self) -> int:
        """SIGTERM: this step's state if writing it fits the runner's grace (OPENTUNE_STOP_GRACE_S),
        else the last whole state stays (a write in flight is finished if it fits, else given up)
        and the job resumes from its step, trained again bit for bit."""
        d = os.path.join(os.path.abspath(self.spec.output_dir), "state")
        w = self.writer
        if self.saved_step != self.step:
            need = w.estimate_s(self._state_bytes())
            fits = w.step is None or need <= STOP_BUDGET_S  # nothing on disk yet: nothing to lose
            if distributed.any_rank(self.world.main and fits, self.device, self.world):
                w.abort()  # an older step's write: this one replaces it
                self.save_state(wait=True)
                emit("finished", step=self.step, status="stopped")
                return 3
            if w.writing is not None and w.remaining_s() <= STOP_BUDGET_S:
                w.wait()
            else:
                w.abort()
            log(
                f"stopping at step {self.step}: writing its state would take about {need:.0f} s, more than the "
                f"{STOP_BUDGET_S:g} s the runner waits; the job resumes from the state of step {w.step}",
                "warn",
            )
        w.wait()
        step = self.step if self.saved_step == self.step else w.step
        emit("state_saved", step=step, dir=d)
        emit("finished", step=step, status="stopped")
        return 3

    @phase("validating and writing a checkpoint")
    def save_checkpoint(self, epoch: int) -> None:
        metrics = self.checkpoint_metrics()
        out = os.path.join(os.path.abspath(self.spec.output_dir), "checkpoints", f"step-{self.step}")
        files = self.write_checkpoint(out)
        if files is None:
            return  # rank 0 writes
        # The line is also kept beside the folder: state is saved right after it, so a service that
        # dies before reading the line would never hear of this checkpoint again; on resume it reads
        # checkpoints/step-N.json instead (docs/trainer-protocol.md §3).
        fields = dict(step=self.step, epoch=epoch, dir=out, files=files, metrics=metrics)
        tmp = out + ".json.tmp"
        with open(tmp, "w") as f:
            f.write(protocol_line("checkpoint", **fields))
        os.replace(tmp, out + ".json")
        emit("checkpoint", **fields)

    def checkpoint_metrics(self) -> dict[str, float | None]:
        """The seven keys of the API's Metrics at this step (validation: a fixed sample, then all)."""
        v = f = (None, None)
        if self.valid_split is not None:
            sample = data.valid_sample(len(self.valid_split), self.spec.valid_sample_rows, self.spec.seed)
            v = self.evaluate(sample)
            f = self.evaluate(list(range(len(self.valid_split))))
            if f[0] is not None and not math.isfinite(f[0]):
                raise diverged(self.step, "the validation loss is not finite", self.hp)  # weights blown up
        else:  # finite weights may still be too large to use: one forward pass over the step's rows
            probe, _ = self.evaluate(self.last_rows, self.train_split)
            if probe is not None and not math.isfinite(probe):
                raise diverged(self.step, "the loss after the update is not finite", self.hp)
        return {
            "step": self.step,
            "train_loss": self.last.get("train_loss"),
            "train_mean_token_accuracy": self.last.get("train_mean_token_accuracy"),
            "valid_loss": v[0],
            "valid_mean_token_accuracy": v[1],
            "full_valid_loss": f[0],
            "full_valid_mean_token_accuracy": f[1],
        }

    def write_checkpoint(self, out: str) -> list[str] | None:
        """The checkpoint's files in the folder `out`; their names (None on ranks other than 0)."""
        full = None if self.hp.lora else distributed.full_state_dict(self.model, self.net)  # all ranks gather
        if not self.world.main:
            return None
        os.makedirs(os.path.dirname(out), exist_ok=True)
        if self.hp.lora:
            return checkpoint.save_adapter(
                out,
                self.model,
                self.hp.lora_r,
                self.hp.lora_alpha,
                self.hp.lora_dropout,
                self.spec.base_model or self.spec.model_dir,
            )
        return checkpoint.save_full(out, self.model, self.spec.model_dir, state_dict=full)

    @phase("writing resumable state")
    def save_state(self, wait: bool = False) -> None:
        """A CPU copy now (gathered from every rank under FSDP2); rank 0 writes it on a background
        thread (state.Writer) and prints `state_saved` once it is whole, unless `wait`."""
        payload = {
            "trainable": distributed.trainable_state(self.model, self.net),
            "optimizer": distributed.optimizer_state(self.model, self.opt),
            "step": self.step,
            "micro": self.micro,
            "last": self.last,
            "rng": state.rng_state(),
        }
        epoch, k = divmod(self.step, self.steps_per_epoch)
        info = {
            "fingerprint": self.fingerprint,
            "step": self.step,
            "epoch": epoch,
            "step_in_epoch": k,
            "seed": self.spec.seed,
            "job_id": self.spec.job_id,
        }
        self.saved_step = self.step
        if not self.world.main:
            return

        def done(d: str, seconds: float) -> None:
            emit("state_saved", step=info["step"], dir=d, seconds=round(seconds, 3))

        self.writer.submit(payload, info, done)
        if wait:
            self.writer.wait()

    def request_stop(self, *_args) -> None:
        self.stop = True


def batch_stats(model: torch.nn.Module, b: data.Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ CE, Σ correct) of a batch's loss tokens: the forward of distributed.WithLoss."""
    h = model(b.tokens, b.pos, b.doc)
    h = h.reshape(-1, h.shape[-1]).index_select(0, b.loss_idx)  # loss rows only reach lm_head
    y = b.targets.view(-1).index_select(0, b.loss_idx)
    return linear_cross_entropy(h, model.lm_head.weight, y)


def run(spec: Spec) -> int:
    if spec.method == "spec-draft":
        from .draft_train import DraftTrainer

        trainer: Trainer = DraftTrainer(spec)
    else:
        trainer = Trainer(spec)
    signal.signal(signal.SIGTERM, trainer.request_stop)
    try:
        trainer.setup()
        return trainer.train()
    finally:
        distributed.close()
