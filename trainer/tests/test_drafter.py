"""The EAGLE-3 drafter (drafter.py) against references written here, on a tiny random target (CPU):

    cd trainer && python3 -m pytest -q tests/test_drafter.py

- the captured features are transformers' `output_hidden_states` at (2, 4, 5), packed rows too;
- `ttt_forward` at step k and position t equals a naive chain run one position at a time, and
  nothing after t+1+k nor in another document changes it;
- the losses: KL 0 and α 1 where they must be, lk_alpha = -log α, lk_hybrid's λ with no gradient
  through it, float32 for bf16 inputs, positions whose target argmax is outside the draft
  vocabulary left out;
- the draft vocabulary and d2t/t2d;
- overfitting one packed batch drives step-0 agreement to ≈ 1 with each loss;
- the files hold exactly the tensors vLLM's and SGLang's loaders build for this config, and
  load_drafter reads them back.

The references use the drafter's weights by name (the file contract) and none of its methods.
"""

import json
import math
import os

import pytest
import torch
import torch.nn.functional as F

from opentune_trainer import checkpoint, drafter
from opentune_trainer.model import LlamaForCausalLM, ModelConfig, init_weights

V, H, L, HEADS, KV, HD, FF, VD = 512, 64, 8, 4, 2, 16, 128, 128
TARGET = dict(
    model_type="llama",
    architectures=["LlamaForCausalLM"],
    vocab_size=V,
    hidden_size=H,
    intermediate_size=FF,
    num_hidden_layers=L,
    num_attention_heads=HEADS,
    num_key_value_heads=KV,
    head_dim=HD,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    rope_theta=10000.0,
    tie_word_embeddings=False,
)
LENGTHS = (7, 11, 9)  # a packed row of three documents


def target_config(**over) -> ModelConfig:
    return ModelConfig.from_hf({**TARGET, **over})


def random_drafter(seed: int, used: torch.Tensor | None = None, **over) -> drafter.Eagle3Drafter:
    """A drafter with random weights everywhere, norms included (so a mix-up of norms shows)."""
    g = torch.Generator().manual_seed(seed)
    if used is None:
        used = torch.sort(torch.randperm(V, generator=g)[:VD]).values
    d = drafter.Eagle3Drafter(target_config(**over), used)
    drafter.init_drafter(d, torch.randn(V, H, generator=g), seed)
    with torch.no_grad():
        for n, p in d.named_parameters():
            if n.endswith("norm.weight"):
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    return d


def packed_row(seed: int, lengths=LENGTHS):
    g = torch.Generator().manual_seed(seed)
    N = sum(lengths)
    tokens = torch.randint(0, V, (N,), generator=g)
    aux = torch.randn(N, 3 * H, generator=g)
    pos = torch.cat([torch.arange(n) for n in lengths])
    doc = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    return aux, tokens, pos, doc


# ------------------------------------------------------------------------ 1. captured features
def test_features_are_the_hidden_states_transformers_outputs(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = {k: v for k, v in TARGET.items() if k not in ("model_type", "architectures")}
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg)).float()
    with torch.no_grad():  # non-unit norms, so a feature taken after a norm would differ
        for n, p in hf.named_parameters():
            if n.endswith("norm.weight"):
                p.add_(0.2 * torch.randn_like(p))
    hf.save_pretrained(str(tmp_path))
    hf.eval()
    ours = checkpoint.load_model(str(tmp_path), "cpu", torch.float32).eval()
    layers = drafter.aux_layers(L)
    assert layers == (2, 4, 5)
    g = torch.Generator().manual_seed(1)
    a, b = torch.randint(0, V, (1, 20), generator=g), torch.randint(0, V, (1, 30), generator=g)
    with torch.no_grad():
        alone = {}
        for name, x in (("a", a), ("b", b)):
            ref = hf(input_ids=x, output_hidden_states=True)
            h, feats = ours.features(x, capture=layers)
            assert len(feats) == 3
            for i, f in zip(layers, feats, strict=True):
                torch.testing.assert_close(f, ref.hidden_states[i], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(ours.lm_head(h), ref.logits, rtol=1e-5, atol=1e-5)
            alone[name] = [ref.hidden_states[i] for i in layers]
        row = torch.cat([a, b], 1)
        pos = torch.cat([torch.arange(20), torch.arange(30)])[None]
        ids = torch.cat([torch.zeros(20), torch.ones(30)]).long()[None]
        for doc in (ids, [20, 30]):  # document ids or lengths (what data.collate gives)
            _, feats = ours.features(row, pos, doc, capture=layers)
            for f, ra, rb in zip(feats, alone["a"], alone["b"], strict=True):
                torch.testing.assert_close(f[:, :20], ra, rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(f[:, 20:], rb, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------ 2. training-time test
def _rms(x, w, eps=1e-6):
    return w * x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)


def _rotate(x, p):
    """HF's rotate_half RoPE of x [heads, HD] at position p (angles in float32, as HF)."""
    inv = 1.0 / (10000.0 ** (torch.arange(0, HD, 2).float() / HD))
    ang = torch.cat([p * inv, p * inv]).double()
    x1, x2 = x[:, : HD // 2], x[:, HD // 2 :]
    return x * ang.cos() + torch.cat([-x2, x1], -1) * ang.sin()


def naive_chain(d, aux, tokens, pos, doc, t: int, k: int) -> torch.Tensor:
    """Draft logits of step k at position t, computed one position at a time in float64: step 0
    over t's document up to t (each key from its own position's features and next token), then
    the chain at t alone, each step's query over the step-0 keys plus the chain's own keys."""
    W = {n: p.detach().double() for n, p in d.named_parameters()}
    m = "midlayer."
    N = len(tokens)

    def qkv(j_token: int, h, p):
        e = W["embed_tokens.weight"][tokens[j_token] if j_token < N else 0]
        x = torch.cat([_rms(e, W[m + "input_layernorm.weight"]), _rms(h, W[m + "hidden_norm.weight"])])
        q = (W[m + "self_attn.q_proj.weight"] @ x).view(HEADS, HD)
        key = (W[m + "self_attn.k_proj.weight"] @ x).view(KV, HD)
        value = (W[m + "self_attn.v_proj.weight"] @ x).view(KV, HD)
        return _rotate(q, p), _rotate(key, p), value

    def layer(h, q, keys, values):
        ys = []
        for head in range(HEADS):
            kv = head // (HEADS // KV)
            scores = torch.stack([key[kv] @ q[head] for key in keys]) / math.sqrt(HD)
            w = torch.softmax(scores, 0)
            ys.append(sum(wi * v[kv] for wi, v in zip(w, values, strict=True)))
        x = h + W[m + "self_attn.o_proj.weight"] @ torch.cat(ys)
        z = _rms(x, W[m + "post_attention_layernorm.weight"])
        gate, up = W[m + "mlp.gate_proj.weight"] @ z, W[m + "mlp.up_proj.weight"] @ z
        return x + W[m + "mlp.down_proj.weight"] @ (F.silu(gate) * up)

    start = int((doc == doc[t]).nonzero()[0])
    keys, values = [], []
    for j in range(start, t + 1):
        _, key, value = qkv(j + 1, W["fc.weight"] @ aux[j].double(), float(pos[j]))
        keys.append(key)
        values.append(value)
    h = W["fc.weight"] @ aux[t].double()
    q, _, _ = qkv(t + 1, h, float(pos[t]))
    h = layer(h, q, keys, values)
    for step in range(1, k + 1):
        q, key, value = qkv(t + 1 + step, h, float(pos[t] + step))
        keys.append(key)
        values.append(value)
        h = layer(h, q, keys, values)
    return W["lm_head.weight"] @ _rms(h, W["norm.weight"])


def test_ttt_logits_equal_a_naive_chain_position_by_position():
    K = 4
    for seed, lengths in ((0, LENGTHS), (1, (13, 12))):
        d = random_drafter(seed)
        aux, tokens, pos, doc = packed_row(seed, lengths)
        with torch.no_grad():
            hs = drafter.ttt_forward(d, aux, tokens, pos, doc, K)
        assert len(hs) == K and all(h.shape == (len(tokens), H) for h in hs)
        checked = 0
        for k in range(K):
            logits = d.logits(hs[k]).double()
            for t in range(len(tokens) - 1 - k):  # every position whose input token is in the row
                torch.testing.assert_close(logits[t], naive_chain(d, aux, tokens, pos, doc, t, k), rtol=1e-4, atol=1e-4)
                checked += 1
        assert checked > 50


def test_ttt_logits_ignore_what_comes_after_and_other_documents():
    """Step k at t reads features ≤ t and tokens ≤ t+1+k of t's document, nothing else."""
    K = 3
    d = random_drafter(2)
    aux, tokens, pos, doc = packed_row(2)
    with torch.no_grad():
        base = [d.logits(h) for h in drafter.ttt_forward(d, aux, tokens, pos, doc, K)]
    g = torch.Generator().manual_seed(3)
    cases = 0
    for k in range(K):
        for t in drafter.step_positions(torch.zeros_like(tokens), doc, k).tolist():  # t+1+k in t's document
            other = doc != doc[t]
            a2, t2 = aux.clone(), tokens.clone()
            a2[t + 1 :] = torch.randn(a2[t + 1 :].shape, generator=g)
            a2[other] = torch.randn(a2[other].shape, generator=g)
            t2[t + 2 + k :] = torch.randint(0, V, t2[t + 2 + k :].shape, generator=g)
            t2[other] = torch.randint(0, V, t2[other].shape, generator=g)
            with torch.no_grad():
                after = d.logits(drafter.ttt_forward(d, a2, t2, pos, doc, K)[k])
            torch.testing.assert_close(after[t], base[k][t], rtol=1e-5, atol=1e-5)
            t3 = tokens.clone()  # …while the token it is given does change it (the test can see)
            t3[t + 1 + k] = (t3[t + 1 + k] + 1) % V
            with torch.no_grad():
                changed = d.logits(drafter.ttt_forward(d, aux, t3, pos, doc, K)[k])
            assert (changed[t] - base[k][t]).abs().max() > 1e-3
            cases += 1
    assert cases == sum(n - 1 - k for n in LENGTHS for k in range(K))


def test_step_positions_stay_inside_the_document_and_the_trained_tokens():
    _, tokens, _, doc = packed_row(0)
    targets = tokens.clone()
    targets[[0, 9, 20]] = -100
    for k in range(4):
        got = drafter.step_positions(targets, doc, k).tolist()
        want = [t for t in range(len(tokens) - 1 - k) if targets[t + 1 + k] != -100 and doc[t + 1 + k] == doc[t]]
        assert got == want


# ------------------------------------------------------------------------ 3. losses
def loss_case(seed: int, M: int = 48, outside: int = 6, mass_inside: bool = False):
    """Target logits z [M, V] whose argmax is in the draft vocabulary except for `outside` rows,
    the drafter (for d2t/t2d), the target's log-probabilities on the draft vocabulary (not
    renormalised) and its argmax."""
    g = torch.Generator().manual_seed(seed)
    d = random_drafter(seed)
    used = d.used
    rest = torch.tensor([i for i in range(V) if i not in set(used.tolist())])
    z = torch.randn(M, V, generator=g) * 2
    for i in range(M):  # the argmax: a draftable token, or not for the first `outside` rows
        ids = rest if i < outside else used
        z[i, ids[torch.randint(0, len(ids), (1,), generator=g)]] = z[i].max() + 1.0
    if mass_inside:
        z[:, rest] = float("-inf")
    logp = torch.log_softmax(z, -1)[:, used]
    return d, z, logp, z.argmax(-1)


def naive_terms(draft_logits, z, used):
    """Per position: forward KL(p̂ ‖ q), p̂ the target renormalised on the draft vocabulary, and
    α = Σ_v min(p_v, q_v) with p not renormalised."""
    p = torch.softmax(z.double(), -1)[:, used]
    p_hat = p / p.sum(-1, keepdim=True)
    q = torch.softmax(draft_logits.double(), -1)
    kl = (p_hat * (torch.log(p_hat.clamp_min(1e-300)) - torch.log(q))).sum(-1)
    return kl, torch.minimum(p, q).sum(-1)


def test_kl_is_zero_when_the_draft_is_the_target_renormalised():
    d, z, logp, top = loss_case(0)
    logits = z[:, d.used] + 5.0  # a shift per row changes nothing
    s = drafter.step_loss(logits, logp, top, d, "kl")
    assert s.covered == 42 and s.scored == 48
    assert abs(float(s.loss)) < 1e-4
    other = torch.randn(logits.shape, generator=torch.Generator().manual_seed(9))
    kl, _ = naive_terms(other, z, d.used)
    s = drafter.step_loss(other, logp, top, d, "kl")
    assert float(s.loss) > 1.0
    assert float(s.loss) == pytest.approx(float(kl[6:].sum()), rel=1e-5)


def test_alpha_is_one_when_the_target_lives_in_the_draft_vocabulary_and_q_equals_p():
    d, z, logp, top = loss_case(1, outside=0, mass_inside=True)
    logits = z[:, d.used]
    for loss_type in drafter.LOSS_TYPES:
        s = drafter.step_loss(logits, logp, top, d, loss_type)
        assert s.covered == 48
        assert float(s.alpha) / s.covered == pytest.approx(1.0, abs=1e-5)
        assert abs(float(s.loss)) < 1e-4  # -log 1, and λ·0 + (1-λ)·0
        assert float(s.correct) == 48


def test_lk_alpha_is_minus_log_alpha_with_the_target_not_renormalised():
    d, z, logp, top = loss_case(2)
    logits = torch.randn(z.shape[0], VD, generator=torch.Generator().manual_seed(4)) * 3
    _, alpha = naive_terms(logits, z, d.used)
    s = drafter.step_loss(logits, logp, top, d, "lk_alpha")
    assert float(s.loss) == pytest.approx(float(-torch.log(alpha[6:]).sum()), rel=1e-5)
    assert float(s.alpha) == pytest.approx(float(alpha[6:].sum()), rel=1e-5)
    # the target keeps mass outside the draft vocabulary: α is below the renormalised Σ min(p̂, q)
    p = torch.softmax(z.double(), -1)[:, d.used]
    renormalised = torch.minimum(p / p.sum(-1, keepdim=True), torch.softmax(logits.double(), -1)).sum(-1)
    assert float(s.alpha) < float(renormalised[6:].sum()) - 0.1


def test_lk_hybrid_is_the_lambda_mix_with_no_gradient_through_lambda():
    d, z, logp, top = loss_case(3)
    base = torch.randn(z.shape[0], VD, generator=torch.Generator().manual_seed(5)) * 2
    ours = base.clone().requires_grad_(True)
    s = drafter.step_loss(ours, logp, top, d, "lk_hybrid")
    s.loss.backward()

    def reference(detach: bool):
        x = base.clone().double().requires_grad_(True)
        kl, alpha = naive_terms(x, z, d.used)
        lam = torch.exp(-3.0 * (alpha.detach() if detach else alpha))
        per = lam * kl + (1 - lam) * (1 - alpha)
        per[6:].sum().backward()
        return per[6:].sum().detach(), x.grad

    value, grad = reference(detach=True)
    assert float(s.loss.detach()) == pytest.approx(float(value), rel=1e-5)
    torch.testing.assert_close(ours.grad.double(), grad, rtol=1e-4, atol=1e-6)
    _, through = reference(detach=False)  # a gradient through λ would be told apart
    assert (through - grad).abs().max() > 1e-3
    assert torch.all(ours.grad[:6] == 0)  # positions whose target argmax is not draftable


def test_positions_outside_the_draft_vocabulary_are_left_out():
    d, z, logp, top = loss_case(4)
    logits = torch.randn(z.shape[0], VD, generator=torch.Generator().manual_seed(6))
    other = logits.clone()
    other[:6] = torch.randn(6, VD) * 10  # rows whose target argmax is not draftable
    for loss_type in drafter.LOSS_TYPES:
        a = drafter.step_loss(logits, logp, top, d, loss_type)
        b = drafter.step_loss(other, logp, top, d, loss_type)
        c = drafter.step_loss(logits[6:], logp[6:], top[6:], d, loss_type)
        assert (a.covered, a.scored, c.covered) == (42, 48, 42)
        for x in (b, c):
            assert float(x.loss) == pytest.approx(float(a.loss), rel=1e-6)
            assert float(x.alpha) == pytest.approx(float(a.alpha), rel=1e-6)
            assert float(x.correct) == float(a.correct)
    agree = (d.used[logits.argmax(-1)] == top)[6:].sum()
    assert float(a.correct) == float(agree)
    none = drafter.step_loss(logits[:6], logp[:6], top[:6], d, "kl")
    assert (none.covered, none.scored, float(none.loss)) == (0, 6, 0.0)


@pytest.mark.parametrize("loss_type", drafter.LOSS_TYPES)
def test_losses_have_finite_gradients_even_far_from_the_target(loss_type):
    d, z, logp, top = loss_case(5)
    for scale in (1.0, 1e3):  # 1e3: α near 0, lk_alpha at its floor
        x = (torch.randn(z.shape[0], VD, generator=torch.Generator().manual_seed(8)) * scale).requires_grad_(True)
        s = drafter.step_loss(x, logp, top, d, loss_type)
        s.loss.backward()
        assert torch.isfinite(s.loss) and torch.isfinite(x.grad).all()
        assert x.grad[6:].abs().sum() > 0


@pytest.mark.parametrize("loss_type", drafter.LOSS_TYPES)
def test_losses_are_float32_for_bf16_inputs(loss_type):
    """bf16 draft logits and target log-probabilities: the loss is that of their float32 values."""
    d, z, logp, top = loss_case(5)
    logits = torch.randn(z.shape[0], VD, generator=torch.Generator().manual_seed(7)).bfloat16()
    wide = drafter.step_loss(logits.float(), logp.bfloat16().float(), top, d, loss_type)
    s = drafter.step_loss(logits, logp.bfloat16(), top, d, loss_type)
    assert s.loss.dtype == torch.float32 and s.alpha.dtype == torch.float32
    assert float(s.loss) == pytest.approx(float(wide.loss), rel=1e-6)
    assert float(s.alpha) == pytest.approx(float(wide.alpha), rel=1e-6)


# ------------------------------------------------------------------------ 4. draft vocabulary
def test_draft_vocabulary_is_the_most_frequent_trained_tokens_and_d2t_t2d_agree():
    g = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 300, (4000,), generator=g)
    targets[torch.randint(0, 4000, (1500,), generator=g)] = -100
    targets[:40] = 7  # ties and a count that -100s would change if they were counted
    counts: dict[int, int] = {}
    for y in targets.tolist():
        if y != -100:
            counts[y] = counts.get(y, 0) + 1
    ranked = sorted(range(V), key=lambda i: (-counts.get(i, 0), i))  # ties: lower id first
    for size in (VD, 299, 400):  # 400 > the 300 ids that occur: unseen ids by id
        used = drafter.draft_vocabulary(targets, V, size)
        assert used.tolist() == sorted(ranked[:size])
    used = drafter.draft_vocabulary(targets, V, VD)
    d = drafter.Eagle3Drafter(target_config(), used)
    assert d.d2t.dtype == torch.int64 and d.d2t.shape == (VD,)
    assert d.t2d.dtype == torch.bool and d.t2d.shape == (V,)
    assert int(d.t2d.sum()) == VD
    assert bool(d.t2d[torch.arange(VD) + d.d2t].all())
    assert (torch.arange(VD) + d.d2t).tolist() == used.tolist()  # target id = draft id + d2t[draft id]
    assert d.t2d.nonzero().view(-1).tolist() == used.tolist()
    assert drafter.draft_vocabulary(torch.tensor([5, 5, 3, -100, -100, -100]), 8, 2).tolist() == [3, 5]


# ------------------------------------------------------------------------ 5. overfitting one batch
@pytest.fixture(scope="module")
def greedy_batch():
    """A frozen random target (weights large enough that its distribution is peaked) and one
    packed row of three documents it wrote itself (greedy), trained after a 4-token prompt."""
    target = LlamaForCausalLM(target_config()).eval()
    init_weights(target, seed=3, std=0.2)
    with torch.no_grad():
        target.lm_head.weight.mul_(4.0)
    g = torch.Generator().manual_seed(0)
    docs = []
    with torch.no_grad():
        for n in (20, 24, 18):
            x = torch.randint(0, V, (1, 4), generator=g)
            while x.shape[1] < n:
                x = torch.cat([x, target.logits(x)[:, -1:].argmax(-1)], 1)
            docs.append(x[0])
    lengths = [len(x) for x in docs]
    tokens = torch.cat(docs)
    pos = torch.cat([torch.arange(n) for n in lengths])
    doc = torch.repeat_interleave(torch.arange(3), torch.tensor(lengths))
    targets = torch.full_like(tokens, -100)  # pre-shifted: targets[i] = tokens[i+1] where trained
    start = 0
    for n in lengths:
        targets[start + 3 : start + n - 1] = tokens[start + 4 : start + n]
        start += n
    with torch.no_grad():
        h, aux = target.features(tokens[None], pos[None], lengths, capture=drafter.aux_layers(L))
    return target, torch.cat(aux, -1)[0], h[0], tokens, pos, doc, targets


def _steps(d, target, aux, h, tokens, pos, doc, targets, K, loss_type):
    hs = drafter.ttt_forward(d, aux, tokens, pos, doc, K)
    total, parts = 0.0, []
    for k, hk in enumerate(hs):
        t = drafter.step_positions(targets, doc, k)
        logp, top = drafter.target_distribution(h[t + 1 + k], target.lm_head.weight, d.used)
        p = drafter.step_loss(d.logits(hk[t]), logp, top, d, loss_type)
        total = total + drafter.STEP_WEIGHT**k * p.loss / max(p.covered, 1)
        parts.append(p)
    return total, parts


@pytest.mark.parametrize("loss_type", drafter.LOSS_TYPES)
def test_overfitting_one_batch_drives_step0_agreement_to_one(greedy_batch, loss_type):
    target, aux, h, tokens, pos, doc, targets = greedy_batch
    used = drafter.draft_vocabulary(targets, V, VD)
    d = drafter.Eagle3Drafter(target.config, used)
    drafter.init_drafter(d, target.model.embed_tokens.weight.detach(), seed=0)
    opt = torch.optim.Adam([p for p in d.parameters() if p.requires_grad], lr=1e-2)
    K = 2
    with torch.no_grad():
        _, before = _steps(d, target, aux, h, tokens, pos, doc, targets, K, loss_type)
    for _ in range(150):
        loss, _ = _steps(d, target, aux, h, tokens, pos, doc, targets, K, loss_type)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        _, after = _steps(d, target, aux, h, tokens, pos, doc, targets, K, loss_type)
    assert after[0].covered == after[0].scored > 40  # the target's argmax is a trained token here
    assert float(after[0].correct) / after[0].covered >= 0.95
    a0, a1 = float(before[0].alpha) / before[0].covered, float(after[0].alpha) / after[0].covered
    assert a1 > a0 + 0.3, (a0, a1)
    assert torch.equal(d.embed_tokens.weight, target.model.embed_tokens.weight)  # frozen


# ------------------------------------------------------------------------ 6. files
# What vLLM's loader builds for this config: vllm-project/vllm
# vllm/model_executor/models/llama_eagle3.py at 00bd1493b3e82d6c13c68ee8a0e1c5a96707e190.
# Eagle3LlamaForCausalLM.load_weights skips names containing "t2d", renames "d2t" to
# draft_id_to_target_id, prefixes every other name but lm_head's with "model.";
# LlamaModel.load_weights renames "midlayer." to "layers.0." and loads q/k/v into the stacked
# qkv_proj (QKVParallelLinear(2·hidden, head_dim, heads, kv_heads)) and gate/up into gate_up_proj;
# any other name is refused (params_dict[name], AutoWeightsLoader). fc is
# ReplicatedLinear(3·target_hidden_size → hidden); lm_head ParallelLMHead(draft_vocab_size, hidden);
# embed_tokens is skipped when absent (the target's is used).
# Shapes are [out, in] per shard, for hidden 64, 4 heads of 16, 2 kv heads, intermediate 128.
VLLM_PARAMS = {
    "model.fc.weight": {None: (64, 192)},
    "model.layers.0.self_attn.qkv_proj.weight": {"q": (64, 128), "k": (32, 128), "v": (32, 128)},
    "model.layers.0.self_attn.o_proj.weight": {None: (64, 64)},
    "model.layers.0.mlp.gate_up_proj.weight": {0: (128, 64), 1: (128, 64)},
    "model.layers.0.mlp.down_proj.weight": {None: (64, 128)},
    "model.layers.0.input_layernorm.weight": {None: (64,)},
    "model.layers.0.hidden_norm.weight": {None: (64,)},
    "model.layers.0.post_attention_layernorm.weight": {None: (64,)},
    "model.norm.weight": {None: (64,)},
    "lm_head.weight": {None: (128, 64)},
    "draft_id_to_target_id": {None: (128,)},  # torch.long
}
VLLM_STACKED = [
    (".qkv_proj", ".q_proj", "q"),
    (".qkv_proj", ".k_proj", "k"),
    (".qkv_proj", ".v_proj", "v"),
    (".gate_up_proj", ".gate_proj", 0),
    (".gate_up_proj", ".up_proj", 1),
]
# SGLang (sgl-project/sglang python/sglang/srt/models/llama_eagle3.py at
# 03d5a7771f6082e7737a5f19cae7d1e863087013) keeps the midlayer name under "model.", makes
# hot_token_id = d2t + arange, skips t2d, and silently skips names it does not know: each of its
# parameters (embed_tokens aside: set from the target) must be in the file.
SGLANG_PARAMS = {
    "model.fc.weight": {None: (64, 192)},
    "model.midlayer.self_attn.qkv_proj.weight": {"q": (64, 128), "k": (32, 128), "v": (32, 128)},
    "model.midlayer.self_attn.o_proj.weight": {None: (64, 64)},
    "model.midlayer.mlp.gate_up_proj.weight": {0: (128, 64), 1: (128, 64)},
    "model.midlayer.mlp.down_proj.weight": {None: (64, 128)},
    "model.midlayer.input_layernorm.weight": {None: (64,)},
    "model.midlayer.hidden_norm.weight": {None: (64,)},
    "model.midlayer.post_attention_layernorm.weight": {None: (64,)},
    "model.norm.weight": {None: (64,)},
    "lm_head.weight": {None: (128, 64)},
}
EXPECTED_KEYS = {
    "fc.weight": (H, 3 * H),
    "midlayer.self_attn.q_proj.weight": (HEADS * HD, 2 * H),
    "midlayer.self_attn.k_proj.weight": (KV * HD, 2 * H),
    "midlayer.self_attn.v_proj.weight": (KV * HD, 2 * H),
    "midlayer.self_attn.o_proj.weight": (H, HEADS * HD),
    "midlayer.mlp.gate_proj.weight": (FF, H),
    "midlayer.mlp.up_proj.weight": (FF, H),
    "midlayer.mlp.down_proj.weight": (H, FF),
    "midlayer.input_layernorm.weight": (H,),
    "midlayer.hidden_norm.weight": (H,),
    "midlayer.post_attention_layernorm.weight": (H,),
    "norm.weight": (H,),
    "lm_head.weight": (VD, H),
    "d2t": (VD,),
    "t2d": (V,),
}


def read_file(folder):
    """The safetensors file through the safetensors library (not our reader), and config.json."""
    safetensors = pytest.importorskip("safetensors.torch")
    tensors = safetensors.load_file(os.path.join(folder, "model.safetensors"))
    with open(os.path.join(folder, "config.json")) as f:
        return tensors, json.load(f)


def vllm_names(tensors):
    """Checkpoint names → {vLLM parameter: {shard: shape}}, as vLLM's two load_weights map them."""
    out: dict[str, dict] = {}
    for name, t in tensors.items():
        if "t2d" in name:
            continue
        if "d2t" in name:
            name = name.replace("d2t", "draft_id_to_target_id")
        elif "lm_head" not in name:
            name = "model." + name
        name = name.replace("midlayer.", "layers.0.")
        shard = None
        for param, weight, shard_id in VLLM_STACKED:
            if weight in name:
                name, shard = name.replace(weight, param), shard_id
                break
        assert shard not in out.setdefault(name, {}), name
        out[name][shard] = tuple(t.shape)
    return out


def sglang_names(tensors):
    out: dict[str, dict] = {}
    for name, t in tensors.items():
        if "d2t" in name or "t2d" in name:
            continue
        shard = None
        for param, weight, shard_id in VLLM_STACKED:  # SGLang's stacked mapping is the same list
            if weight in name:
                name, shard = name.replace(weight, param), shard_id
                break
        name = name if name == "lm_head.weight" else "model." + name
        out.setdefault(name, {})[shard] = tuple(t.shape)
    return out


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_saved_drafter_is_what_vllm_and_sglang_load(tmp_path, dtype):
    d = random_drafter(0, torch_dtype=dtype)
    files = drafter.save_drafter(str(tmp_path), d, {**TARGET, "eos_token_id": 3})
    assert sorted(files) == ["config.json", "model.safetensors"]
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]
    tensors, cfg = read_file(str(tmp_path))
    assert {k: tuple(t.shape) for k, t in tensors.items()} == EXPECTED_KEYS
    assert tensors["d2t"].dtype == torch.int64 and tensors["t2d"].dtype == torch.bool
    floats = {t.dtype for k, t in tensors.items() if k not in ("d2t", "t2d")}
    assert floats == {getattr(torch, dtype)}
    assert torch.equal(tensors["d2t"] + torch.arange(VD), d.used)
    assert torch.equal(tensors["t2d"], d.t2d)
    for k, t in tensors.items():
        if k not in ("d2t", "t2d"):
            want = dict(d.named_parameters())[k].detach().to(getattr(torch, dtype))
            assert torch.equal(t, want), k

    assert cfg["architectures"] == ["LlamaForCausalLMEagle3"]
    want = {
        "num_hidden_layers": 1,
        "vocab_size": V,
        "draft_vocab_size": VD,
        "tie_word_embeddings": False,
        "hidden_size": H,
        "intermediate_size": FF,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV,
        "head_dim": HD,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "torch_dtype": dtype,
        "eos_token_id": 3,
    }
    assert {k: cfg.get(k) for k in want} == want
    assert cfg.get("target_hidden_size", H) == H
    assert not cfg.get("norm_before_residual", False)  # vLLM's default: the residual is h un-normed
    assert "eagle_config" not in cfg  # no explicit aux-layer ids: SGLang reads them shifted by one

    assert vllm_names(tensors) == VLLM_PARAMS  # every parameter vLLM builds (embed_tokens aside), nothing else
    assert sglang_names(tensors) == SGLANG_PARAMS
    assert torch.equal(tensors["d2t"] + torch.arange(VD), d.used)  # SGLang's hot_token_id

    embed = d.embed_tokens.weight
    back = drafter.load_drafter(str(tmp_path), embed, "cpu", torch.float32)
    assert drafter.is_drafter(str(tmp_path)) and not drafter.is_drafter(str(tmp_path / "none"))
    assert back.embed_tokens.weight.data_ptr() == embed.data_ptr()  # the target's, shared
    assert torch.equal(back.d2t, d.d2t) and torch.equal(back.t2d, d.t2d)
    loaded = dict(back.named_parameters())
    for n, p in d.named_parameters():
        if not n.startswith("embed_tokens."):
            assert torch.equal(loaded[n], p.detach().to(getattr(torch, dtype)).float()), n
    if dtype == "float32":
        aux, tokens, pos, doc = packed_row(0)
        with torch.no_grad():
            a = drafter.ttt_forward(d, aux, tokens, pos, doc, 3)
            b = drafter.ttt_forward(back, aux, tokens, pos, doc, 3)
        for x, y in zip(a, b, strict=True):
            assert torch.equal(d.logits(x), back.logits(y))


def test_load_drafter_takes_the_target_embedding_as_a_plain_tensor(tmp_path):
    """The engine may hand the embedding over cast to its dtype: `.to()` gives a plain tensor."""
    d = random_drafter(1)
    drafter.save_drafter(str(tmp_path), d, TARGET)
    embed = d.embed_tokens.weight.detach().to(torch.float64)
    back = drafter.load_drafter(str(tmp_path), embed, "cpu", torch.float64)
    assert back.embed_tokens.weight.data_ptr() == embed.data_ptr()
    assert not back.embed_tokens.weight.requires_grad


def test_a_drafter_over_a_wider_target_says_so_in_its_config(tmp_path):
    """fc reads 3 × the target's hidden size; vLLM and SGLang size fc by target_hidden_size."""
    g = torch.Generator().manual_seed(0)
    d = drafter.Eagle3Drafter(target_config(), torch.arange(VD), target_hidden=96)
    drafter.init_drafter(d, torch.randn(V, H, generator=g), 0)
    drafter.save_drafter(str(tmp_path), d, TARGET)
    tensors, cfg = read_file(str(tmp_path))
    assert tuple(tensors["fc.weight"].shape) == (H, 3 * cfg["target_hidden_size"]) == (64, 288)
    back = drafter.load_drafter(str(tmp_path), d.embed_tokens.weight, "cpu", torch.float32)
    assert torch.equal(back.fc.weight, d.fc.weight)


def test_the_drafter_is_a_plain_llama_layer_whatever_the_target_adds(tmp_path):
    """A Llama target with attention and MLP biases, or a Qwen3 one with q/k norms, still gets the
    bias-free, norm-free layer config.json describes: vLLM refuses keys it does not build."""
    for over in ({"attention_bias": True, "mlp_bias": True}, {"model_type": "qwen3"}):
        cfg = target_config(**over)
        assert cfg.mlp_bias or cfg.qk_norm  # the target has them
        d = random_drafter(0, **over)
        names = set(drafter.drafter_tensors(d, torch.float32))
        assert not any(n.endswith(".bias") or "q_norm" in n or "k_norm" in n for n in names), names
        drafter.save_drafter(str(tmp_path / "d"), d, {})
        cfg = json.load(open(tmp_path / "d" / "config.json"))
        assert cfg["attention_bias"] is False and cfg["mlp_bias"] is False


def test_rope_scaling_is_written_as_vllm_reads_it():
    """transformers ≥ 5 folds the rope settings into `rope_parameters` (theta inside): the drafter's
    config.json writes null for plain RoPE and the scaling without theta otherwise."""
    plain = target_config(rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    assert drafter.rope_scaling(plain) is None
    llama3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}
    scaled = target_config(rope_scaling={**llama3, "original_max_position_embeddings": 64, "rope_theta": 5e5})
    assert drafter.rope_scaling(scaled) == {**llama3, "original_max_position_embeddings": 64}
