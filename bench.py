"""
Speed of every method with the same transformer, in one run on one machine: read the ratios,
not the absolute times (which drift on shared machines). Random weights: speed does not
depend on them.

For each sequence length L and vocabulary size K:
- training: the time of one optimizer step of the FLM, the FMLM's stage 1 and stage 2, MDLM
  and AR, at one batch size for all;
- sampling: the latency of one sample (batch 1) and the throughput at --batch of the FLM at
  --flm_steps, the FMLM at 1, 2 and 4 steps, MDLM at 8 steps and AR with its KV cache.
The FLM's and FMLM's state is a (B, L, K) tensor (and so is the input of their networks), which
at K = 50257 and L = 1024 is 206 MB per sample: where a batch would need more than --mem_gb,
it is halved until it fits, and the table says which batch was used.

$ python bench.py                                   # L = 128, 1024 and K = 65, 50257
$ python bench.py --L=128 --K=65 --out=bench.json
"""

import json
import sys
import time

import torch

import flm
import kinds
from configurator import configure, die, int_list, system

# -----------------------------------------------------------------------------
L = '128,1024'            # sequence lengths
K = '65,50257'            # vocabulary sizes: tiny Shakespeare's characters, GPT-2's BPE
n_layer = 4               # the transformer: train.py's default
n_head = 4
n_embd = 128
n_cond = 128
batch = 32                # the throughput batch (smaller where it does not fit in --mem_gb)
train_batch = 32          # the training batch (same rule)
flm_steps = 32            # the FLM's sampler steps
reps = 3                  # timed repetitions (the median is reported) after one warm-up call
mem_gb = 6.0              # memory a batch may take
device = 'auto'
seed = 1337
out = ''                  # also write the figures as JSON here
# -----------------------------------------------------------------------------
config_keys = [k for k, v in globals().items() if not k.startswith('_') and isinstance(v, (int, float, bool, str))]
config = configure({k: globals()[k] for k in config_keys}, sys.argv[1:])
globals().update(config)
Ls, Ks = int_list(L, 'L', 2), int_list(K, 'K', 2)
for key in ('batch', 'train_batch', 'flm_steps', 'reps'):
    if config[key] < 1:
        die(f"--{key} must be >= 1, got {config[key]}")
device = system(device, 'float32')[0]
torch.manual_seed(seed)


def sync():
    if 'cuda' in device:
        torch.cuda.synchronize()


def timed(fn):
    """Median seconds of fn() over `reps` calls after a warm-up; a call over 10 s is timed once."""
    t0 = time.perf_counter()
    fn()
    sync()
    first = time.perf_counter() - t0
    if first > 10:
        return first
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def fitting(want, per_sample_bytes):
    """The largest of want, want/2, ... whose (B, L, K) tensors fit in mem_gb."""
    B = want
    while B > 1 and B * per_sample_bytes > mem_gb * 1e9:
        B //= 2
    return B


def train_step(model, loss_fn):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        loss = loss_fn()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


results = []
for seq_len in Ls:
    for vocab in Ks:
        args = dict(vocab_size=vocab, block_size=seq_len, n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_cond=n_cond)
        table = flm.g_table(vocab, device)
        teacher = kinds.network('flm', args).to(device).requires_grad_(False)
        nets = {'FLM': kinds.network('flm', args), 'FMLM stage 1': flm.flow_map_student(teacher, 1),
                'FMLM stage 2': flm.flow_map_student(teacher, 2), 'MDLM': kinds.network('mdlm', args),
                'AR': kinds.network('ar', args)}
        residual = nets['FMLM stage 1']
        kind_of = {'FLM': 'flm', 'FMLM stage 1': 'stage1', 'FMLM stage 2': 'stage2', 'MDLM': 'mdlm', 'AR': 'ar'}
        row = {'L': seq_len, 'K': vocab, 'train': {}, 'latency': {}, 'throughput': {}}
        # training: a (B, L, K) tensor costs 4 L K bytes per sample; stage 1 holds ~24 of them at once
        B = fitting(train_batch, 24 * 4 * seq_len * vocab)
        row['train_batch'] = B
        x = torch.randint(0, vocab, (B, seq_len), device=device)
        for name, model in nets.items():
            loss_fn = kinds.loss_fn(kind_of[name], vocab, table, teacher, residual,
                                    {'FMLM stage 1': 64, 'FMLM stage 2': 128}.get(name, 1), weighted=True)
            model.to(device).train()
            row['train'][name] = timed(train_step(model, lambda: loss_fn(model, x)))
            model.eval()
            print(f"L={seq_len} K={vocab}: train step {name} (batch {B}): {1000 * row['train'][name]:.1f} ms", flush=True)

        # sampling: the flow samplers hold ~5 (B, L, K) tensors
        B = fitting(batch, 5 * 4 * seq_len * vocab)
        row['batch'] = B
        gen = torch.Generator(device=device).manual_seed(seed)
        samplers = [(f'FLM {flm_steps} steps', 'FLM', flm_steps), ('FMLM 1 step', 'FMLM stage 2', 1),
                    ('FMLM 2 steps', 'FMLM stage 2', 2), ('FMLM 4 steps', 'FMLM stage 2', 4),
                    ('MDLM 8 steps', 'MDLM', 8), ('AR (KV cache)', 'AR', 0)]
        with torch.no_grad():
            for name, net, steps in samplers:
                sample = kinds.sampler(kind_of[net], nets[net], table)
                row['latency'][name] = timed(lambda: sample(1, seq_len, steps, generator=gen, device=device))
                row['throughput'][name] = B / timed(lambda: sample(B, seq_len, steps, generator=gen, device=device))
                print(f"L={seq_len} K={vocab}: {name}: {1000 * row['latency'][name]:.1f} ms per sample at batch 1, "
                      f"{row['throughput'][name]:.2f} samples/s at batch {B}", flush=True)
        results.append(row)
        del teacher, residual, nets

# -----------------------------------------------------------------------------
# the tables: times, and ratios to the reference of each block
print(f"\n{n_layer} layers, width {n_embd}, {device}, {torch.get_num_threads()} threads; median of {reps}")
print("\n| L | K | batch | " + " | ".join(results[0]['train']) + " |")
print("| --- | --- | --- |" + " --- |" * len(results[0]['train']))
for r in results:
    flm_ms = r['train']['FLM']
    print(f"| {r['L']} | {r['K']} | {r['train_batch']} | "
          + " | ".join(f"{1000 * v:.0f} ms ({v / flm_ms:.2f}x)" for v in r['train'].values()) + " |")
names = list(results[0]['latency'])
print("\nSampling: latency of one sample (batch 1) / throughput (samples/s at the batch given), and the "
      "latency as a multiple of the FMLM's one step.")
print("\n| L | K | batch | " + " | ".join(names) + " |")
print("| --- | --- | --- |" + " --- |" * len(names))
for r in results:
    ref = r['latency']['FMLM 1 step']
    print(f"| {r['L']} | {r['K']} | {r['batch']} | "
          + " | ".join(f"{1000 * r['latency'][n]:.1f} ms ({r['latency'][n] / ref:.1f}x) / {r['throughput'][n]:.3g}/s"
                       for n in names) + " |")
for r in results:
    print(f"L={r['L']} K={r['K']}: AR (KV cache) latency / FMLM 1-step latency = "
          f"{r['latency']['AR (KV cache)'] / r['latency']['FMLM 1 step']:.1f}")
if out:
    with open(out, 'w') as f:
        json.dump({'config': config, 'device': device, 'threads': torch.get_num_threads(), 'results': results}, f,
                  indent=1)
    print(f"wrote {out}")
