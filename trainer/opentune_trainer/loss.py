"""Cross-entropy + token accuracy straight from hidden states, without the full logits tensor.

`linear_cross_entropy(h, W, targets)` takes only the loss-token rows of the final hidden states
(the caller gathers them, so prompt tokens never reach the lm_head) and walks them in chunks:
each chunk's logits live only inside this function. The gradient with respect to h (and W, when
W trains) is computed during the forward pass (softmax − one-hot), the Liger/Apple-CCE trick,
so backward is one scale. Returns (Σ CE, number of argmax hits): the exact step metrics.
"""

from __future__ import annotations

import torch

CHUNK_ELEMENTS = 2**27  # logits per chunk: 512 MiB of float32 (e.g. 1024 rows at vocab 128k)


def _chunks(n_rows: int, vocab: int):
    step = max(1, CHUNK_ELEMENTS // vocab)
    return range(0, n_rows, step), step


class _LinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, w, targets, need_h: bool, need_w: bool):
        loss = torch.zeros((), dtype=torch.float32, device=h.device)
        correct = torch.zeros((), dtype=torch.long, device=h.device)
        gh = torch.empty_like(h) if need_h else None
        gw = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if need_w else None
        starts, step = _chunks(h.shape[0], w.shape[0])
        for s in starts:
            hc, t = h[s : s + step], targets[s : s + step]
            logits = (hc @ w.to(hc.dtype).t()).float()
            lse = torch.logsumexp(logits, dim=-1)
            loss += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
            correct += (logits.argmax(dim=-1) == t).sum()
            if need_h or need_w:
                g = torch.exp(logits - lse[:, None])  # d(Σ CE)/d logits = softmax − one-hot
                g[torch.arange(t.shape[0], device=t.device), t] -= 1.0
                if need_h:
                    gh[s : s + step] = (g.to(hc.dtype) @ w.to(hc.dtype)).to(h.dtype)
                if need_w:
                    gw += g.t() @ hc.float()
        ctx.save_for_backward(gh, gw)
        ctx.mark_non_differentiable(correct)
        ctx.w_dtype = w.dtype
        return loss, correct

    @staticmethod
    def backward(ctx, grad_loss, _grad_correct):
        gh, gw = ctx.saved_tensors
        # scale in float32: grad_loss is 1/n_loss, and rounding it to bf16 biased every gradient
        dh = (gh.float() * grad_loss).to(gh.dtype) if gh is not None else None
        dw = (gw * grad_loss).to(ctx.w_dtype) if gw is not None else None
        return dh, dw, None, None, None


def linear_cross_entropy(h: torch.Tensor, w: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """h [N, D] loss-token hidden states, w [V, D] lm_head, targets [N] → (Σ CE, #correct)."""
    need_h, need_w = h.requires_grad, w.requires_grad
    if torch.is_grad_enabled() and (need_h or need_w):
        return _LinearCE.apply(h, w, targets, need_h, need_w)
    with torch.no_grad():
        return _LinearCE.forward(_NoCtx(), h, w, targets, False, False)


class _NoCtx:
    def save_for_backward(self, *a):
        pass

    def mark_non_differentiable(self, *a):
        pass
