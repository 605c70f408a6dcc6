"""
The two baselines an FLM is measured against, on flm.py's transformer (its blocks, rotary
positions and output layer), on token ids and with no time input:

  AR    an autoregressive model: causal attention, trained on next-token cross-entropy,
        sampled left to right with a KV cache. It is nanoGPT's model at the same width and
        depth, and is also the judge of generated character text (tools/judge.py).
  MDLM  masked diffusion (Sahoo et al., 2024): each position is replaced by a mask token
        with probability t ~ U(0, 1) (t = 1: all masks), and the model predicts the masked
        tokens; sampled from t = 1 to 0 by unmasking.

Both read K + 1 input ids: id K is AR's start token (so that the first token has a
probability too) and MDLM's mask. Both output logits over the K real tokens.
No time input: each block's adaLN gets a constant, so its shift, scale and gate are plain
learned per-channel parameters (nanoGPT's LayerNorm affine, plus a residual gate).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

import flm

KINDS = ('ar', 'mdlm')


class CausalSelfAttention(flm.SelfAttention):
    """flm's attention made causal, with an optional KV cache for generation.
    While a cache is on (start_cache), each call appends its keys and values and attends to
    everything cached so far: the first call may hold many tokens (a prefill), later ones one."""

    k_cache = v_cache = None
    cached = 0

    def forward(self, x, cos, sin):
        B, L, C = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        pos = self.cached  # rotary angles of the absolute positions pos .. pos + L - 1
        q, k = flm.apply_rotary(q, cos[pos:], sin[pos:]), flm.apply_rotary(k, cos[pos:], sin[pos:])
        if self.k_cache is not None:
            assert pos == 0 or L == 1, "after the prefill, the cache takes one token at a time"
            self.k_cache[:, :, pos:pos + L], self.v_cache[:, :, pos:pos + L] = k, v
            self.cached = pos + L
            k, v = self.k_cache[:, :, :pos + L], self.v_cache[:, :, :pos + L]
        # is_causal masks the upper-left triangle: right for a prefill (queries = keys); one new
        # token attends to all cached keys, which is no mask at all
        y = F.scaled_dot_product_attention(q, k, v, is_causal=pos == 0)
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(B, L, C)))


class Baseline(nn.Module):
    """ids (B, L) in [0, K] -> logits (B, L, K). kind 'ar' (causal) or 'mdlm' (bidirectional)."""

    def __init__(self, cfg, kind):
        super().__init__()
        assert kind in KINDS
        self.cfg, self.kind = cfg, kind
        self.embed = nn.Embedding(cfg.vocab_size + 1, cfg.n_embd)  # + the start / mask token
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([flm.Block(cfg) for _ in range(cfg.n_layer)])
        if kind == 'ar':
            for block in self.blocks:
                block.attn = CausalSelfAttention(cfg)
        self.ln_f = nn.LayerNorm(cfg.n_embd, elementwise_affine=False)
        self.adaLN_f = nn.Linear(cfg.n_cond, 2 * cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size)
        cos, sin = flm.rotary_tables(cfg.block_size, cfg.n_embd // cfg.n_head)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.register_buffer("c", torch.ones(1, cfg.n_cond), persistent=False)  # the constant condition
        # the same initialisation as the FLM: blocks start as the identity, the head at zero
        self.apply(flm.FLM._init_weights)
        nn.init.normal_(self.embed.weight, std=0.02)
        for m in [*(b.adaLN for b in self.blocks), self.adaLN_f, self.head]:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx):
        B, L = idx.shape
        pos = self.blocks[0].attn.cached if self.kind == 'ar' else 0
        assert pos + L <= self.cfg.block_size, "sequence longer than block_size"
        c = self.c.expand(B, -1)
        h = self.drop(self.embed(idx))
        for block in self.blocks:
            h = block(h, c, self.rope_cos, self.rope_sin)
        shift, scale = self.adaLN_f(c)[:, None].chunk(2, dim=-1)
        return self.head(flm.modulate(self.ln_f(h), shift, scale))

    def start_cache(self, B, device):
        """AR generation: preallocate every layer's keys and values for B sequences of block_size."""
        cfg = self.cfg
        for block in self.blocks:
            shape = (B, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)
            block.attn.k_cache = torch.zeros(shape, dtype=self.head.weight.dtype, device=device)
            block.attn.v_cache = torch.zeros_like(block.attn.k_cache)
            block.attn.cached = 0

    def stop_cache(self):
        for block in self.blocks:
            block.attn.k_cache = block.attn.v_cache = None
            block.attn.cached = 0

# -----------------------------------------------------------------------------
# AR: p(x) = prod_i p(x_i | x_<i), the input shifted right by one behind the start token K

def ar_inputs(x, K):
    return torch.cat([torch.full_like(x[:, :1], K), x[:, :-1]], dim=1)


def ar_nll(model, x, K):
    """-log p(x_i | x_<i) of every token of x (B, L): (B, L). The judge's measure, too.
    `model` may be wrapped (DDP, compile), hence K."""
    logits = model(ar_inputs(x, K))  # (autocast computes the CE in float32)
    return F.cross_entropy(logits.flatten(0, 1), x.flatten(), reduction="none").view(x.shape)


def ar_loss(model, x, K):
    return ar_nll(model, x, K).mean()


@torch.no_grad()
def ar_sample(model, shape, x_known=None, known=None, generator=None, device="cpu", cache=True):
    """shape = (B, L). Left to right, each token drawn from the model's softmax. Known
    positions (a prompt) are taken as given. cache=False recomputes the whole prefix at every
    token: the same tokens (tested), L times the work."""
    B, L = shape
    K = model.cfg.vocab_size
    x = torch.full((B, 1), K, dtype=torch.long, device=device)  # the start token
    if cache:
        model.start_cache(B, device)
    try:
        for i in range(L):
            logits = model(x[:, -1:] if cache and i > 0 else x)[:, -1].float()
            token = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
            if known is not None:
                token = torch.where(known[:, i:i + 1], x_known[:, i:i + 1], token)
            x = torch.cat([x, token], dim=1)
    finally:
        if cache:
            model.stop_cache()
    return x[:, 1:]

# -----------------------------------------------------------------------------
# MDLM: the continuous-time ELBO of masked diffusion with the log-linear schedule. A position
# is masked at time t with probability t; the model's guess for a masked token only matters
# where the position is masked, and the ELBO weighs it by 1/t:
#     -log p(x) <= E_{t ~ U(0,1)} E_mask [ (1/t) * sum_{i masked} -log p(x_i | masked x) ]
# Divided by L: a per-token bound, comparable with an AR's NLL.

def mdlm_loss(model, x, K, t=None, mask=None):
    """x (B, L) ids; `model` may be wrapped (DDP, compile), hence K. t (B,) and mask (B, L)
    may be given (the tests enumerate them); else t is drawn stratified over the batch and
    each position is masked with probability t."""
    B, L = x.shape
    if t is None:
        t = flm.antithetic_times(B, x.device).clamp_min(1e-4)  # no 1/0 on the measure-zero t = 0
    if mask is None:
        mask = torch.rand(B, L, device=x.device) < t[:, None]
    logits = model(torch.where(mask, K, x))
    ce = F.cross_entropy(logits.flatten(0, 1), x.flatten(), reduction="none").view(B, L)
    return ((ce * mask).sum(1) / (t * L)).mean()


@torch.no_grad()
def mdlm_sample(denoiser, shape, K, steps, x_known=None, known=None, generator=None, device="cpu"):
    """shape = (B, L). From all masks at t = 1 to t = 0 in `steps` uniform steps; from t to
    s = t - 1/steps each still-masked position is unmasked with probability (t - s) / t, its
    token drawn from softmax(denoiser(x)); an unmasked token is never masked again (so the
    last step, s = 0, unmasks all). Known positions (a prompt) are never masked: MDLM conditions
    exactly. `denoiser(ids) -> logits (B, L, K)` is any function: the network, or an exact one."""
    B, L = shape
    x = torch.full(shape, K, dtype=torch.long, device=device)
    if known is not None:
        x = torch.where(known, x_known, x)
    for i in range(steps, 0, -1):
        t, s = i / steps, (i - 1) / steps
        masked = x == K
        if not masked.any():
            break  # nothing left to draw: the network would not be called (no NFE spent)
        logits = denoiser(x)
        unmask = masked & (torch.rand(shape, generator=generator, device=device) < (t - s) / t)
        # draw tokens only where positions unmask: at K = 50257 the draw costs more than the network
        probs = torch.softmax(logits[unmask].float(), dim=-1)
        if len(probs):
            x[unmask] = torch.multinomial(probs, 1, generator=generator)[:, 0]
    return x
