"""
Speed of every method with the same transformer, in one run on one machine: read the ratios,
not the absolute times (which drift on shared machines). Random weights: speed does not
depend on them.

For each sequence length L and vocabulary size K:
- training: the time of one optimizer step of each kind in --train (the FLM, the FMLM's stage 1
  and stage 2, the one-network flow map, MDLM and AR by default), at one batch size for all, the
  kinds timed in turn (a step of each, then again), as a multiple of AR's step, with its tokens/s
  and its model FLOPs utilisation (MFU): model FLOPs per second over the peak (--peak_flops, or a
  known GPU's: tools/runs.py PEAK_FLOPS), the figure train.py logs;
- sampling: the latency of one sample (batch 1) and the throughput at --batch of each sampler in
  --samplers: the FLM at --flm_steps, the FMLM (stage 2) at 1, 2 and 4 steps, MDLM at 8 steps and
  AR with its KV cache;
- memory: where K > d, the peak memory of the FLM's sampler at --mem_steps with its state in d
  dimensions (flm.py 7) against the dense (B, L, K) state: the peak resident memory of this process
  on a CPU (Linux), the peak allocated memory on a GPU.
Where K > d no loss or sampler holds a (B, L, K) tensor other than the networks' logits (flm.py 7),
as in an AR model; at K = 50257 and L = 1024 each is 206 MB per sample: where a batch would need
more than --mem_gb, it is halved until it fits, and the tables say which batch was used.

Model FLOPs of a training step (tools/runs.py train_flops), as nanoGPT estimates them: per token
6 N for the N weights that act on every token (2 N forward, 4 N backward; the FLM's input layer, a
K x d matrix, is one of them unless its state is projected, flm.py 7; AR's embedding, a lookup, is
not; the per-sequence time conditioning is left out) plus 12 n_layer d L for attention (causal
attention counted in full, as nanoGPT does); a distillation adds its no-grad target passes (2 N +
4 n_layer d L per token each) and a projected state its Gram, noise and projections.

$ python bench.py                                   # L = 128, 1024 and K = 65, 50257 on this machine
$ python bench.py --L=128 --K=65 --out=bench.json
On one GPU, the OpenWebText network (12 x 768, L = 1024, K = 50257) in bfloat16 autocast, compiled:
an FLM training step against AR's (tokens/s, MFU of the GPU's dense bf16 peak, e.g. an H100 SXM's 989 TFLOPS),
and the one-step FMLM's latency for a 1024-token sample (a few minutes, most of it compiling):
$ python bench.py config/bench_owt_gpu.py --out=bench-owt-gpu.json
"""

import gc
import json
import os
import sys
import time

import torch

import flm
from configurator import configure, die, int_list
from tools import runs
from tools.runs import system

# -----------------------------------------------------------------------------
L = '128,1024'            # sequence lengths
K = '65,50257'            # vocabulary sizes: tiny Shakespeare's characters, GPT-2's BPE
n_layer = 4               # the transformer: train.py's default
n_head = 4
n_embd = 128
n_cond = 128
train = 'flm,stage1,stage2,flowmap,mdlm,ar'   # the kinds whose training step is timed ('' for none)
samplers = 'flm,fmlm1,fmlm2,fmlm4,mdlm,ar'    # the samplers timed ('' for none)
batch = 32                # the throughput batch (smaller where it does not fit in --mem_gb)
train_batch = 32          # the training batch (same rule)
flm_steps = 32            # the FLM's sampler steps
mem_steps = 64            # the FLM sampler's steps whose peak memory is measured, d-dim state and dense (0: none)
mem_tokens = 1024         # ... at the batch of this many tokens (8 samples at L = 128, 1 at L = 1024)
reps = 5                  # timed repetitions (the median is reported) after one warm-up call
mem_gb = 8.0              # memory a batch may take
device = 'auto'
dtype = 'auto'            # 'auto': bfloat16 autocast on a GPU that has it, else float32
compile = False           # torch.compile the timed networks (the warm-up call compiles; not timed)
peak_flops = 0.0          # the device's peak FLOP/s for MFU; 0: a known GPU's (tools/runs.py PEAK_FLOPS), else no MFU
seed = 1337
out = ''                  # also write the figures as JSON here
# -----------------------------------------------------------------------------
config_keys = [k for k, v in globals().items() if not k.startswith('_') and isinstance(v, (int, float, bool, str))]
config = configure({k: globals()[k] for k in config_keys}, sys.argv[1:])
globals().update(config)
Ls, Ks = int_list(L, 'L', 2), int_list(K, 'K', 2)
for key in ('batch', 'train_batch', 'flm_steps', 'reps', 'n_layer', 'n_head', 'n_embd', 'n_cond', 'mem_tokens'):
    if config[key] < 1:
        die(f"--{key} must be >= 1, got {config[key]}")
if n_embd % n_head or n_embd // n_head % 2:
    die(f"--n_head={n_head} must divide --n_embd={n_embd} into heads of even width")
if mem_steps < 0:
    die(f"--mem_steps must be >= 0 (0: no memory measurement), got {mem_steps}")
if mem_gb <= 0 or peak_flops < 0:
    die(f"--mem_gb must be > 0 and --peak_flops >= 0, got {mem_gb} and {peak_flops}")
# display names; a sampler is (name, the kind of its network, steps)
TRAIN = {'flm': 'FLM', 'stage1': 'FMLM stage 1', 'stage2': 'FMLM stage 2', 'flowmap': 'FMLM flowmap',
         'mdlm': 'MDLM', 'ar': 'AR'}
SAMPLERS = {'flm': (f'FLM {flm_steps} steps', 'flm', flm_steps), 'fmlm1': ('FMLM 1 step', 'stage2', 1),
            'fmlm2': ('FMLM 2 steps', 'stage2', 2), 'fmlm4': ('FMLM 4 steps', 'stage2', 4),
            'mdlm': ('MDLM 8 steps', 'mdlm', 8), 'ar': ('AR (KV cache)', 'ar', 0)}
ONE_PASS = ('flm', 'mdlm', 'ar')  # one forward and backward pass per step
train_kinds, sampler_keys = [k for k in train.split(',') if k], [k for k in samplers.split(',') if k]
for key, given, known in (('train', train_kinds, TRAIN), ('samplers', sampler_keys, SAMPLERS)):
    if any(k not in known for k in given):
        die(f"--{key} takes a comma-separated list of {', '.join(known)}; got '{config[key]}'")
if not train_kinds and not sampler_keys and not mem_steps:
    die("nothing to measure: --train and --samplers are empty and --mem_steps is 0")
device, device_type, dtype, ctx = system(device, dtype)
peak = runs.peak_flops(device, peak_flops)
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


def timed_in_turn(fns):
    """{name: median seconds of fn()} over `reps` rounds after a warm-up call of each, the fns called in
    turn within each round, so that the machine's drift (other load, clock speed) falls on all alike;
    without --compile, one whose warm-up took over 10 s is timed by that call alone."""
    first, times = {}, {k: [] for k in fns}
    for k, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        sync()
        first[k] = time.perf_counter() - t0
    for _ in range(reps):
        for k, fn in fns.items():
            if first[k] > 10 and not compile:
                continue
            t0 = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t0)
    return {k: sorted(v)[len(v) // 2] if v else first[k] for k, v in times.items()}


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


def rss_kb(field):
    """VmRSS or VmHWM (the peak since the last reset) of this process, in kB; None off Linux."""
    try:
        with open('/proc/self/status') as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ':'))
    except (OSError, StopIteration):
        return None


def peak_memory(fn):
    """Bytes by which fn() raised this process's memory above its level at the call: on a GPU the
    peak allocated memory, on a CPU the peak resident set (Linux: its mark is reset here). None
    where it cannot be measured."""
    gc.collect()
    if device_type == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    if device_type != 'cpu' or rss_kb('VmRSS') is None or not os.access('/proc/self/clear_refs', os.W_OK):
        return None
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # the kernel's reset of the peak resident set (VmHWM)
    base = rss_kb('VmRSS')
    fn()
    return 1024 * (rss_kb('VmHWM') - base)


def compiled(net):
    return torch.compile(net) if compile else net


results = []
for seq_len in Ls:
    for vocab in Ks:
        args = dict(vocab_size=vocab, block_size=seq_len, n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_cond=n_cond)
        table = flm.g_table(vocab, device)
        teacher = runs.network('flm', args).to(device).requires_grad_(False)
        build = {'flm': lambda: runs.network('flm', args), 'stage1': lambda: flm.flow_map_student(teacher, 1),
                 'stage2': lambda: flm.flow_map_student(teacher, 2), 'flowmap': lambda: flm.flow_map_student(teacher, 2),
                 'mdlm': lambda: runs.network('mdlm', args), 'ar': lambda: runs.network('ar', args)}
        nets = {}  # only the networks this run times: a 12 x 768 network at K = 50257 is 0.7 GB

        def net_of(kind):
            if kind not in nets:
                nets[kind] = build[kind]().to(device)
            return nets[kind]
        residual = net_of('stage1') if 'stage2' in train_kinds else None  # stage 2's target reads r_phi
        row = {'L': seq_len, 'K': vocab, 'train': {}, 'tokens_per_s': {}, 'mfu': {}, 'latency': {}, 'throughput': {},
               'memory': {}}
        # training: a (B, L, K) tensor costs 4 L K bytes per sample; a distillation step holds ~10 of
        # them at once (several networks' logits, softmaxes, gradients; measured: 1.9 GB at B = 8,
        # L = 128, K = 50257), one forward and backward pass ~6 (and where K <= d, the dense state and noise)
        B = fitting(train_batch, (10 if set(train_kinds) - set(ONE_PASS) else 6) * 4 * seq_len * vocab)
        row['train_batch'] = B
        x = torch.randint(0, vocab, (B, seq_len), device=device)
        steps = {}
        for kind in train_kinds:
            loss_fn = runs.loss_fn(kind, vocab, table, teacher, residual,
                                    {'stage1': 64, 'stage2': 128, 'flowmap': 64}.get(kind, 1), weighted=True)
            model = net_of(kind).train()
            steps[kind] = train_step(model, lambda loss_fn=loss_fn, step_model=compiled(model): loss_fn(step_model, x))
        seconds_of = timed_in_turn(steps)
        del steps  # the optimizers' state
        for kind in train_kinds:
            name, model, seconds = TRAIN[kind], net_of(kind).eval(), seconds_of[kind]
            row['train'][name], row['tokens_per_s'][name] = seconds, B * seq_len / seconds
            line = f"{1000 * seconds:.1f} ms, {B * seq_len / seconds:,.0f} tokens/s"
            if peak:
                row['mfu'][name] = runs.train_flops(kind, model, B, seq_len, teacher, residual) / seconds / peak
                line += f", MFU {100 * row['mfu'][name]:.3g}% of {peak:.3g} FLOP/s"
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
                sample = runs.sampler(kind, net if kind == 'ar' else compiled(net), table)

                def run(n):
                    with ctx:
                        return sample(n, seq_len, steps, generator=gen, device=device)
                row['latency'][name] = timed(lambda: run(1))
                row['throughput'][name] = B / (row['latency'][name] if B == 1 else timed(lambda: run(B)))
                print(f"L={seq_len} K={vocab}: {name}: {1000 * row['latency'][name]:.1f} ms per sample at batch 1, "
                      f"{row['throughput'][name]:.2f} samples/s at batch {B}", flush=True)
        # memory: the FLM's sampler, its state in d dims against the dense state (the same tokens, flm.py 7)
        net = net_of('flm').eval()
        if mem_steps and flm.StateSpace(vocab, [net]).projected:
            B = max(1, mem_tokens // seq_len)
            row['memory_batch'] = B
            for name, projected in (('d-space', True), ('dense', False)):
                def run():
                    with torch.no_grad(), ctx:
                        flm.euler_sample(net, table, (B, seq_len, vocab), mem_steps, device=device, projected=projected,
                                         generator=torch.Generator(device=device).manual_seed(seed))
                row['memory'][name] = peak_memory(run)
            if None not in row['memory'].values():
                print(f"L={seq_len} K={vocab}: FLM sampler, {mem_steps} steps, batch {B}: peak memory "
                      f"{row['memory']['d-space'] / 2**20:.0f} MiB with a d-dim state, "
                      f"{row['memory']['dense'] / 2**20:.0f} MiB dense", flush=True)
        results.append(row)
        del teacher, residual, nets, net
        if device_type == 'cuda':
            torch.cuda.empty_cache()

# -----------------------------------------------------------------------------
# the tables: times, and ratios to the reference of each block (the FLM; the FMLM's one step)
print(f"\n{n_layer} layers, width {n_embd}, {device} ({dtype}{', compiled' if compile else ''}), "
      f"{torch.get_num_threads()} threads; median of {reps}")
names = list(results[0]['train'])
if names:
    print("\nTraining: one optimizer step, and as a multiple of AR's (else the FLM's).")
    print("\n| L | K | batch | " + " | ".join(names) + " |")
    print("| --- | --- | --- |" + " --- |" * len(names))
    for r in results:
        ref = r['train'].get('AR', r['train'].get('FLM'))
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
measured = [r for r in results if r['memory'] and None not in r['memory'].values()]
if measured:
    print(f"\nMemory: peak of the FLM's {mem_steps}-step sampler ({'allocated' if device_type == 'cuda' else 'resident'})"
          f", its state in d dims and dense.\n\n| L | K | batch | d-space | dense | d-space / dense |\n| --- | --- | --- | --- | --- | --- |")
    for r in measured:
        m = r['memory']
        print(f"| {r['L']} | {r['K']} | {r['memory_batch']} | {m['d-space'] / 2**20:.0f} MiB | {m['dense'] / 2**20:.0f} MiB "
              f"| {m['d-space'] / m['dense']:.2f} |")
elif mem_steps and any(r['memory'] for r in results):
    print("\nMemory: not measured on this system (it needs Linux's /proc or a GPU)")
if out:
    with open(out, 'w') as f:
        json.dump({'config': config, 'device': device, 'dtype': dtype, 'peak_flops': peak,
                   'threads': torch.get_num_threads(), 'results': results}, f, indent=1)
    print(f"wrote {out}")
