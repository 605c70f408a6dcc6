"""
FLM: a flow-based language model that denoises one-hot token vectors in R^K, and its flow map
(FMLM), which writes a whole sequence in one to a few passes.

One file, read top to bottom; its sections are docs/method.md's, in this order:
  1. the one-hot flow: the interpolant x_g, the velocity v = (D - x_g) / (1 - g), one jump
  2. the time reparameterization g = G(t), G the inverse of A(g)
  3. the network f_theta(x_g, t) (a DiT with rotary positions) and the CE loss; the LR schedule, EMA;
     self-conditioning, not in the paper, fenced as such (off by default; method.md 9)
  4. the Euler sampler; two additions that are not in the paper, fenced as such:
     fresh noise after each step, and prompting by replacement
  5. the flow map h_psi(x, s, t) distilled in one stage on a KL semigroup target (the default)
  6. evaluation: the per-token Bayes denoiser behind the context gain
  7. machinery for large vocabularies: the state in d dimensions where K > d
The first paper version's two-stage distillation (method.md 8) is stages.py.
"""

import functools
import math
from dataclasses import dataclass, replace

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

def interpolant(x, g, eps, space=None):
    """x: (B, L) token ids, g: (B,) levels, eps: (B, L, K) noise -> x_g (B, L, K). (In section 7's
    d-dimensional state, eps and x_g are their images.)"""
    g = g.to(eps.dtype)[:, None, None]
    clean = F.one_hot(x, eps.size(-1)) if space is None else space.token(x)
    return (1 - g) * eps + g * clean.to(eps.dtype)


def velocity(D, x_g, g):
    """v(x_g) = (D(x_g) - x_g) / (1 - g): the flow's velocity from the denoiser."""
    return (D - x_g) / (1 - g)


def jump(z, D, g, g_next):
    """z + (g' - g) * (D - z) / (1 - g): an Euler step of the FLM from level g to g' (D its denoiser at z),
    and also a flow map's whole jump X_{s,t}(z) (section 5, D its two-time denoiser delta_{s,t})."""
    return z + (g_next - g) * velocity(D, z, g)

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
    g = g.numpy()
    # In float64 A rounds to 1 before g reaches 1 (for some K, e.g. 1000 and 30522, on the
    # grid; for others only between its points). A = 1 belongs to g = 1 alone, as in the
    # paper's code (which tilts A by (g - 1) * 1e-10 and clips it to [0, 1]): grid points
    # where A has rounded to 1 are dropped and (A, g) = (1, 1) closes the table, so that
    # G(1) = 1 exactly for every K and G(t < 1) is the inverse of the computed A.
    below = A < 1.0
    A, g = np.append(A[below], 1.0), np.append(g[below], 1.0)
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
    learn_loss_weight: int = 0       # the learnable loss weighting: 0 none, 1 w(s), 2 w(s, t)
    # Switches of the paper's released DiT (README "Deviations" says which presets set them):
    ln_scale: bool = False           # LayerNorms with a learnable scale (no bias)
    attn_softcap: float = 0.0        # > 0: attention logits c * tanh(logits / c) (paper: 50)
    time_scale: float = 1000.0       # the time embedding reads time_scale * t (paper: 1, raw t)
    embed_dropout: bool = True       # dropout also on the input embedding (paper: False, blocks only)
    self_cond: bool = False          # not in the paper: also read the previous D (self-conditioning, below)


def timestep_embedding(t, dim, max_period=10000.0, scale=1000.0):
    """Sinusoidal embedding of scale * t, t in [0, 1]. scale = 1000 reads t like DiT's integer
    steps; the paper's code reads the raw t (scale = 1), whose frequencies run 1 ... 1e-4."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = scale * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimeEmbedding(nn.Module):
    def __init__(self, n_cond, freq_dim=256, scale=1000.0):
        super().__init__()
        self.freq_dim, self.scale = freq_dim, scale
        self.mlp = nn.Sequential(nn.Linear(freq_dim, n_cond), nn.SiLU(), nn.Linear(n_cond, n_cond))

    def forward(self, t):  # in the weights' dtype: a float64 network is the tests' exact reference
        return self.mlp(timestep_embedding(t, self.freq_dim, scale=self.scale).to(self.mlp[0].weight.dtype))


class LossWeight(nn.Module):
    """w of the learnable loss weighting (method.md 3). As in the paper's code it reads the times
    alone, through its own sinusoidal embedding and small MLP, not the network's shared conditioning:
    w(s) of the first time (cfg.learn_loss_weight = 1), or w(s, t) of both (= 2). The last layer is
    zero-initialised, so w = 0 at the start."""

    def __init__(self, cfg, hidden=128):
        super().__init__()
        self.embed_s = TimeEmbedding(cfg.n_cond, scale=cfg.time_scale)
        self.embed_t = TimeEmbedding(cfg.n_cond, scale=cfg.time_scale) if cfg.learn_loss_weight == 2 else None
        self.mlp = nn.Sequential(nn.Linear(cfg.n_cond, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, s, t=None):
        e = self.embed_s(s)
        if self.embed_t is not None:
            e = e + self.embed_t(t)
        return self.mlp(e).squeeze(-1)


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


def layer_norm(cfg):
    """No bias either way (adaLN's shift is the bias); a learnable scale only with cfg.ln_scale,
    so that a network without it has no LayerNorm weights in its state dict."""
    return nn.LayerNorm(cfg.n_embd, elementwise_affine=cfg.ln_scale, bias=False)


def softcap(x, cap):
    """cap * tanh(x / cap): x itself for |x| << cap, never beyond +-cap."""
    return cap * torch.tanh(x / cap)


class SelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0
        self.n_head = cfg.n_head  # no dropout on attention probabilities: it forces SDPA's slow path on CPU
        self.softcap = cfg.attn_softcap
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin):
        B, L, C = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if self.softcap > 0:  # SDPA cannot cap the logits: attend explicitly
            att = softcap(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), self.softcap)
            y = att.softmax(dim=-1) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v)
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(B, L, C)))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln1 = layer_norm(cfg)
        self.attn = SelfAttention(cfg)
        self.ln2 = layer_norm(cfg)
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
        # the input layer is linear, h = x_g @ E, with no bias (section 7 relies on it)
        self.embed = nn.Linear(cfg.vocab_size, cfg.n_embd, bias=False)
        self.time_embed = TimeEmbedding(cfg.n_cond, scale=cfg.time_scale)
        # second time of a flow map (the end time t, not t - s), zero-initialised so a student
        # starts as its teacher
        self.time_embed2 = TimeEmbedding(cfg.n_cond, scale=cfg.time_scale) if cfg.two_times else None
        # self-conditioning (not in the paper): the previous D enters through the input layer too, D @ E,
        # then a d x d layer of its own, zero-initialised, so the network starts as one without it
        self.self_cond = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False) if cfg.self_cond else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = layer_norm(cfg)
        self.adaLN_f = nn.Linear(cfg.n_cond, 2 * cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size)  # zero-initialised: uniform D at init
        self.loss_weight = LossWeight(cfg) if cfg.learn_loss_weight else None
        cos, sin = rotary_tables(cfg.block_size, cfg.n_embd // cfg.n_head)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        for m in [*(b.adaLN for b in self.blocks), self.adaLN_f, self.head,
                  self.loss_weight.mlp[-1] if self.loss_weight is not None else None,
                  self.time_embed2.mlp[-1] if self.time_embed2 is not None else None, self.self_cond]:
            if m is not None:
                nn.init.zeros_(m.weight)
                if m.bias is not None:
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

    def forward(self, x_g, t, t2=None, with_weight=False, embedded=False, sc=None):
        """x_g: (B, L, K) points in R^K (embedded=True: their images x_g @ E, section 7); t: (B,) model
        times in [0, 1] (t2: a flow map's second time). with_weight: also return w of the learnable loss
        weighting, computed inside forward so that DDP sees every parameter used in the one forward call.
        sc: a self-conditioned network's previous D (B, L, K), or its image D @ E; None reads as zeros."""
        assert x_g.size(1) <= self.cfg.block_size, "sequence longer than block_size"
        c = self.cond(t, t2)
        h = x_g if embedded else self.embed(x_g)
        if sc is not None:
            h = h + self.self_cond(sc.to(h.dtype) if embedded else self.embed(sc.to(h.dtype)))
        if self.cfg.embed_dropout:
            h = self.drop(h)
        for block in self.blocks:
            h = block(h, c, self.rope_cos, self.rope_sin)
        shift, scale = self.adaLN_f(c)[:, None].chunk(2, dim=-1)
        out = self.head(modulate(self.ln_f(h), shift, scale))
        return (out, self.loss_weight(t, t2)) if with_weight else out


def antithetic_times(B, device):
    """t_i = (u + i) / B mod 1 for one shared u ~ U(0, 1), shuffled: stratified over the batch."""
    u = torch.rand(1, device=device)
    t = (u + torch.arange(B, device=device) / B) % 1
    return t[torch.randperm(B, device=device)]


def flm_loss(model, x, table, K, projected=None, self_cond=False):
    """The reparameterized CE loss of method.md 3 for a batch x of token ids (B, L): t stratified,
    g = G(t), x_g the interpolant, CE(f_theta(x_g, t), x). `model` may be wrapped (DDP, compile).
    The state: R^K, or its image in d dims where K > d (section 7; projected=None: where cheaper).
    self_cond: the network reads its own estimate first (self_estimate, not in the paper)."""
    B, L = x.shape
    t = antithetic_times(B, x.device)
    g = G(t, table)
    space, (model,) = StateSpace.of(K, [model], projected)
    x_g = interpolant(x, g, space.noise(B, L, device=x.device), space)
    logits = model(x_g, t, sc=self_estimate(model, space, x_g, t)) if self_cond else model(x_g, t)
    ce = F.cross_entropy(logits.flatten(0, 1).float(), x.flatten(), reduction="none").view(B, L)
    return ce.mean(1).mean()  # per sequence, then over the batch

# ---- not in the paper: self-conditioning (method.md 9) ----
# A self-conditioned network also reads a previous estimate of D (sc). Trained as in Chen et al.
# (2023, "Analog Bits"): half of the sequences first get the network's own D without gradient, the
# other half zeros, and the loss is the second pass's; a sampler passes each step's D to the next.
# Its flow map (section 5) is trained the same way and carries its delta from jump to jump.

def self_estimate(net, space, x, *times):
    """The self-conditioning input of a training pass: the network's own D at x (no gradient, in the
    state's coordinates) for every other sequence, zeros (no estimate yet) for the rest."""
    sc = torch.zeros_like(x)
    with torch.no_grad():
        sc[::2] = space.project(torch.softmax(net(x[::2], *(v[::2] for v in times)).float(), -1)).to(x.dtype)
    return sc
# ---- end of what is not in the paper ----


def lr_at(it, learning_rate, min_lr, warmup_iters, decay_iters, decay=True):
    """The learning rate of iteration it: linear warmup, then cosine decay to min_lr (or constant)."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if not decay:
        return learning_rate
    if it > decay_iters:
        return min_lr
    coeff = 0.5 * (1.0 + math.cos(math.pi * (it - warmup_iters) / max(1, decay_iters - warmup_iters)))
    return min_lr + coeff * (learning_rate - min_lr)


@torch.no_grad()
def ema_update(ema, model, decay):
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter: the weights that are sampled."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)

# -----------------------------------------------------------------------------
# 4. Sampling: Euler steps uniform in t (not in g)
#     z ~ N(0, I);  z <- z + (g' - g) * (D(z, t) - z) / (1 - g);  last step: argmax D
# `denoiser(z, t) -> logits` is any function: the network, or an exact denoiser.
# With eta = 0 and no prompt, euler_sample is method.md 4 exactly.
#
# ---- not in the paper: prompting by replacement and fresh noise ----
# Prompting by replacement: at every step the known positions of z are set to
# their exact interpolant (1 - g) eps_i + g e_{x_i}, with eps_i fixed for the run.
# A heuristic: with the exact denoiser of a toy distribution it moves the continuation
# most of the way, not all the way, to the true conditional (tested).
#
# Fresh noise: after an Euler step the state is z = g' D + (1 - g') eps_hat, with eps_hat = (z - g' D) / (1 - g')
# the noise the model believes is in z. With eta > 0 a share of that noise is redrawn:
#     z <- g' D + (1 - g') * (sqrt(1 - eta^2) * eps_hat + eta * xi),   xi ~ N(0, I)
# which keeps the state at noise level g' but lets later, better-informed steps revise
# what earlier steps decided; the deterministic ODE never revises. This is DDIM's
# sampler family (Song et al., 2021) with sigma = eta * (1 - g') in this flow's notation. With
# the exact denoiser of a toy distribution it still reproduces the data (tested).

def refresh_noise(z, D, g, eta, generator=None, xi=None):
    """Replace the share eta of the noise in z = g D + (1 - g) eps_hat by fresh noise xi (drawn here
    when not given; in a projected state, section 7, the samplers give its images)."""
    eps_hat = (z - g * D) / (1 - g)
    xi = torch.randn(z.shape, generator=generator, device=z.device) if xi is None else xi
    return g * D + (1 - g) * (math.sqrt(1 - eta ** 2) * eps_hat + eta * xi)


def keep_known(z, x_known, known, eps_known, g, space=None):
    """Prompting by replacement: known positions of z <- their exact interpolant at level g."""
    return z if known is None else torch.where(known[..., None], interpolant(x_known, g, eps_known, space), z)
# ---- end of what is not in the paper ----


@torch.no_grad()
def euler_sample(denoiser, table, shape, steps, x_known=None, known=None, generator=None, device="cpu",
                 eta=0.0, flow_map=False, projected=None, noise=None, on_step=None, self_cond=False):
    """shape = (B, L, K). x_known (B, L) ids and known (B, L) bool fix positions (a prompt). eta in [0, 1]:
    share of fresh noise after each step (0: the deterministic sampler). flow_map: `denoiser` is a flow
    map h_psi(z, s, t) (section 5), whose jump s -> t has the Euler step's form: one jump per step.
    on_step(i, t, z, logits): called after each pass (the notebooks' and the animation's trajectory).
    noise: an iterator of (B, L, K) noises used in the order drawn instead of drawing (tests).
    self_cond: `denoiser` also reads sc, the D of the step before (none at the first): not in the paper.
    Returns token ids (B, L)."""
    assert steps >= 1 and 0 <= eta <= 1
    B, L, K = shape
    space, (denoiser,) = StateSpace.of(K, [denoiser], projected)
    draw = space.drawer(B, L, generator, device, noise)
    z = draw()
    eps_known = None if known is None else draw()
    carry = {'sc': None} if self_cond else {}  # self-conditioning: the previous step's D
    for i in range(steps):
        t, t_next = torch.full((B,), i / steps, device=device), torch.full((B,), (i + 1) / steps, device=device)
        g, g_next = G(t, table), G(t_next, table)
        z = keep_known(z, x_known, known, eps_known, g, space)
        logits = (denoiser(z, t, t_next, **carry) if flow_map else denoiser(z, t, **carry)).float()
        if on_step is not None:
            on_step(i, t, z, logits)
        if i == steps - 1:
            x = logits.argmax(-1)
            return x if known is None else torch.where(known, x_known, x)
        D = space.project(torch.softmax(logits, dim=-1))
        carry = {'sc': D} if self_cond else {}
        z = jump(z, D, g[:, None, None], g_next[:, None, None])
        if eta > 0:
            z = refresh_noise(z, D, g_next[:, None, None], eta, xi=draw())

# -----------------------------------------------------------------------------
# 5. The flow map (FMLM): one network, a KL semigroup target (method.md 5, the default distillation)
# One two-time network h_psi, distilled from the FLM. Its flow map is parametrised by a two-time
# denoiser delta_{s,t}(x) = softmax(h_psi(x, s, t)):
#     X_{s,t}(x) = (1 - g_t)/(1 - g_s) * x + (g_t - g_s)/(1 - g_s) * delta_{s,t}(x) = jump(x, delta, g_s, g_t)
# an Euler step with delta in place of D, so euler_sample(flow_map=True) is its sampler: one pass
# per step, argmax(delta) at the last. X_{s,s} = x, X_{s,1} = delta_{s,1}: one pass writes text.
# Semigroup: X_{s,t} = X_{u,t}(X_{s,u}) for s <= u <= t holds exactly when (the x terms cancel)
#     delta_{s,t}(x) = gamma * delta_{s,u}(x) + (1 - gamma) * delta_{u,t}(X_{s,u}(x)),
# a mixture of two distributions: targets and predictions stay on the simplex, and are compared by KL.
# Diagonal samples (s = t) anchor delta_{t,t} to the teacher's denoiser, so that small jumps follow
# the FLM's flow; jumps learn one jump s -> t from the student's own two half jumps s -> u -> t.

def flow_map_times(B, device, boundary_every):
    """(s, u, t) for B sequences: d ~ U(0, 1), s ~ U(0, 1 - d), t = s + d, u = (s + t) / 2; the
    whole jump (0, 1/2, 1) once in boundary_every (the paper: 64; 128 for stage 2)."""
    d = torch.rand(B, device=device).clamp(min=1e-6)
    s = torch.rand(B, device=device) * (1 - d)
    boundary = torch.rand(B, device=device) < 1 / boundary_every
    s, d = torch.where(boundary, 0.0, s), torch.where(boundary, 1.0, d)
    return s, s + d / 2, (s + d).clamp(max=1)


def semigroup_weights(g_s, g_u, g_t):
    """(gamma, 1 - gamma) for levels g_s <= g_u <= g_t (method.md 5):
        gamma     = (1 - g_t)(g_u - g_s) / ((1 - g_u)(g_t - g_s))
        1 - gamma = (1 - g_s)(g_t - g_u) / ((1 - g_u)(g_t - g_s))
    Each is its numerator over the two numerators' sum (their common denominator): both in [0, 1],
    summing to 1. Where the levels coincide (a diagonal sample, a tiny d, a flat table): 1/2 each."""
    a, b = (1 - g_t) * (g_u - g_s), (1 - g_s) * (g_t - g_u)
    total = a + b
    flat = total <= 0
    total = torch.where(flat, torch.ones_like(total), total)
    return torch.where(flat, 0.5, a / total), torch.where(flat, 0.5, b / total)


def kl_to(target, logits):
    """KL(target || softmax(logits)) per position, summed over the vocabulary, as CE(target, logits) - H(target).
    H has no gradient (the gradient is soft-target CE's); it makes the loss 0 where the two agree."""
    ce = -(target * torch.log_softmax(logits, -1)).sum(-1)
    return ce + torch.xlogy(target, target).sum(-1)


def learned_weighting(loss, w):
    """The learnable loss weighting of method.md 3: the batch mean of exp(-w) * loss + w, w the
    network's LossWeight (None: the plain mean). Its optimum is w = log E[loss | time], so every time
    (or pair of times) weighs alike."""
    return (loss if w is None else torch.exp(-w.float()) * loss + w.float()).mean()


def flowmap_loss(student, teacher, x, table, K, boundary_every=64, diagonal_share=0.5, weighted=False,
                 projected=None, targets_from=None, self_cond=False):
    """method.md 5 for token ids x (B, L). The first diagonal_share of the sequences: KL(D_T(x_t, t) ||
    delta_{t,t}(x_t)); the rest jumps s < u < t: KL(gamma a + (1 - gamma) b || delta_{s,t}(x_s)), a and b
    the student's own half jumps without gradient (targets_from: another copy gives them, e.g. its EMA).
    KL summed over the vocabulary, averaged over positions, then sequences. `student` is h_psi (may be
    wrapped: DDP, compile), `teacher` the frozen FLM; a fixed split keeps shapes fixed for compile.
    self_cond (not in the paper): both networks are self-conditioned. The student reads self_estimate,
    the second half jump reads the first's delta (the sampler's carry), the teacher its own estimate."""
    B, L = x.shape
    n = round(B * diagonal_share)
    s, u, t = flow_map_times(B, x.device, boundary_every)
    diagonal = torch.arange(B, device=x.device) < n
    t_diag = torch.rand(B, device=x.device)
    s, u, t = (torch.where(diagonal, t_diag, v) for v in (s, u, t))
    g_s, g_u, g_t = (G(v, table)[:, None, None] for v in (s, u, t))
    nets = [student, teacher] + ([] if targets_from in (None, student) else [targets_from])
    space, (student, teacher, *source) = StateSpace.of(K, nets, projected)
    source = source[0] if source else student
    x_s = interpolant(x, g_s[:, 0, 0], space.noise(B, L, device=x.device), space)
    sc = self_estimate(source, space, x_s, s, t) if self_cond else None
    targets, j = [], slice(n, B)
    carry = (lambda v: {'sc': v}) if self_cond else (lambda v: {})  # what a self-conditioned network reads
    with torch.no_grad():
        if n > 0:  # diagonal: the teacher's denoiser (self-conditioned: after reading its own estimate)
            d = teacher(x_s[:n], s[:n]).float()
            if self_cond:
                d = teacher(x_s[:n], s[:n], sc=space.project(torch.softmax(d, -1))).float()
            targets.append(torch.softmax(d, -1))
        if n < B:  # jumps: the mixture of the two half jumps
            a = torch.softmax(source(x_s[j], s[j], u[j], **carry(sc[j] if self_cond else None)).float(), -1)
            a_image = space.project(a)                                                   # delta_{s,u}(x_s)
            x_u = jump(x_s[j], a_image, g_s[j], g_u[j])                                  # X_{s,u}(x_s)
            b = torch.softmax(source(x_u, u[j], t[j], **carry(a_image)).float(), -1)     # delta_{u,t}(x_u)
            gamma, gamma_bar = semigroup_weights(g_s[j], g_u[j], g_t[j])
            targets.append(gamma * a + gamma_bar * b)
    h, w = student(x_s, s, t, with_weight=True, **carry(sc)) if weighted else (student(x_s, s, t, **carry(sc)), None)
    return learned_weighting(kl_to(torch.cat(targets), h.float()).mean(1), w)


def flow_map_student(teacher, stage=2):
    """A two-time student made from an FLM teacher, with a learnable loss weighting's w (used or not).
    stage 2 (section 5's h_psi, and method.md 8's stage 2) keeps the teacher's weights, so it starts as
    the teacher's denoiser, and has a w(s, t); stage 1's r_phi (method.md 8) has its whole output layer
    zeroed, the head and its adaLN modulation, as the paper's code does, and a w(s)."""
    student = FLM(replace(teacher.cfg, two_times=True, learn_loss_weight=stage))
    weights = {k: v for k, v in teacher.state_dict().items() if not k.startswith("loss_weight.")}
    missing, unexpected = student.load_state_dict(weights, strict=False)
    # the second time embedding and w stay zero-initialised; nothing else may be missing
    assert all(k.startswith(("time_embed2.", "loss_weight.")) for k in missing) and not unexpected, (missing, unexpected)
    if stage == 1:
        for m in (student.adaLN_f, student.head):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
    return student.to(next(teacher.parameters()).device)

# -----------------------------------------------------------------------------
# 6. Evaluation: how much a model uses context. Gen PPL and entropy are tools/judge.py's.

def unigram_denoiser_logits(x_g, g, log_pi, E=None):
    """The Bayes denoiser of a model that ignores all other positions: tokens i.i.d. with frequencies
    pi, so p(x | x_g) is prop. to pi_x * exp(g / (1 - g)^2 * (x_g)_x). With E (K x d, K > d), x_g is a
    projected state h = x_g @ E (section 7), what a network with that input layer sees; its posterior
    is method.md 6's: pi_x * exp(g / (1 - g)^2 * h S^-1 E_x - g^2 / (2 (1 - g)^2) * E_x S^-1 E_x), S = E^T E."""
    g = g.to(x_g.dtype)[:, None, None]
    if E is None:
        return log_pi.to(x_g.dtype) + g / (1 - g) ** 2 * x_g
    E = E.to(x_g.dtype)
    P = torch.linalg.solve(E.T @ E, E.T)  # S^-1 E^T, d x K
    leverage = (E * P.T).sum(-1)           # E_x S^-1 E_x, per token
    return log_pi.to(x_g.dtype) + g / (1 - g) ** 2 * (x_g @ P) - g ** 2 / (2 * (1 - g) ** 2) * leverage

# -----------------------------------------------------------------------------
# 7. Machinery for large vocabularies: the state in d dimensions (method.md 7)
# A network reads x_g only through its linear input layer, h = x_g @ E, and every update of the flow
# is linear in the state, so where K > d a loss or sampler carries the states' images instead: noise
# drawn as z @ R with R^T R = E^T E, a token as E[x], a denoiser as D @ E. Networks that read one state
# (a teacher and its student) get their images side by side, M = [E_1 .. E_m]. Where that is not
# cheaper, or a network is a plain function (an exact denoiser), the state stays in R^K.

def input_embedding(network):
    """E (K x d) of a network whose input layer is linear (an FLM, also inside a DDP or compile
    wrapper); None for a plain function."""
    embed = getattr(getattr(network, "module", network), "embed", None)
    return embed.weight.T if isinstance(embed, nn.Linear) else None


def full_precision(a, b):
    """a @ b in b's dtype, also inside autocast: states accumulate updates step after step, and the
    Gram below must stay positive definite, which bf16's rounding would not keep."""
    with torch.autocast(b.device.type, enabled=False):
        return a.to(b.dtype) @ b


def noise_factor(M, jitter=0.0):
    """R (W x W) with z @ R ~ N(0, M^T M), z ~ N(0, I_W): the law of eps @ M. Cholesky QR in float64,
    R = Q^T M with Q = M C^-T held fixed (method.md 7a: an unbiased, bounded gradient); jitter,
    relative to the mean diagonal, keeps several networks' M factorizable where two share an E."""
    with torch.autocast(M.device.type, enabled=False):
        gram64 = (M.detach().T @ M).double()
        eye = torch.eye(M.size(1), dtype=torch.float64, device=M.device)
        # cholesky_ex: no host sync to check the result (linalg.cholesky reads it back at every step); a
        # failed factorization (non-finite weights) gives NaN, which the training step's guard stops on
        C, info = torch.linalg.cholesky_ex(gram64.detach() + jitter * gram64.diagonal().mean().detach() * eye)
        C = torch.where(info == 0, C, torch.nan)
        return torch.linalg.solve_triangular(C, gram64, upper=False).to(M.dtype)


class StateSpace:
    """Where a loss or a sampler holds its states: R^K itself, or (projected) their images under the
    networks' input layers, (B, L, W). projected=None: projected where W < K and every network has a
    linear input layer."""

    @classmethod
    def of(cls, K, networks, projected=None):
        """(the space, the networks as functions of its states): each network reads its own columns."""
        space = cls(K, networks, projected)
        return space, [space.reader(net) for net in networks]

    def __init__(self, K, networks, projected=None):
        self.K, embeds = K, [input_embedding(net) for net in networks]
        readable = all(E is not None for E in embeds)
        self.dtype = embeds[0].dtype if readable else None  # the noise's: the networks' (None: torch's default)
        self.projected = (readable and sum(E.size(1) for E in embeds) < K) if projected is None else projected
        if self.projected:
            assert readable, "a projected state needs networks whose input layer is linear"
            self.E = embeds[0] if len(embeds) == 1 else torch.cat(embeds, 1)  # M = [E_1 .. E_m]
            ends = np.cumsum([E.size(1) for E in embeds]).tolist()
            self.columns = [slice(end - E.size(1), end) for E, end in zip(embeds, ends)]
            self.networks = list(networks)
            self.R = noise_factor(self.E, jitter=1e-5 if len(embeds) > 1 else 0.0)

    def noise(self, B, L, generator=None, device=None, eps=None):
        """Fresh eps ~ N(0, I_K) per token in the state's coordinates (z @ R when projected); eps: a
        given (B, L, K) noise to map in instead (tests: one noise, both paths)."""
        if eps is not None:
            return self.project(eps)
        if not self.projected:
            return torch.randn(B, L, self.K, generator=generator, device=device, dtype=self.dtype)
        z = torch.randn(B, L, self.R.size(0), generator=generator, device=self.R.device, dtype=self.R.dtype)
        return full_precision(z, self.R)

    def drawer(self, B, L, generator, device, noise=None):
        """A sampler's draws, in order: fresh noises, or the next of the given (B, L, K) noises."""
        return lambda: self.noise(B, L, generator, device, None if noise is None else next(noise))

    def token(self, x):
        """The clean point e_x of token ids x in the state's coordinates: E[x] when projected."""
        return self.E[x] if self.projected else F.one_hot(x, self.K)

    def project(self, y):
        """Vectors of R^K (a denoiser D, a residual r, a noise eps) in the state's coordinates: y @ M."""
        return full_precision(y, self.E) if self.projected else y

    def reader(self, network):
        """network(state, *times) as it reads this space: a projected state hands it its own columns."""
        if not self.projected:
            return network
        i = next(i for i, net in enumerate(self.networks) if net is network)
        return functools.partial(_read_columns, network, self.columns[i])


def _read_columns(network, columns, state, *times, sc=None, **kw):
    return network(state[..., columns], *times, embedded=True, sc=None if sc is None else sc[..., columns], **kw)
