"""EAGLE-3 drafter (arXiv 2503.01840): the module, its training-time test, its losses, its files.

    aux = target.features(tokens, pos, doc, capture=aux_layers(L))   # low, middle, high layer inputs
    d = Eagle3Drafter(target.config, used_ids)                        # used_ids: the draft vocabulary
    steps = ttt_forward(d, torch.cat(aux, -1)[0], tokens[0], pos[0], doc_ids, K)

The drafter reads the target's residual stream entering layers 2, L//2 and L-3 (HF
`hidden_states` indices; vLLM's and SGLang's defaults), fused by `fc` (3·hidden → hidden), and one
Llama decoder layer (`midlayer`) whose attention takes cat(input_layernorm(embedding of the next
token), hidden_norm(h)) with the residual from h. Its head predicts over a draft vocabulary (the
most frequent trained tokens): target id = draft id + d2t[draft id]; t2d marks those target ids.

At position t, step 0 reads the target's features at t and the token at t+1 and predicts the token at
t+2, i.e. it learns the target's distribution at t+1. Step k feeds step k-1's output back as h, with
the true token at t+1+k and RoPE position pos+k; its query sees the step-0 keys of its document up to
t and its own keys of steps 1..k at t (the draft chain vLLM runs at decode time). Names and layout
match the checkpoints vLLM (`LlamaForCausalLMEagle3`) and SGLang load (docs/spec-draft.md).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass

import torch
import torch.nn as nn

from . import safetensors_io as st
from .attention import _sdpa
from .data import IGNORE
from .model import MLP, ModelConfig, RMSNorm, rope_inv_freq, rotate_half

ARCHITECTURE = "LlamaForCausalLMEagle3"
STEP_WEIGHT = 0.8  # step k's loss weighs 0.8^k (EAGLE, SpecForge): later steps matter less, and are harder
HYBRID_ETA = 3.0  # lk_hybrid's λ = exp(-η·α): the LK paper's best setting (speculators' default)
LOSS_TYPES = ("kl", "lk_alpha", "lk_hybrid")
TARGET_CHUNK = 1024  # target logits over the vocabulary are computed this many positions at a time
ALPHA_FLOOR = 1e-6  # lk_alpha's log never sees 0 (a draft with no mass where the target has any)


def aux_layers(n_layers: int) -> tuple[int, int, int]:
    """The target layers whose input the drafter reads (vLLM's and SGLang's default ids)."""
    return (2, n_layers // 2, n_layers - 3)


def draft_vocabulary(targets: torch.Tensor, vocab_size: int, size: int) -> torch.Tensor:
    """The `size` most frequent trained target tokens (ties: lower id first), sorted by id."""
    y = targets[targets != IGNORE].long()
    counts = torch.bincount(y, minlength=vocab_size).double()
    # rank by count, then by id: a stable descending sort of counts keeps ids ascending among ties
    order = torch.sort(counts, descending=True, stable=True).indices
    return torch.sort(order[: min(size, vocab_size)]).values


class DraftAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, hd = cfg.hidden_size, cfg.head_dim
        self.n_head, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, hd
        self.q_proj = nn.Linear(2 * d, self.n_head * hd, bias=False)
        self.k_proj = nn.Linear(2 * d, self.n_kv * hd, bias=False)
        self.v_proj = nn.Linear(2 * d, self.n_kv * hd, bias=False)
        self.o_proj = nn.Linear(self.n_head * hd, d, bias=False)


class DraftLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.hidden_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = DraftAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)


class Eagle3Drafter(nn.Module):
    """`cfg`: the drafter's dimensions (the target's, one layer); `used`: draft id → target id."""

    def __init__(self, cfg: ModelConfig, used: torch.Tensor, target_hidden: int | None = None):
        super().__init__()
        # a plain Llama layer whatever the target's extras (biases, Qwen3's q/k norms, a window):
        # what config.json says and what vLLM and SGLang build
        cfg = dataclasses.replace(
            cfg, num_hidden_layers=1, qkv_bias=False, o_bias=False, mlp_bias=False, qk_norm=False, sliding_window=None
        )
        self.config = cfg
        self.target_hidden = target_hidden or cfg.hidden_size
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)  # the target's, frozen
        self.embed_tokens.weight.requires_grad_(False)
        self.fc = nn.Linear(3 * self.target_hidden, cfg.hidden_size, bias=False)
        self.midlayer = DraftLayer(cfg)
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, len(used), bias=False)
        used = used.long()
        self.register_buffer("d2t", used - torch.arange(len(used)), persistent=True)
        t2d = torch.zeros(cfg.vocab_size, dtype=torch.bool)
        t2d[used] = True
        self.register_buffer("t2d", t2d, persistent=True)
        self.inv_freq = rope_inv_freq(cfg)  # plain attribute, float32 whatever .to(dtype) does

    @property
    def used(self) -> torch.Tensor:
        """Target id of each draft id."""
        return self.d2t + torch.arange(len(self.d2t), device=self.d2t.device)

    def rope(self, pos: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [..., head_dim] for positions `pos` (HF's rotate_half layout, as the target)."""
        if self.inv_freq.device != pos.device:
            self.inv_freq = self.inv_freq.to(pos.device)
        freqs = pos[..., None].float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def qkv(self, ids: torch.Tensor, h: torch.Tensor, pos: torch.Tensor):
        """ids [N], h [N, hidden], pos [N] → q [H, N, hd], k and v [KV, N, hd] (RoPE applied)."""
        layer, at = self.midlayer, self.midlayer.self_attn
        e = self.embed_tokens(ids).to(h.dtype)
        x = torch.cat([layer.input_layernorm(e), layer.hidden_norm(h)], dim=-1)
        N = x.shape[0]
        q = at.q_proj(x).view(N, at.n_head, at.head_dim).transpose(0, 1)
        k = at.k_proj(x).view(N, at.n_kv, at.head_dim).transpose(0, 1)
        v = at.v_proj(x).view(N, at.n_kv, at.head_dim).transpose(0, 1)
        cos, sin = self.rope(pos, q.dtype)
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin, v

    def finish(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Attention output y [H, N, hd] → the layer's output [N, hidden] (residual from h)."""
        layer = self.midlayer
        x = h + layer.self_attn.o_proj(y.transpose(0, 1).reshape(h.shape[0], -1))
        return x + layer.mlp(layer.post_attention_layernorm(x))

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Draft-vocabulary logits, float32."""
        return self.lm_head(self.norm(h)).float()


def ttt_forward(
    d: Eagle3Drafter, aux: torch.Tensor, tokens: torch.Tensor, pos: torch.Tensor, doc: torch.Tensor, steps: int
) -> list[torch.Tensor]:
    """The drafter unrolled `steps` times over one packed row (aux [N, 3·hidden], tokens, pos, doc
    [N]: document id per position); returns each step's hidden states [N, hidden].

    Keys are laid out [step 0 | step 1 | …]; a query at t of step k sees step-0 keys j ≤ t of its
    document and the keys at t of steps 1..k: one SDPA call per step over a boolean mask."""
    N = tokens.shape[0]
    t = torch.arange(N, device=tokens.device)
    causal = (doc[:, None] == doc[None, :]) & (t[None, :] <= t[:, None])
    eye = torch.eye(N, dtype=torch.bool, device=tokens.device)
    h = d.fc(aux)
    keys: list[torch.Tensor] = []
    values: list[torch.Tensor] = []
    out = []
    for k in range(steps):
        ids = torch.zeros_like(tokens)
        ids[: max(0, N - 1 - k)] = tokens[1 + k :]  # the true next token of step k; past the row: masked later
        q, key, value = d.qkv(ids, h, pos + k)
        keys.append(key)
        values.append(value)
        mask = torch.cat([causal] + [eye] * k, dim=1)
        y = _sdpa(q[None], torch.cat(keys, 1)[None], torch.cat(values, 1)[None], mask)[0]
        h = d.finish(h, y)
        out.append(h)
    return out


def step_positions(targets: torch.Tensor, doc: torch.Tensor, k: int) -> torch.Tensor:
    """Positions t of a packed row where step k is scored: the target's next-token prediction at
    t+1+k is a trained one (targets[t+1+k] ≠ -100, pre-shifted) within t's document."""
    N = targets.shape[0]
    if N <= 1 + k:
        return torch.zeros(0, dtype=torch.long, device=targets.device)
    ok = (targets[1 + k :] != IGNORE) & (doc[1 + k :] == doc[: N - 1 - k])
    return ok.nonzero().view(-1)


@torch.no_grad()
def target_distribution(
    target_h: torch.Tensor, lm_head: torch.Tensor, used: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The target's log-probabilities on the draft vocabulary (not renormalised) and its argmax over
    the whole vocabulary, at each row of target_h [M, hidden]; a chunk of rows at a time, so no
    [M, vocab] float32 tensor is held."""
    logp, top = [], []
    for s in range(0, target_h.shape[0], TARGET_CHUNK):
        z = (target_h[s : s + TARGET_CHUNK] @ lm_head.T).float()
        lse = torch.logsumexp(z, dim=-1, keepdim=True)
        logp.append(z[:, used] - lse)
        top.append(z.argmax(-1))
    if not logp:
        return torch.zeros(0, len(used), device=target_h.device), torch.zeros(0, dtype=torch.long)
    return torch.cat(logp), torch.cat(top)


@dataclass
class StepLoss:
    """Sums over one TTT step's scored positions (per-position means are taken by the caller)."""

    loss: torch.Tensor  # Σ per-position loss over positions whose target argmax is in the draft vocab
    alpha: torch.Tensor  # Σ α = Σ_v min(p_v, q_v) over those positions (no grad)
    correct: torch.Tensor  # Σ [draft argmax (as a target id) = target argmax] over those positions
    covered: int  # positions whose target argmax is in the draft vocabulary
    scored: int  # positions scored at all


def step_loss(
    logits: torch.Tensor, target_logp: torch.Tensor, target_top: torch.Tensor, d: Eagle3Drafter, loss_type: str
) -> StepLoss:
    """The loss of draft logits [M, Vd] against the target's log-probabilities on the draft vocabulary
    [M, Vd] (not renormalised) and argmax [M] (target ids), in float32.

    kl: KL(p̂ ‖ q), p̂ the target renormalised over the draft vocabulary (soft cross-entropy minus
    p̂'s entropy: the same gradient, and 0 when q = p̂). lk_alpha: -log α with α = Σ min(p, q), p not
    renormalised (the probability a sampled draft token is accepted). lk_hybrid: λ·KL + (1-λ)·(1-α),
    λ = exp(-η·α) per position, α detached (LK losses, arXiv 2602.23881)."""
    covered = d.t2d[target_top]
    M = int(covered.sum())
    zero = logits.sum() * 0.0
    if M == 0:
        return StepLoss(zero, zero.detach(), zero.detach(), 0, len(target_top))
    q_logp = torch.log_softmax(logits[covered].float(), dim=-1)
    p_logp = target_logp[covered].float()  # bf16 log-probabilities: renormalised and exp'd in float32
    p = p_logp.exp()
    p_hat_logp = p_logp - torch.logsumexp(p_logp, dim=-1, keepdim=True)
    p_hat = p_hat_logp.exp()
    kl = (p_hat * (p_hat_logp - q_logp)).sum(-1)
    alpha = torch.minimum(p, q_logp.exp()).sum(-1)
    if loss_type == "kl":
        per = kl
    elif loss_type == "lk_alpha":
        per = -torch.log(alpha.clamp_min(ALPHA_FLOOR))
    elif loss_type == "lk_hybrid":
        lam = torch.exp(-HYBRID_ETA * alpha.detach())
        per = lam * kl + (1 - lam) * (1 - alpha)
    else:
        raise ValueError(f"loss type {loss_type!r} is not one of {', '.join(LOSS_TYPES)}")
    draft_top = logits[covered].argmax(-1) + d.d2t[logits[covered].argmax(-1)]
    correct = (draft_top == target_top[covered]).sum()
    return StepLoss(per.sum(), alpha.detach().sum(), correct.float(), M, len(target_top))


def acceptance_length(accuracy: list[float], coverage: list[float]) -> float:
    """τ = 1 + Σ_k Π_{j≤k} a_j with a_j = step j's top-1 agreement × its draft-vocabulary coverage:
    the tokens a greedy verifier accepts per target forward if step j's drafts were right
    independently of earlier ones (a simulation; vLLM counts the real thing)."""
    tau, run = 1.0, 1.0
    for acc, cov in zip(accuracy, coverage, strict=True):
        run *= acc * cov
        tau += run
    return tau


# ------------------------------------------------------------------------------------- files
def rope_scaling(cfg: ModelConfig) -> dict | None:
    """The target's RoPE scaling as transformers < 5 writes it (null for plain RoPE; no theta inside),
    which vLLM and SGLang read: transformers ≥ 5 configs give `rope_parameters` instead."""
    rs = cfg.rope_scaling or {}
    kind = rs.get("rope_type") or rs.get("type") or "default"
    return None if kind == "default" else {k: v for k, v in rs.items() if k != "rope_theta"}


def drafter_config(target_cfg: dict, cfg: ModelConfig, draft_vocab: int, steps: int | None = None) -> dict:
    """config.json of the drafter: the target's dimensions, one layer, both vocabulary sizes (and
    the draft steps it was trained for, a hint for num_speculative_tokens that loaders ignore)."""
    out = {
        "architectures": [ARCHITECTURE],
        "model_type": "llama",
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
        "num_hidden_layers": 1,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": rope_scaling(cfg),
        "vocab_size": cfg.vocab_size,
        "draft_vocab_size": draft_vocab,
        "target_hidden_size": cfg.hidden_size,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": False,
        "hidden_act": "silu",
        "torch_dtype": cfg.torch_dtype,
    }
    if steps is not None:
        out["num_speculative_tokens"] = steps
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if key in target_cfg:
            out[key] = target_cfg[key]
    return out


def drafter_tensors(d: Eagle3Drafter, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Exactly the keys vLLM and SGLang load (no embedding: both use the target's)."""
    out = {
        n: p.detach().to("cpu", dtype, copy=True).contiguous()
        for n, p in d.named_parameters()
        if not n.startswith("embed_tokens.")
    }
    out["d2t"] = d.d2t.detach().to("cpu", torch.int64, copy=True)
    out["t2d"] = d.t2d.detach().to("cpu", copy=True)
    return out


def save_drafter(out: str, d: Eagle3Drafter, target_cfg: dict, steps: int | None = None) -> list[str]:
    """Write config.json + model.safetensors into the folder `out` (created); returns the names."""
    os.makedirs(out, exist_ok=True)
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(d.config.torch_dtype, torch.float32)
    st.save(drafter_tensors(d, dtype), os.path.join(out, "model.safetensors"))
    config = drafter_config(target_cfg, d.config, len(d.d2t), steps)
    config["target_hidden_size"] = d.target_hidden  # vLLM and SGLang size fc's input by it (3 ×)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    return ["config.json", "model.safetensors"]


def is_drafter(folder: str) -> bool:
    try:
        with open(os.path.join(folder, "config.json")) as f:
            return ARCHITECTURE in (json.load(f).get("architectures") or [])
    except (OSError, ValueError):
        return False


def load_drafter(folder: str, embed: torch.Tensor, device, dtype: torch.dtype) -> Eagle3Drafter:
    """A saved drafter, its embedding the target's (`embed`, shared, not copied)."""
    with open(os.path.join(folder, "config.json")) as f:
        c = json.load(f)
    tensors = st.load(os.path.join(folder, "model.safetensors"))
    cfg = ModelConfig(
        model_type="llama",
        vocab_size=c["vocab_size"],
        hidden_size=c["hidden_size"],
        intermediate_size=c["intermediate_size"],
        num_hidden_layers=1,
        num_attention_heads=c["num_attention_heads"],
        num_key_value_heads=c.get("num_key_value_heads") or c["num_attention_heads"],
        head_dim=c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"],
        max_position_embeddings=c.get("max_position_embeddings", 2048),
        rms_norm_eps=c.get("rms_norm_eps", 1e-6),
        rope_theta=float(c.get("rope_theta") or 10000.0),
        rope_scaling=c.get("rope_scaling"),
        tie_word_embeddings=False,
        qkv_bias=False,
        o_bias=False,
        mlp_bias=False,
        qk_norm=False,
        sliding_window=None,
        torch_dtype=str(c.get("torch_dtype") or "float32"),
    )
    d2t = tensors.pop("d2t").long()
    tensors.pop("t2d", None)
    d = Eagle3Drafter(cfg, d2t + torch.arange(len(d2t)), c.get("target_hidden_size"))
    missing = d.load_state_dict(tensors, strict=False)
    absent = [k for k in missing.missing_keys if not k.startswith("embed_tokens.") and k not in ("d2t", "t2d")]
    if absent or missing.unexpected_keys:
        raise ValueError(f"{folder}: not an EAGLE-3 drafter (missing {absent}, unexpected {missing.unexpected_keys})")
    d = d.to(device=device, dtype=dtype)
    # the target's, shared: a plain tensor (one `.to()` cast, say) is wrapped, not copied
    d.embed_tokens.weight = embed if isinstance(embed, nn.Parameter) else nn.Parameter(embed, requires_grad=False)
    return d.eval().requires_grad_(False)


def init_drafter(d: Eagle3Drafter, target_embed: torch.Tensor, seed: int) -> None:
    """The embedding copied from the target; the rest as nn.Linear initialises it, from `seed`."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        d.embed_tokens.weight.copy_(target_embed)
        for name, p in d.named_parameters():
            if name.startswith("embed_tokens."):
                continue
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:  # kaiming-uniform(a=√5), nn.Linear's default, drawn from our generator
                bound = 1.0 / math.sqrt(p.shape[1])
                p.copy_(torch.rand(p.shape, generator=g, dtype=torch.float32) * 2 * bound - bound)
