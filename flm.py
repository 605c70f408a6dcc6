"""
FLM: a flow-based language model that denoises one-hot token vectors in R^K.

One file, read top to bottom in the order of the method (docs/method.md):
  1. the one-hot flow: interpolant x_g and velocity v = (D - x_g) / (1 - g)
  2. the time reparameterization g = G(t), G the inverse of A(g)
  3. the network f_theta(x_g, t) (a DiT with rotary positions) and the CE loss
  4. the Euler sampler, with prompting by replacement
plus the EMA of weights and the per-token Bayes denoiser used to measure how
much the model uses context.
"""

import copy
import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# -----------------------------------------------------------------------------
# 1. The one-hot flow
# A token x is the one-hot e_x in R^K. At level g in [0, 1]:
#     x_g = (1 - g) * eps + g * e_x,    eps ~ N(0, I_K) per token
# g = 0 is pure noise, g = 1 the clean one-hot. With the denoiser
# D(x_g) = E[e_x | x_g] (a softmax over the vocabulary) the velocity of this
# straight-line flow is v = (D - x_g) / (1 - g).

def interpolant(x, g, eps):
    """x: (B, L) token ids, g: (B,) levels, eps: (B, L, K) noise -> x_g (B, L, K)."""
    g = g.to(eps.dtype)[:, None, None]
    return (1 - g) * eps + g * F.one_hot(x, eps.size(-1)).to(eps.dtype)


def velocity(D, x_g, g):
    """v(x_g) = (D(x_g) - x_g) / (1 - g): the flow's velocity from the denoiser."""
    return (D - x_g) / (1 - g)

# -----------------------------------------------------------------------------
# 2. The time reparameterization
# P(g) = Prob[argmax_j (x_g)_j = x] = E_z[Phi(z + g/(1-g))^(K-1)], rescaled to
# A(g) = K/(K-1) * (P(g) - 1/K), which runs from A(0) = 0 to A(1) = 1.
# The model's time is t = A(g), i.e. g = G(t) with G = A^-1: t measures the
# fraction of tokens that have become decodable, so uniform t spends training
# and sampling steps where something happens, for any vocabulary size K.

def decodability(g, K, n_nodes=200):
    """A(g) by Gauss-Hermite quadrature over z ~ N(0, 1); g: float64 tensor with g < 1."""
    # 200 nodes rather than ~100: for K = 50257, Phi(z)^(K-1) is a sharp step in z
    # and 100 nodes are off by ~1e-4 in A, 200 by ~2e-6 (against 250 nodes).
    # numpy's hermgauss overflows past ~300 nodes.
    nodes, weights = np.polynomial.hermite.hermgauss(n_nodes)
    z = torch.tensor(math.sqrt(2) * nodes, dtype=torch.float64)
    w = torch.tensor(weights / math.sqrt(math.pi), dtype=torch.float64)
    snr = g / (1 - g)
    log_phi = torch.special.log_ndtr(z[None, :] + snr[:, None])  # log Phi, stable for small Phi
    P = (w * torch.exp((K - 1) * log_phi)).sum(-1)
    return K / (K - 1) * (P - 1 / K)


@functools.lru_cache(maxsize=None)
def _g_table_cpu(K, n_table=8192, n_grid=1 << 17):
    # A on a dense uniform grid of g (dense enough to resolve K = 50257's sharp
    # transition), made monotone, then inverted by linear interpolation at
    # n_table + 1 uniform values of t.
    g = torch.linspace(0, 1, n_grid + 1, dtype=torch.float64)[:-1]
    A = torch.cummax(decodability(g, K), 0).values.numpy()
    A = np.append(A, 1.0)
    g = np.append(g.numpy(), 1.0)
    # In floating point A reaches 1 before g does: keep the first g at which it
    # does, so that G(1) < 1 and the inverse is well defined.
    top = int(np.argmax(A >= 1.0))
    A, g = A[: top + 1], g[: top + 1]
    A[0] = 0.0  # the quadrature's A(0) is 0 up to ~1e-16
    keep = np.concatenate([[True], np.diff(A) > 0])  # np.interp needs increasing A
    t = np.linspace(0, 1, n_table + 1)
    G = np.interp(t, A[keep], g[keep])
    return torch.tensor(np.maximum.accumulate(G), dtype=torch.float32)


def g_table(K, device="cpu"):
    """G(t) tabulated at t = i / n (float32), built once per vocabulary size, on `device`."""
    return _g_table_cpu(K).to(device)


def G(t, table):
    """g = G(t) by linear interpolation in the table: pure tensor ops, no host sync."""
    n = table.numel() - 1
    x = t.clamp(0, 1) * n
    i = x.floor().long().clamp(max=n - 1)
    return torch.lerp(table[i], table[i + 1], (x - i).to(table.dtype))

# -----------------------------------------------------------------------------
# 3. The network f_theta(x_g, t) -> logits, and the CE training loss
# A bidirectional DiT: pre-norm blocks, adaLN-Zero time modulation, rotary
# positions. Every position is noised, so nothing positional is added to the
# input; rotary positions inside attention let the model locate its neighbours.

@dataclass
class FLMConfig:
    vocab_size: int = 65    # K
    block_size: int = 256   # L
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384       # d
    n_cond: int = 128       # width of the time conditioning
    dropout: float = 0.0
    two_times: bool = False          # flow maps take (s, t)
    learn_loss_weight: bool = False  # w(t) of the learnable loss weighting


def timestep_embedding(t, dim, max_period=10000.0):
    """Sinusoidal embedding of t in [0, 1] (scaled by 1000, as for DiT's integer steps)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimeEmbedding(nn.Module):
    def __init__(self, n_cond, freq_dim=256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, n_cond), nn.SiLU(), nn.Linear(n_cond, n_cond))

    def forward(self, t):
        return self.mlp(timestep_embedding(t, self.freq_dim))


def rotary_tables(L, head_dim, base=10000.0):
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2).float() / head_dim)
    angles = torch.outer(torch.arange(L).float(), inv_freq)  # (L, head_dim/2)
    return torch.cos(angles), torch.sin(angles)


def apply_rotary(x, cos, sin):
    """Rotate pairs (x1, x2) of each head by position-dependent angles; x: (B, H, L, hd)."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos[: x.size(2)].to(x.dtype), sin[: x.size(2)].to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def modulate(x, shift, scale):
    return x * (1 + scale) + shift


class SelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0
        self.n_head = cfg.n_head  # no dropout on attention probabilities: it forces SDPA's slow path on CPU
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin):
        B, L, C = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(B, L, C)))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd, elementwise_affine=False)
        self.attn = SelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(cfg.n_embd, 4 * cfg.n_embd), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * cfg.n_embd, cfg.n_embd), nn.Dropout(cfg.dropout))
        self.adaLN = nn.Linear(cfg.n_cond, 6 * cfg.n_embd)  # zero-initialised: block starts as identity

    def forward(self, x, c, cos, sin):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN(c)[:, None].chunk(6, dim=-1)
        x = x + gate1 * self.attn(modulate(self.ln1(x), shift1, scale1), cos, sin)
        x = x + gate2 * self.mlp(modulate(self.ln2(x), shift2, scale2))
        return x


class FLM(nn.Module):
    """f_theta(x_g, t[, t2]) -> logits (B, L, K); softmax of them is the denoiser D."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        # the input layer is linear, h = x_g @ E, with no bias (method.md 7 relies on it)
        self.embed = nn.Linear(cfg.vocab_size, cfg.n_embd, bias=False)
        self.time_embed = TimeEmbedding(cfg.n_cond)
        # second time of a flow map, zero-initialised so a student starts as its teacher
        self.time_embed2 = TimeEmbedding(cfg.n_cond) if cfg.two_times else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd, elementwise_affine=False)
        self.adaLN_f = nn.Linear(cfg.n_cond, 2 * cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size)  # zero-initialised: uniform D at init
        self.loss_weight = nn.Linear(cfg.n_cond, 1) if cfg.learn_loss_weight else None
        cos, sin = rotary_tables(cfg.block_size, cfg.n_embd // cfg.n_head)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        for m in [*(b.adaLN for b in self.blocks), self.adaLN_f, self.head, self.loss_weight,
                  self.time_embed2.mlp[-1] if self.time_embed2 is not None else None]:
            if m is not None:
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def cond(self, t, t2=None):
        c = self.time_embed(t)
        if t2 is not None:
            c = c + self.time_embed2(t2)
        return F.silu(c)

    def log_weight(self, t):
        """w(t) of the learnable loss weighting (zero-initialised)."""
        return self.loss_weight(self.cond(t)).squeeze(-1)

    def forward(self, x_g, t, t2=None):
        """x_g: (B, L, K) points in R^K; t: (B,) model times in [0, 1]."""
        assert x_g.size(1) <= self.cfg.block_size, "sequence longer than block_size"
        c = self.cond(t, t2)
        h = self.drop(self.embed(x_g))
        for block in self.blocks:
            h = block(h, c, self.rope_cos, self.rope_sin)
        shift, scale = self.adaLN_f(c)[:, None].chunk(2, dim=-1)
        return self.head(modulate(self.ln_f(h), shift, scale))


def antithetic_times(B, device):
    """t_i = (u + i) / B mod 1 for one shared u ~ U(0, 1), shuffled: stratified over the batch."""
    u = torch.rand(1, device=device)
    t = (u + torch.arange(B, device=device) / B) % 1
    return t[torch.randperm(B, device=device)]


def flm_loss(model, x, table, K, loss_weight=None, t_power=1.0):
    """The reparameterized CE loss of method.md 3 for a batch x of token ids (B, L).
    `model` may be wrapped (DDP, compile); `loss_weight(t) -> w` turns on the learnable
    weighting exp(-w(t)) * loss + w(t), whose optimum is w = log E[loss | t].
    t_power != 1 (not in the paper) draws t = u^t_power: more small t (> 1) or more
    large t (< 1). On tiny Shakespeare both directions wrote fewer real words (README)."""
    B, L = x.shape
    t = antithetic_times(B, x.device) ** t_power
    g = G(t, table)
    eps = torch.randn(B, L, K, device=x.device)
    logits = model(interpolant(x, g, eps), t)
    ce = F.cross_entropy(logits.flatten(0, 1).float(), x.flatten(), reduction="none").view(B, L)
    loss = ce.mean(1)  # per sequence
    if loss_weight is not None:
        w = loss_weight(t).float()
        loss = torch.exp(-w) * loss + w
    return loss.mean()


# -----------------------------------------------------------------------------
# 4. Sampling: Euler steps uniform in t (not in g)
#     z ~ N(0, I);  z <- z + (g' - g) * (D(z, t) - z) / (1 - g);  last step: argmax D
# `denoiser(z, t) -> logits` is any function: the network, or an exact denoiser.
# Prompting by replacement: at every step the known positions of z are set to
# their exact interpolant (1 - g) eps_i + g e_{x_i}, with eps_i fixed for the run.
#
# Fresh noise (not in the paper; eta = 0, the default here, is method.md 4 exactly).
# After an Euler step the state is z = g' D + (1 - g') eps_hat, with eps_hat = (z - g' D) / (1 - g')
# the noise the model believes is in z. With eta > 0 a share of that noise is redrawn:
#     z <- g' D + (1 - g') * (sqrt(1 - eta^2) * eps_hat + eta * xi),   xi ~ N(0, I)
# which keeps the state at noise level g' but lets later, better-informed steps revise
# what earlier steps decided; the deterministic ODE never revises. This is DDIM's
# sampler family (Song et al., 2021) with sigma = eta * (1 - g') in this flow's notation. With
# the exact denoiser of a toy distribution it still reproduces the data (tested);
# with a learned denoiser it writes far more real words (README).

def refresh_noise(z, D, g, eta, generator=None):
    """Replace the share eta of the noise in z = g D + (1 - g) eps_hat by fresh noise."""
    eps_hat = (z - g * D) / (1 - g)
    xi = torch.randn(z.shape, generator=generator, device=z.device)
    return g * D + (1 - g) * (math.sqrt(1 - eta ** 2) * eps_hat + eta * xi)


@torch.no_grad()
def euler_sample(denoiser, table, shape, steps, x_known=None, known=None, generator=None, device="cpu",
                 eta=0.0):
    """shape = (B, L, K). x_known (B, L) ids and known (B, L) bool fix positions (a prompt).
    eta in [0, 1]: share of fresh noise after each step (0: the deterministic sampler).
    Returns token ids (B, L)."""
    assert steps >= 1 and 0 <= eta <= 1
    B, L, K = shape
    z = torch.randn(shape, generator=generator, device=device)
    if known is not None:
        eps_known = torch.randn(shape, generator=generator, device=device)
        known = known[..., None]
    for i in range(steps):
        t = torch.full((B,), i / steps, device=device)
        g, g_next = G(t, table), G(torch.full_like(t, (i + 1) / steps), table)
        if known is not None:
            z = torch.where(known, interpolant(x_known, g, eps_known), z)
        logits = denoiser(z, t).float()
        if i == steps - 1:
            x = logits.argmax(-1)
            return x if known is None else torch.where(known[..., 0], x_known, x)
        D = torch.softmax(logits, dim=-1)
        z = z + (g_next - g)[:, None, None] * velocity(D, z, g[:, None, None])
        if eta > 0:
            z = refresh_noise(z, D, g_next[:, None, None], eta, generator)

# -----------------------------------------------------------------------------
# EMA of weights, and the per-token Bayes denoiser (the no-context baseline)

def ema_copy(model):
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    return ema


@torch.no_grad()
def ema_update(ema, model, decay):
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter."""
    ema_p, model_p = list(ema.parameters()), list(model.parameters())
    torch._foreach_lerp_(ema_p, model_p, 1.0 - decay)


def unigram_denoiser_logits(x_g, g, log_pi):
    """The Bayes denoiser of a model that ignores all other positions: tokens i.i.d. with
    frequencies pi, so p(x | x_g) is prop. to pi_x * exp(g / (1 - g)^2 * (x_g)_x)."""
    g = g.to(x_g.dtype)[:, None, None]
    return log_pi.to(x_g.dtype) + g / (1 - g) ** 2 * x_g
