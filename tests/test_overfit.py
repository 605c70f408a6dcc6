"""A tiny FLM memorises a handful of sequences: near-zero CE at high t, and it uses
context (it beats the per-token Bayes denoiser, which sees only its own position)."""
import torch
import torch.nn.functional as F

import flm


@torch.no_grad()
def ce_at(model, x, t, table, log_pi=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    tt = torch.full((x.size(0),), t)
    g = flm.G(tt, table)
    x_g = flm.interpolant(x, g, torch.randn(*x.shape, model.cfg.vocab_size, generator=gen))
    logits = model(x_g, tt) if log_pi is None else flm.unigram_denoiser_logits(x_g, g, log_pi)
    return F.cross_entropy(logits.flatten(0, 1), x.flatten()).item()


def test_tiny_overfit_run_uses_context():
    torch.manual_seed(0)
    K, L, n_seq = 12, 16, 4
    data = torch.randint(K, (n_seq, L))
    cfg = flm.FLMConfig(vocab_size=K, block_size=L, n_layer=2, n_head=4, n_embd=64, n_cond=32)
    model, table = flm.FLM(cfg), flm.g_table(K)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.99))
    for _ in range(600):
        x = data[torch.randint(n_seq, (32,))]
        loss = flm.flm_loss(model, x, table, K)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    counts = torch.bincount(data.flatten(), minlength=K).float() + 1
    log_pi = (counts / counts.sum()).log()
    x = data.repeat(4, 1)
    assert ce_at(model, x, 0.9, table) < 0.05
    gain = ce_at(model, x, 0.5, table, log_pi) - ce_at(model, x, 0.5, table)
    assert gain > 0.5, gain
