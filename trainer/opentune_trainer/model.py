"""Llama-family decoder: Llama 2/3.x, Qwen2/2.5, Qwen3, Mistral, with Hugging Face parameter names.

    from opentune_trainer.model import load_model
    model = load_model("models/opentune/tiny-llama")   # folder with config.json + *.safetensors
    logits = model.logits(tokens)                       # [B, T, vocab], float32

Names equal the HF checkpoint keys (model.layers.0.self_attn.q_proj.weight …) and RoPE is HF's
`rotate_half` form, so weights load and save without permutation. Packed rows: `forward` takes
`pos` (positions restarting at 0 per document) and `doc` (document index per position, or None when
each row is one document); attention is then causal inside a document and blind across documents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from . import attention
from .numerics import is_oom
from .protocol import log
from .support import SLIDING_WINDOW_TYPES, check_supported

try:
    import torch._dynamo
except ImportError:  # torch 1.13 (Debian's fallback): no torch.compile
    pass


@dataclass
class ModelConfig:
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict | None
    tie_word_embeddings: bool
    qkv_bias: bool  # Qwen2 always, Llama/Qwen3 when attention_bias
    o_bias: bool
    mlp_bias: bool
    qk_norm: bool  # Qwen3: RMSNorm over head_dim on q and k before RoPE
    sliding_window: int | None
    torch_dtype: str

    @classmethod
    def from_hf(cls, d: dict) -> ModelConfig:
        check_supported(d)  # supported_models.json: the list the service refuses other models by
        mt = d["model_type"]
        heads = d["num_attention_heads"]
        # transformers ≥ 5 writes rope settings as `rope_parameters` (theta inside); older ones as
        # `rope_theta` + `rope_scaling`.
        rope = d.get("rope_parameters") or d.get("rope_scaling") or None
        theta = d.get("rope_theta") or (rope or {}).get("rope_theta") or 10000.0
        bias = bool(d.get("attention_bias", False))
        window = d.get("sliding_window") if mt in SLIDING_WINDOW_TYPES else None
        return cls(
            model_type=mt,
            vocab_size=d["vocab_size"],
            hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"],
            num_hidden_layers=d["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=d.get("num_key_value_heads") or heads,
            head_dim=d.get("head_dim") or d["hidden_size"] // heads,
            max_position_embeddings=d.get("max_position_embeddings", 2048),
            rms_norm_eps=d.get("rms_norm_eps", 1e-6),
            rope_theta=float(theta),
            rope_scaling=rope,
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            qkv_bias=True if mt == "qwen2" else (bias and mt != "mistral"),
            o_bias=bias and mt in ("llama", "qwen3"),
            mlp_bias=bool(d.get("mlp_bias", False)) and mt == "llama",
            qk_norm=mt == "qwen3",
            sliding_window=window,
            torch_dtype=str(d.get("torch_dtype") or d.get("dtype") or "float32"),
        )


def rope_inv_freq(cfg: ModelConfig) -> torch.Tensor:
    """Inverse frequencies exactly as transformers computes them (default, linear, llama3)."""
    hd = cfg.head_dim
    # explicit CPU: this also runs inside `with torch.device("meta")` when models are built empty
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.int64, device="cpu").float() / hd))
    rs = cfg.rope_scaling or {}
    kind = rs.get("rope_type") or rs.get("type") or "default"
    if kind == "default":
        return inv
    if kind == "linear":
        return inv / rs["factor"]
    if kind == "llama3":  # Llama 3.1: stretch low frequencies by `factor`, blend the middle band
        factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > old / lo, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old / hi) * ~(wavelen > old / lo)
        return torch.where(medium, smoothed, scaled)
    # from_hf refused it already (supported_models.json); here only for configs built by hand
    raise ValueError(f"rope scaling {kind!r} is not supported")


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype  # normalise in float32, like HF, then scale in the input dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, hd = cfg.hidden_size, cfg.head_dim
        self.n_head, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, hd
        self.q_proj = nn.Linear(d, self.n_head * hd, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(d, self.n_kv * hd, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(d, self.n_kv * hd, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(self.n_head * hd, d, bias=cfg.o_bias)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(hd, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(hd, cfg.rms_norm_eps)
        self.qk_norm = cfg.qk_norm
        self.window = cfg.sliding_window

    def qkv(self, x, cos, sin):
        """q [B, H, T, hd], k/v [B, KV, T, hd], RoPE applied."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim)
        k = self.k_proj(x).view(B, T, self.n_kv, self.head_dim)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        if self.qk_norm:
            # full fine-tune under autocast: float32 norm weights promote bf16 q/k to float32.
            # Cast back, as SDPA's autocast would; FlexAttention wants one dtype for q, k and v.
            q, k = self.q_norm(q).to(v.dtype), self.k_norm(k).to(v.dtype)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # [B, heads, T, head_dim]
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        return q, k, v

    def out(self, y: torch.Tensor) -> torch.Tensor:
        B, _, T, _ = y.shape
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))

    def forward(self, x, cos, sin, docs: attention.Docs | None):
        return self.out(attention.attend(*self.qkv(x, cos, sin), docs, self.window))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, f, b = cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias
        self.gate_proj, self.up_proj = nn.Linear(d, f, bias=b), nn.Linear(d, f, bias=b)
        self.down_proj = nn.Linear(f, d, bias=b)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    # The two halves around attention, what torch.compile fuses (compile_blocks); attention itself
    # runs between them, eager: its kernel is one call, and a packed row's document lengths vary.
    def pre(self, x, cos, sin):
        return self.self_attn.qkv(self.input_layernorm(x), cos, sin)

    def post(self, x, y):
        x = x + self.self_attn.out(y)
        return x + self.mlp(self.post_attention_layernorm(x))

    def forward(self, x, cos, sin, docs: attention.Docs | None):
        q, k, v = _run(self, "pre", x, cos, sin)
        y = attention.attend(q, k, v, docs, self.self_attn.window)
        if getattr(self, "compiled", None) is not None:
            torch._dynamo.maybe_mark_dynamic(y, 2)  # [B, H, T, hd]: any length, one graph
        return _run(self, "post", x, y)


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.model = Decoder(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.inv_freq = rope_inv_freq(cfg)  # plain attribute: stays float32 whatever .to(dtype) does
        # activation checkpointing of every k-th block (0: none, 1: all), the memory plan's choice
        # (batching.py) before out-of-memory errors raise it
        self.checkpoint_every = 0
        self.compiled: Compiled | None = None  # compile_blocks

    @property
    def checkpointing(self) -> bool:
        """Every block checkpointed (the last resort before out_of_memory)."""
        return self.checkpoint_every == 1

    @checkpointing.setter
    def checkpointing(self, on: bool) -> None:
        self.checkpoint_every = 1 if on else 0

    def rope(self, pos: torch.Tensor, dtype: torch.dtype):
        if self.inv_freq.device != pos.device:
            self.inv_freq = self.inv_freq.to(pos.device)
        freqs = pos[..., None].float() * self.inv_freq  # [B, T, head_dim/2], float32 like HF
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def forward(
        self, tokens: torch.Tensor, pos: torch.Tensor | None = None, doc: torch.Tensor | list[int] | None = None
    ) -> torch.Tensor:
        """Final hidden states [B, T, hidden] (after the last norm, before lm_head).

        `doc`: None when each row is one document; the lengths of the documents laid end to end in
        a single row (B = 1: what data.collate gives); or a [B, T] tensor of document ids, whose
        rows are then laid end to end as one row for attention (the same result)."""
        return self.features(tokens, pos, doc)[0]

    def features(
        self,
        tokens: torch.Tensor,
        pos: torch.Tensor | None = None,
        doc: torch.Tensor | list[int] | None = None,
        capture: tuple[int, ...] = (),
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`forward`'s final hidden states, and the residual stream entering each layer in `capture`
        ([B, T, hidden] each, in `capture`'s order; index i is HF's `hidden_states[i]`): the
        features an EAGLE-3 drafter reads (drafter.py)."""
        B, T = tokens.shape
        if pos is None:
            pos = torch.arange(T, device=tokens.device).expand(B, T)
        lengths = None
        if doc is not None:
            lengths = doc if isinstance(doc, list) else attention.doc_lengths(doc)
            tokens, pos = tokens.reshape(1, B * T), pos.reshape(1, B * T)
        x = self.model.embed_tokens(tokens)
        dtype = autocast_dtype(x.device.type) or x.dtype  # cos/sin in the compute dtype, as HF does
        cos, sin = self.rope(pos, dtype)
        docs = attention.pack_layout(lengths, self.config.sliding_window, x.device, dtype) if lengths else None
        if self.compiled is not None:  # one graph whatever the length: no recompile per micro-batch
            for t in (x, cos, sin):
                torch._dynamo.maybe_mark_dynamic(t, 1)
        k = self.checkpoint_every if self.training else 0
        entering: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.model.layers):
            if i in capture:
                entering[i] = x
            if k and i % k == 0:
                x = torch.utils.checkpoint.checkpoint(block, x, cos, sin, docs, use_reentrant=False)
            else:
                x = block(x, cos, sin, docs)
        return self.model.norm(x).view(B, T, -1), [entering[i].view(B, T, -1) for i in capture]

    def logits(self, tokens, pos=None, doc=None) -> torch.Tensor:
        return self.lm_head(self(tokens, pos, doc)).float()


def _run(block: Block, half: str, *args):
    compiled = getattr(block, "compiled", None)
    return compiled(block, half, *args) if compiled is not None else getattr(block, half)(*args)


def _pre(block: Block, x, cos, sin):
    return block.pre(x, cos, sin)


def _post(block: Block, x, y):
    return block.post(x, y)


class Compiled:
    """The two halves of a block under torch.compile, one function shared by every block (so one
    graph per shape family, not one per layer). A failure to compile is never silent: the first one
    is reported (a `warn` log line) and the model runs eager from then on."""

    def __init__(self, backend):
        self.fns = {"pre": torch.compile(_pre, backend=backend), "post": torch.compile(_post, backend=backend)}
        self.failed: str | None = None

    def __call__(self, block: Block, half: str, *args):
        if self.failed is None:
            try:
                return self.fns[half](block, *args)
            except Exception as e:  # noqa: BLE001 - any compiler error; out of memory is the caller's
                if is_oom(e):
                    raise
                self.failed = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
                log(f"torch.compile failed, training continues without it (slower): {self.failed}", "warn")
        return getattr(block, half)(*args)


def compile_blocks(model: LlamaForCausalLM, backend="inductor") -> bool:
    """torch.compile the decoder blocks' halves around attention (names unchanged); False where
    unavailable. Per block, not the whole model: one small graph reused by every layer compiles
    fast and leaves attention, the chunked loss and the Python step loop alone. Compiling happens
    lazily, at the first step; recompiles and graph breaks are counted (compile_stats)."""
    if not hasattr(torch, "compile") or not hasattr(torch._dynamo, "maybe_mark_dynamic"):  # torch < 2.2
        return False
    cfg = torch._dynamo.config
    cfg.suppress_errors = False  # a compiler failure reaches Compiled, which reports it
    n = 8 * len(model.model.layers)  # train/eval, checkpointed or not, per half
    cfg.cache_size_limit = max(cfg.cache_size_limit, n)
    if hasattr(cfg, "accumulated_cache_size_limit"):
        cfg.accumulated_cache_size_limit = max(cfg.accumulated_cache_size_limit, n)
    model.compiled = Compiled(backend)
    for block in model.model.layers:
        object.__setattr__(block, "compiled", model.compiled)  # a plain attribute, not a submodule
    return True


def compile_stats() -> dict[str, int]:
    """Graphs compiled and graph breaks so far in this process (torch._dynamo's counters)."""
    from torch._dynamo.utils import counters

    return {"graphs": int(counters["stats"]["unique_graphs"]), "graph_breaks": sum(counters["graph_break"].values())}


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast computes in on this device type, or None when autocast is off there."""
    if hasattr(torch, "get_autocast_dtype"):  # torch ≥ 2.4: one call for every device type
        return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    if device_type == "cuda":
        return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None
    if device_type == "cpu":
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
    return None


def init_weights(model: LlamaForCausalLM, seed: int, std: float = 0.02) -> None:
    """Uniform(±std·√3) matrices, zero biases, unit norms, from Python's Mersenne Twister, whose
    sequence is fixed across platforms and versions, so a seed gives the same bytes everywhere."""
    import random

    rng, a = random.Random(seed), std * math.sqrt(3.0)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                vals = [(2.0 * rng.random() - 1.0) * a for _ in range(p.numel())]
                p.copy_(torch.tensor(vals, dtype=torch.float64).view(p.shape))
