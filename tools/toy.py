"""
A toy distribution whose exact denoiser is known, for checking samplers and distillation without
a trained network: sequences of L = 2 tokens from a vocabulary of K = 3, with strongly correlated
positions. The tests and the notebooks (notebooks/01_one_hot_flow.ipynb, 03_flow_maps.ipynb) use it.

Given a sequence (a, b), each noisy token is z_l = (1 - g) eps_l + g e_{x_l}, i.e.
z_l ~ N(g e_{x_l}, (1 - g)^2 I), so Bayes' rule gives the posterior over whole sequences in closed form,
    log p(a, b | z) = log p[a, b] + g / (1 - g)^2 * (z_1[a] + z_2[b]) + const,
and the denoiser D = E[e_x | z] (method.md 1) is its per-position marginals.
"""

import torch

import flm

K, L = 3, 2  # the toy's vocabulary size and sequence length


def toy_joint():
    """The toy distribution p[a, b] = Prob(x_1 = a, x_2 = b), K x K (float64): most of its mass
    lies on the diagonal, so the two positions are strongly correlated."""
    p = torch.tensor([[0.30, 0.02, 0.03],
                      [0.02, 0.20, 0.08],
                      [0.05, 0.05, 0.25]], dtype=torch.float64)
    return p / p.sum()


def exact_denoiser(p, table):
    """The exact denoiser E[e_x | z] of the toy distribution p (K x K over L = 2),
    as a `denoiser(z, t) -> logits` function: log of the per-position posterior marginals.
    Given the sequence (a, b), z_l ~ N(g e_{x_l}, (1-g)^2 I), so
    log p(a, b | z) = log p[a, b] + g/(1-g)^2 (z_1[a] + z_2[b]) + const."""
    log_p = p.log()

    def denoiser(z, t):
        g = flm.G(t, table).double()[:, None, None]
        s = g / (1 - g) ** 2 * z.double()                     # (B, 2, K) per-token log-likelihoods
        joint = log_p[None] + s[:, 0, :, None] + s[:, 1, None, :]  # (B, K, K)
        joint = joint - joint.logsumexp((1, 2), keepdim=True)
        return torch.stack([joint.logsumexp(2), joint.logsumexp(1)], dim=1).float()
    return denoiser


def joint_frequencies(x, K):
    """Empirical joint distribution of (x_1, x_2) from samples x (N, 2)."""
    counts = torch.bincount(x[:, 0] * K + x[:, 1], minlength=K * K).double()
    return (counts / counts.sum()).view(K, K)


def sample_joint(p, n, generator=None):
    """n sequences (n, 2) drawn from p: training batches for a network on the toy."""
    K = p.size(0)
    i = torch.multinomial(p.flatten().float(), n, replacement=True, generator=generator)
    return torch.stack([i // K, i % K], 1)


def tv(p, q):
    """Total variation distance between two distributions of the same shape: half the L1 distance."""
    return 0.5 * (p - q).abs().sum().item()
