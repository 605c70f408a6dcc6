import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import flm  # noqa: E402


def toy_joint():
    """A toy distribution over sequences of L=2 tokens from K=3, with strongly
    correlated positions: p[a, b] = Prob(x_1 = a, x_2 = b)."""
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


def write_char_dataset(folder, text, val_fraction=0.1):
    """A character dataset in nanoGPT's format (train.bin, val.bin, meta.pkl)."""
    os.makedirs(folder, exist_ok=True)
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = np.array([stoi[c] for c in text], dtype=np.uint16)
    n = int(len(ids) * (1 - val_fraction))
    ids[:n].tofile(os.path.join(folder, 'train.bin'))
    ids[n:].tofile(os.path.join(folder, 'val.bin'))
    with open(os.path.join(folder, 'meta.pkl'), 'wb') as f:
        pickle.dump({'vocab_size': len(chars), 'stoi': stoi, 'itos': {i: c for c, i in stoi.items()}}, f)
    return folder


TOY_TEXT = ("the cat sat on the mat. the dog sat on the log. a cat and a dog met on the mat.\n"
            "to be or not to be, that is the question.\n") * 40


@pytest.fixture(scope="session")
def char_dataset(tmp_path_factory):
    return write_char_dataset(str(tmp_path_factory.mktemp("data") / "toy_char"), TOY_TEXT)


def run_script(script, *args, cwd, timeout=300, env=None, launcher=None):
    cmd = (launcher or [sys.executable]) + [os.path.join(ROOT, script), *args]
    full_env = {**os.environ, 'PYTHONUNBUFFERED': '1', **(env or {})}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)
