"""
Speed of every method with the same transformer, in one run on one machine: read the ratios,
not the absolute times (which drift on shared machines). Random weights: speed does not
depend on them.

For each sequence length L and vocabulary size K:
- training: the time of one optimizer step of each kind in --train (the FLM, the FMLM's stage 1
  and stage 2, MDLM and AR by default; also flowmap), at one batch size for all, with its tokens/s
  and, for the kinds of one forward and backward pass per step (flm, mdlm, ar), its model FLOPs
  utilisation (MFU): model FLOPs per second over --peak_flops;
- sampling: the latency of one sample (batch 1) and the throughput at --batch of each sampler in
  --samplers: the FLM at --flm_steps, the FMLM (stage 2) at 1, 2 and 4 steps, MDLM at 8 steps and
  AR with its KV cache.
The FLM's and FMLM's state is a (B, L, K) tensor (and so is the input of their networks), which
at K = 50257 and L = 1024 is 206 MB per sample: where a batch would need more than --mem_gb,
it is halved until it fits, and the table says which batch was used.

Model FLOPs per token, as nanoGPT estimates them: 6 N for the N weights that act on every token
(2 N forward, 4 N backward; the FLM's input layer, a K x d matrix, is one of them, AR's embedding,
a lookup, is not; the per-sequence time conditioning is left out) plus 12 n_layer d L for attention
(scores and values, forward and backward; causal attention is counted in full, as nanoGPT does).

$ python bench.py                                   # L = 128, 1024 and K = 65, 50257 on this machine
$ python bench.py --L=128 --K=65 --out=bench.json
On one GPU, the OpenWebText network (12 x 768, L = 1024, K = 50257) in bfloat16 autocast, compiled:
an FLM training step against AR's (tokens/s, MFU of an H100/H200's dense bf16 peak, 989 TFLOPS),
and the one-step FMLM's latency for a 1024-token sample (a few minutes, most of it compiling):
$ python bench.py config/bench_owt_gpu.py --out=bench-owt-gpu.json
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
train = 'flm,stage1,stage2,mdlm,ar'           # the kinds whose training step is timed ('' for none)
samplers = 'flm,fmlm1,fmlm2,fmlm4,mdlm,ar'    # the samplers timed ('' for none)
batch = 32                # the throughput batch (smaller where it does not fit in --mem_gb)
train_batch = 32          # the training batch (same rule)
flm_steps = 32            # the FLM's sampler steps
reps = 3                  # timed repetitions (the median is reported) after one warm-up call
mem_gb = 6.0              # memory a batch may take
device = 'auto'
dtype = 'auto'            # 'auto': bfloat16 autocast on a GPU that has it, else float32
compile = False           # torch.compile the timed networks (the warm-up call compiles; not timed)
peak_flops = 989e12       # the device's peak FLOP/s for MFU: H100 / H200 SXM, bf16 dense
seed = 1337
out = ''                  # also write the figures as JSON here
# -----------------------------------------------------------------------------
config_keys = [k for k, v in globals().items() if not k.startswith('_') and isinstance(v, (int, float, bool, str))]
config = configure({k: globals()[k] for k in config_keys}, sys.argv[1:])
globals().update(config)
Ls, Ks = int_list(L, 'L', 2), int_list(K, 'K', 2)
for key in ('batch', 'train_batch', 'flm_steps', 'reps', 'n_layer', 'n_head', 'n_embd', 'n_cond'):
    if config[key] < 1:
        die(f"--{key} must be >= 1, got {config[key]}")
if n_embd % n_head or n_embd // n_head % 2:
    die(f"--n_head={n_head} must divide --n_embd={n_embd} into heads of even width")
if mem_gb <= 0 or peak_flops <= 0:
    die(f"--mem_gb and --peak_flops must be > 0, got {mem_gb} and {peak_flops}")
# display names; a sampler is (name, the kind of its network, steps)
TRAIN = {'flm': 'FLM', 'stage1': 'FMLM stage 1', 'stage2': 'FMLM stage 2', 'flowmap': 'FMLM flowmap',
         'mdlm': 'MDLM', 'ar': 'AR'}
SAMPLERS = {'flm': (f'FLM {flm_steps} steps', 'flm', flm_steps), 'fmlm1': ('FMLM 1 step', 'stage2', 1),
            'fmlm2': ('FMLM 2 steps', 'stage2', 2), 'fmlm4': ('FMLM 4 steps', 'stage2', 4),
            'mdlm': ('MDLM 8 steps', 'mdlm', 8), 'ar': ('AR (KV cache)', 'ar', 0)}
ONE_PASS = ('flm', 'mdlm', 'ar')  # one forward and backward pass per step: their MFU is reported
train_kinds, sampler_keys = [k for k in train.split(',') if k], [k for k in samplers.split(',') if k]
for key, given, known in (('train', train_kinds, TRAIN), ('samplers', sampler_keys, SAMPLERS)):
    if any(k not in known for k in given):
        die(f"--{key} takes a comma-separated list of {', '.join(known)}; got '{config[key]}'")
if not train_kinds and not sampler_keys:
    die("nothing to time: --train and --samplers are both empty")
device, device_type, dtype, ctx = system(device, dtype)
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
torch.manual_seed(seed)


def sync():
    if device_type == 'cuda':
        torch.cuda.synchronize()


def timed(fn):
    """Median seconds of fn() over `reps` calls after a warm-up (which compiles, with --compile);
    without --compile, a call over 10 s is timed once."""
    t0 = time.perf_counter()
    fn()
    sync()
    first = time.perf_counter() - t0
    if first > 10 and not compile:
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
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                            fused=device_type == 'cuda')

    def step():
        with ctx:
            loss = loss_fn()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def flops_per_token(net, seq_len):
    """nanoGPT's estimate (see the docstring): 6 N + 12 n_layer d L."""
    per_sequence = ('adaLN', 'time_embed', 'loss_weight')  # the time conditioning: once per sequence
    N = sum(p.numel() for name, m in net.named_modules() if isinstance(m, torch.nn.Linear)
            and not any(k in name for k in per_sequence) for p in m.parameters())
    return 6 * N + 12 * net.cfg.n_layer * net.cfg.n_embd * seq_len


def compiled(net):
    return torch.compile(net) if compile else net


results = []
for seq_len in Ls:
    for vocab in Ks:
        args = dict(vocab_size=vocab, block_size=seq_len, n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_cond=n_cond)
        table = flm.g_table(vocab, device)
        teacher = kinds.network('flm', args).to(device).requires_grad_(False)
        build = {'flm': lambda: kinds.network('flm', args), 'stage1': lambda: flm.flow_map_student(teacher, 1),
                 'stage2': lambda: flm.flow_map_student(teacher, 2), 'flowmap': lambda: flm.flow_map_student(teacher, 2),
                 'mdlm': lambda: kinds.network('mdlm', args), 'ar': lambda: kinds.network('ar', args)}
        nets = {}  # only the networks this run times: a 12 x 768 network at K = 50257 is 0.7 GB

        def net_of(kind):
            if kind not in nets:
                nets[kind] = build[kind]().to(device)
            return nets[kind]
        residual = net_of('stage1') if 'stage2' in train_kinds else None  # stage 2's target reads r_phi
        row = {'L': seq_len, 'K': vocab, 'train': {}, 'tokens_per_s': {}, 'mfu': {}, 'latency': {}, 'throughput': {}}
        # training: a (B, L, K) tensor costs 4 L K bytes per sample; a distillation step holds ~24 of
        # them at once, an FLM step ~10 (its noisy input, logits and their gradients, autocast's copies)
        B = fitting(train_batch, (24 if set(train_kinds) - set(ONE_PASS) else 10) * 4 * seq_len * vocab)
        row['train_batch'] = B
        x = torch.randint(0, vocab, (B, seq_len), device=device)
        for kind in train_kinds:
            name, model = TRAIN[kind], net_of(kind).train()
            loss_fn = kinds.loss_fn(kind, vocab, table, teacher, residual,
                                    {'stage1': 64, 'stage2': 128, 'flowmap': 64}.get(kind, 1), weighted=True)
            step_model = compiled(model)
            seconds = timed(train_step(model, lambda: loss_fn(step_model, x)))
            model.eval()
            row['train'][name], row['tokens_per_s'][name] = seconds, B * seq_len / seconds
            line = f"{1000 * seconds:.1f} ms, {B * seq_len / seconds:,.0f} tokens/s"
            if kind in ONE_PASS:
                row['mfu'][name] = flops_per_token(model, seq_len) * B * seq_len / seconds / peak_flops
                line += f", MFU {100 * row['mfu'][name]:.3g}% of {peak_flops:.3g} FLOP/s"
            print(f"L={seq_len} K={vocab}: train step {name} (batch {B}): {line}", flush=True)
            if device_type == 'cuda':
                torch.cuda.empty_cache()

        # sampling: the flow samplers hold ~5 (B, L, K) tensors
        B = fitting(batch, 5 * 4 * seq_len * vocab)
        row['batch'] = B
        gen = torch.Generator(device=device).manual_seed(seed)
        with torch.no_grad():
            for key in sampler_keys:
                name, kind, steps = SAMPLERS[key]
                net = net_of(kind).eval()
                # AR's KV cache changes shapes at every token: it is never compiled
                sample = kinds.sampler(kind, net if kind == 'ar' else compiled(net), table)

                def run(n):
                    with ctx:
                        return sample(n, seq_len, steps, generator=gen, device=device)
                row['latency'][name] = timed(lambda: run(1))
                row['throughput'][name] = B / (row['latency'][name] if B == 1 else timed(lambda: run(B)))
                print(f"L={seq_len} K={vocab}: {name}: {1000 * row['latency'][name]:.1f} ms per sample at batch 1, "
                      f"{row['throughput'][name]:.2f} samples/s at batch {B}", flush=True)
        results.append(row)
        del teacher, residual, nets
        if device_type == 'cuda':
            torch.cuda.empty_cache()

# -----------------------------------------------------------------------------
# the tables: times, and ratios to the reference of each block (the FLM; the FMLM's one step)
print(f"\n{n_layer} layers, width {n_embd}, {device} ({dtype}{', compiled' if compile else ''}), "
      f"{torch.get_num_threads()} threads; median of {reps}")
names = list(results[0]['train'])
if names:
    print("\n| L | K | batch | " + " | ".join(names) + " |")
    print("| --- | --- | --- |" + " --- |" * len(names))
    for r in results:
        ref = r['train'].get('FLM')
        print(f"| {r['L']} | {r['K']} | {r['train_batch']} | "
              + " | ".join(f"{1000 * v:.0f} ms" + (f" ({v / ref:.2f}x)" if ref else "") for v in r['train'].values())
              + " |")
    for r in results:
        print(f"L={r['L']} K={r['K']}: training tokens/s " + ", ".join(
            f"{n} {r['tokens_per_s'][n]:,.0f}" + (f" (MFU {100 * r['mfu'][n]:.3g}%)" if n in r['mfu'] else "")
            for n in names))
names = list(results[0]['latency'])
if names:
    print("\nSampling: latency of one sample (batch 1) / throughput (samples/s at the batch given), and the "
          "latency as a multiple of the FMLM's one step.")
    print("\n| L | K | batch | " + " | ".join(names) + " |")
    print("| --- | --- | --- |" + " --- |" * len(names))
    for r in results:
        ref = r['latency'].get('FMLM 1 step')
        print(f"| {r['L']} | {r['K']} | {r['batch']} | "
              + " | ".join(f"{1000 * r['latency'][n]:.1f} ms" + (f" ({r['latency'][n] / ref:.1f}x)" if ref else "")
                           + f" / {r['throughput'][n]:.3g}/s" for n in names) + " |")
    for r in results:
        if 'AR (KV cache)' in r['latency'] and 'FMLM 1 step' in r['latency']:
            print(f"L={r['L']} K={r['K']}: AR (KV cache) latency / FMLM 1-step latency = "
                  f"{r['latency']['AR (KV cache)'] / r['latency']['FMLM 1 step']:.1f}")
if out:
    with open(out, 'w') as f:
        json.dump({'config': config, 'device': device, 'dtype': dtype, 'threads': torch.get_num_threads(),
                   'results': results}, f, indent=1)
    print(f"wrote {out}")
