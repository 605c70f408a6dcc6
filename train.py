"""
Train a flow-based language model (FLM), distil one into a flow map (FMLM), or train a
baseline (baselines.py: autoregressive or masked diffusion) with the same data and budget.

On one CPU or GPU (with no arguments: the tiny Shakespeare char model):
$ python train.py
$ python train.py --batch_size=64 --max_iters=1000

Distil a trained FLM into a one-step flow map, in two stages (method.md 5):
$ python train.py config/distill_stage1_shakespeare_char.py --teacher=out-shakespeare-char/ckpt.pt
$ python train.py config/distill_stage2_shakespeare_char.py --teacher=out-shakespeare-char/ckpt.pt \
      --stage1=out-shakespeare-char-fm1/ckpt.pt

The baselines, and the AR judge of generated text (eval.py):
$ python train.py --model=ar --out_dir=out-shakespeare-char-ar
$ python train.py --model=mdlm --out_dir=out-shakespeare-char-mdlm

With DDP on 4 GPUs of one node:
$ torchrun --standalone --nproc_per_node=4 train.py config/train_owt.py

Resume a run exactly where its checkpoint left it:
$ python train.py --init_from=resume --out_dir=out-shakespeare-char
"""

import hashlib
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import baselines
import flm
import textstats
from configurator import configure, die

# -----------------------------------------------------------------------------
# default config values: the tiny Shakespeare char FLM, ~16 minutes on a 2-core CPU
# I/O
out_dir = 'out-shakespeare-char'
eval_interval = 300
log_interval = 10
eval_iters = 4            # fixed batches per split at each eval
eval_sample_steps = 32    # Euler steps of the sample printed at each eval
init_from = 'scratch'     # 'scratch' or 'resume'
# data
dataset = 'shakespeare_char'  # a folder under data/, or a path to one
gradient_accumulation_steps = 1
batch_size = 32
block_size = 128
# model
model = 'flm'             # 'flm', or a baseline on the same transformer: 'ar' or 'mdlm' (baselines.py)
n_layer = 4
n_head = 4
n_embd = 128
n_cond = 128
dropout = 0.0             # measured: 0.1 slowed the CPU step by 25% and did not help in 20 minutes
# AdamW optimizer, warmup then (optionally) cosine decay
learning_rate = 2e-3
max_iters = 3600
weight_decay = 0.0
beta1 = 0.9
beta2 = 0.99
grad_clip = 1.0
warmup_iters = 100
decay_lr = True
lr_decay_iters = 3600
min_lr = 1e-4
t_power = 1.0             # train at t = u^t_power; 1.0 is uniform t (the paper), see README
ema_decay = 0.999         # the paper's 0.9999 suits 1M steps; ~1/(1 - decay) steps are averaged
# flow-map distillation (FMLM, method.md 5) of a trained FLM; presets in config/distill_*.py
distill = ''              # '' trains an FLM; 'stage1' or 'stage2' distils one
teacher = ''              # the FLM checkpoint to distil (both stages)
stage1 = ''               # stage 2: the stage-1 checkpoint whose flow map is the target
boundary_prob = 0         # the whole jump s=0, t=1 is drawn w.p. 1/boundary_prob; 0: the paper's, 64 / 128
loss_weighting = True     # distillation: the learnable loss weighting (method.md 3)
eval_samples = 32         # distillation evals: fixed-noise samples per sampler
eval_ref_steps = 64       # ... compared with the teacher's Euler sampler at this many steps
# system
device = 'auto'           # 'auto', 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = 'auto'            # 'auto', 'float32', 'bfloat16', 'float16'
compile = False
backend = 'auto'          # DDP: 'nccl' on GPU, 'gloo' on CPU
seed = 1337
# -----------------------------------------------------------------------------
config_keys = [k for k, v in globals().items() if not k.startswith('_') and isinstance(v, (int, float, bool, str))]
config = configure({k: globals()[k] for k in config_keys}, sys.argv[1:])
globals().update(config)
if init_from not in ('scratch', 'resume'):
    die(f"--init_from must be 'scratch' or 'resume', got '{init_from}'")
if distill not in ('', 'stage1', 'stage2'):
    die(f"--distill must be '', 'stage1' or 'stage2', got '{distill}'")
if model not in ('flm', *baselines.KINDS):
    die(f"--model must be one of flm, {', '.join(baselines.KINDS)}; got '{model}'")
if model != 'flm' and distill:
    die(f"--distill distils an FLM; it does not go with --model={model}")
if boundary_prob == 0:
    boundary_prob = {'stage1': 64, 'stage2': 128}.get(distill, 0)
elif boundary_prob < 1:
    die(f"--boundary_prob must be >= 1 (the boundary's probability is 1/boundary_prob), got {boundary_prob}")
if dtype not in ('auto', 'float32', 'bfloat16', 'float16'):
    die(f"--dtype must be one of auto, float32, bfloat16, float16; got '{dtype}'")
for key in ('batch_size', 'block_size', 'max_iters', 'eval_interval', 'log_interval', 'eval_iters',
            'eval_sample_steps', 'gradient_accumulation_steps', 'eval_samples', 'eval_ref_steps'):
    if config[key] <= 0:
        die(f"--{key} must be > 0, got {config[key]}")
ckpt_path = os.path.join(out_dir, 'ckpt.pt')
if init_from == 'resume' and not os.path.isfile(ckpt_path):
    die(f"--init_from=resume: no checkpoint at {ckpt_path}")
if init_from == 'scratch' and distill == 'stage1' and not teacher:
    die("--distill=stage1 needs --teacher=path/to/the/flm/ckpt.pt")
if init_from == 'scratch' and distill == 'stage2' and not stage1:
    die("--distill=stage2 needs --stage1=path/to/the/stage1/ckpt.pt (train it with --distill=stage1)")
# recorded in the checkpoint; from here on `model` is the network
kind = model if model != 'flm' else {'': 'flm', 'stage1': 'flowmap-1', 'stage2': 'flowmap-2'}[distill]

# -----------------------------------------------------------------------------
# devices, DDP
if device == 'auto':
    device = 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu'
device_type = 'cuda' if 'cuda' in device else 'mps' if 'mps' in device else 'cpu'
ddp = int(os.environ.get('RANK', -1)) != -1
if ddp:
    dist.init_process_group(backend=('nccl' if device_type == 'cuda' else 'gloo') if backend == 'auto' else backend)
    rank, local_rank, world_size = dist.get_rank(), int(os.environ['LOCAL_RANK']), dist.get_world_size()
    if device_type == 'cuda':
        device = f'cuda:{local_rank}'
        torch.cuda.set_device(device)
    if gradient_accumulation_steps % world_size:
        die(f"gradient_accumulation_steps ({gradient_accumulation_steps}) must be divisible by the number of processes ({world_size})")
    gradient_accumulation_steps //= world_size
else:
    rank, world_size = 0, 1
master_process = rank == 0
if dtype == 'auto':
    dtype = 'bfloat16' if device_type == 'cuda' and torch.cuda.is_bf16_supported() else 'float32'
ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
ctx = nullcontext() if ptdtype == torch.float32 else torch.autocast(device_type=device_type, dtype=ptdtype)
torch.manual_seed(seed + rank)
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
tokens_per_iter = gradient_accumulation_steps * world_size * batch_size * block_size
if master_process:
    print(f"tokens per iteration: {tokens_per_iter:,} on {world_size} process(es), device {device}, dtype {dtype}")

# -----------------------------------------------------------------------------
# data: train.bin / val.bin of uint16 token ids; meta.pkl holds a char vocabulary (else GPT-2 BPE)
here = os.path.dirname(os.path.abspath(__file__))
data_dir = dataset if os.path.isdir(dataset) else os.path.join(here, 'data', dataset)
prepare_script = os.path.join(data_dir, 'prepare.py')
missing = not all(os.path.isfile(os.path.join(data_dir, f)) for f in ('train.bin', 'val.bin'))
if missing and dataset == 'shakespeare_char':  # small: prepare it on the fly
    if master_process:
        print(f"preparing {dataset} ...")
        if subprocess.run([sys.executable, prepare_script]).returncode != 0:
            sys.exit(1)  # the prepare script has said why, in one line
    if ddp:
        dist.barrier()
elif missing:
    hint = f"python {os.path.relpath(prepare_script)}" if os.path.isfile(prepare_script) else "a prepare script"
    die(f"dataset '{dataset}' not found: no train.bin/val.bin in {data_dir}; prepare it with {hint}")

meta_path = os.path.join(data_dir, 'meta.pkl')
if os.path.isfile(meta_path):
    with open(meta_path, 'rb') as f:
        meta = pickle.load(f)
    meta = {'vocab_size': meta['vocab_size'], 'stoi': meta['stoi'], 'itos': meta['itos']}
else:
    meta = {'vocab_size': 50257, 'encoding': 'gpt2'}
vocab_size = meta['vocab_size']


def load_split(split):
    # a fresh memmap per call, as nanoGPT does, avoids a memory leak
    return np.memmap(os.path.join(data_dir, f'{split}.bin'), dtype=np.uint16, mode='r')


for split in ('train', 'val'):
    if len(load_split(split)) <= block_size:
        die(f"{split}.bin of '{dataset}' has fewer than block_size + 1 = {block_size + 1} tokens")


def get_batch(split, generator=None):
    data = load_split(split)
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    x = torch.stack([torch.from_numpy(data[i:i + block_size].astype(np.int64)) for i in ix])
    if device_type == 'cuda':
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


# unigram frequencies pi of train.bin (add-one smoothed so that no log pi is -inf),
# for the per-token Bayes denoiser behind the context gain
counts = np.bincount(load_split('train')[:100_000_000], minlength=vocab_size)
log_pi = torch.tensor(np.log((counts + 1) / (counts + 1).sum()), dtype=torch.float32, device=device)


def decode(ids):
    if 'itos' in meta:
        return ''.join(meta['itos'][i] for i in ids)
    import tiktoken
    return tiktoken.get_encoding('gpt2').decode(ids)

# -----------------------------------------------------------------------------
# model, optimizer, EMA
def load_checkpoint(path, flag):
    """flag: the option that named the file, for the error messages."""
    if not os.path.isfile(path):
        die(f"{flag}: no checkpoint at {path}")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        die(f"{flag}: cannot load {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def check_fits(ckpt, path, what, want_kind):
    """A checkpoint this run reads must have the right kind, vocabulary and block size."""
    got_kind, args = ckpt.get('kind', 'flm'), ckpt['model_args']
    if got_kind != want_kind:
        die(f"{path} is a '{got_kind}' checkpoint; {what} must be a '{want_kind}' checkpoint")
    if args['vocab_size'] != vocab_size or args['block_size'] != block_size:
        die(f"{what} {path} has vocab_size={args['vocab_size']}, block_size={args['block_size']}; "
            f"this run has {vocab_size}, {block_size}")


def fingerprint(state_dict):
    """A hash of a network's weights: which teacher a flow map was distilled from."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        h.update(k.encode())
        h.update(state_dict[k].detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def frozen(model_args, state_dict):
    net = flm.FLM(flm.FLMConfig(**model_args)).to(device)
    net.load_state_dict(state_dict)
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


model_args = dict(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head,
                  n_embd=n_embd, n_cond=n_cond, dropout=dropout)
iter_num, checkpoint = 0, None
if init_from == 'resume':
    checkpoint = load_checkpoint(ckpt_path, '--init_from=resume')
    check_fits(checkpoint, ckpt_path, f"--init_from=resume with --distill='{distill}'", kind)
    model_args, iter_num = checkpoint['model_args'], checkpoint['iter_num']

# distillation's frozen networks, all from EMA weights: stage 1 reads the FLM teacher, stage 2 the
# teacher and stage 1's r_phi. A stage-1 checkpoint carries its teacher's weights (its sampler
# needs them), so stage 2 takes both from it; --teacher is then checked against that copy.
teacher_net = residual_net = teacher_weights = None
teachers = {}  # kind -> path, model_args and weights fingerprint of each frozen network
if distill == 'stage1':
    if checkpoint is not None:  # resume: the teacher copy in the checkpoint
        teachers, teacher_weights = checkpoint['teachers'], checkpoint['teacher_weights']
    else:
        T = load_checkpoint(teacher, '--teacher')
        check_fits(T, teacher, '--teacher', 'flm')
        teacher_weights = T['ema']
        teachers = {'flm': {'path': teacher, 'model_args': T['model_args'], 'fingerprint': fingerprint(T['ema'])}}
elif distill == 'stage2':
    stage1 = stage1 or checkpoint['teachers']['flowmap-1']['path']
    S = load_checkpoint(stage1, '--stage1')
    check_fits(S, stage1, '--stage1', 'flowmap-1')
    teacher_weights = S['teacher_weights']
    teachers = {'flm': S['teachers']['flm'],
                'flowmap-1': {'path': stage1, 'model_args': S['model_args'], 'fingerprint': fingerprint(S['ema'])}}
    if checkpoint is not None and checkpoint['teachers']['flowmap-1']['fingerprint'] != teachers['flowmap-1']['fingerprint']:
        die(f"{stage1} is not the stage-1 checkpoint this run started from "
            f"({checkpoint['teachers']['flowmap-1']['path']}, since trained further or replaced)")
    residual_net = frozen(S['model_args'], S['ema'])
    S = None
if distill and teacher and not (distill == 'stage1' and checkpoint is None):
    T = load_checkpoint(teacher, '--teacher')
    check_fits(T, teacher, '--teacher', 'flm')
    if fingerprint(T['ema']) != teachers['flm']['fingerprint']:
        die(f"{teacher} is not the teacher of this distillation (it was distilled from {teachers['flm']['path']})")
T = None
if distill:
    teacher_net = frozen(teachers['flm']['model_args'], teacher_weights)
    model = flm.flow_map_student(teacher_net, 1 if distill == 'stage1' else 2)
    model_args = asdict(model.cfg)
elif kind in baselines.KINDS:
    model = baselines.Baseline(flm.FLMConfig(**model_args), kind).to(device)
else:
    model = flm.FLM(flm.FLMConfig(**model_args)).to(device)
if checkpoint is not None:
    model.load_state_dict(checkpoint['model'])
if master_process:
    what = {'flm': 'FLM', 'ar': 'AR baseline', 'mdlm': 'MDLM baseline', 'flowmap-1': 'stage-1 flow map (residual r_phi)',
            'flowmap-2': 'stage-2 flow map (h_psi)'}[kind]
    print(f"{what} with {model.num_params() / 1e6:.2f}M parameters"
          + (f", distilled from {teachers['flm']['path']}" if distill else ""))
table = flm.g_table(vocab_size, device)  # G(t), on the device: no host sync in the step

optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(beta1, beta2),
                              weight_decay=weight_decay, fused=device_type == 'cuda')
if checkpoint is not None:
    optimizer.load_state_dict(checkpoint['optimizer'])
scaler = torch.amp.GradScaler(device_type, enabled=(dtype == 'float16'))

raw_model = model
if compile:
    model = torch.compile(model)
if ddp:
    model = DDP(model, device_ids=[local_rank] if device_type == 'cuda' else None)
ema = flm.ema_copy(raw_model)  # after DDP: every rank starts from rank 0's weights
if checkpoint is not None:
    ema.load_state_dict(checkpoint['ema'])
    # each rank continues its own random stream where the checkpoint left it
    states = checkpoint['rng']
    if len(states) == world_size:
        torch.set_rng_state(states[rank]['cpu'])
        if device_type == 'cuda' and states[rank]['cuda'] is not None:
            torch.cuda.set_rng_state(states[rank]['cuda'])
    elif master_process:
        print(f"note: checkpoint has RNG states of {len(states)} processes, this run has {world_size}: fresh streams")
checkpoint = None  # free memory


def get_lr(it):
    if it < warmup_iters:  # linear warmup
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if not decay_lr:
        return learning_rate
    if it > lr_decay_iters:
        return min_lr
    coeff = 0.5 * (1.0 + math.cos(math.pi * (it - warmup_iters) / max(1, lr_decay_iters - warmup_iters)))
    return min_lr + coeff * (learning_rate - min_lr)

# -----------------------------------------------------------------------------
# evaluation on fixed batches with fixed noise: CE at a grid of t, and the context gain
eval_t = (0.1, 0.3, 0.5, 0.7, 0.9)
_gen = torch.Generator().manual_seed(seed)
eval_batches = {split: [get_batch(split, _gen) for _ in range(eval_iters)] for split in ('train', 'val')}


@torch.no_grad()
def evaluate(net):
    gen = torch.Generator(device=device).manual_seed(seed)  # the same noise at every eval
    out = {}
    for split, batches in eval_batches.items():
        ce = torch.zeros(len(eval_t), device=device)
        ce_bayes = torch.zeros((), device=device)
        for x in batches:
            for j, tj in enumerate(eval_t):
                t = torch.full((x.size(0),), tj, device=device)
                g = flm.G(t, table)
                eps = torch.randn(*x.shape, vocab_size, generator=gen, device=device)
                x_g = flm.interpolant(x, g, eps)
                with ctx:
                    logits = net(x_g, t)
                ce[j] += F.cross_entropy(logits.flatten(0, 1).float(), x.flatten())
                if tj == 0.5:
                    bayes = flm.unigram_denoiser_logits(x_g, g, log_pi)
                    ce_bayes += F.cross_entropy(bayes.flatten(0, 1), x.flatten())
        ce, ce_bayes = (ce / len(batches)).tolist(), ce_bayes.item() / len(batches)
        out[split] = {'ce': sum(ce) / len(ce), 'ce_t': ce, 'gain': ce_bayes - ce[eval_t.index(0.5)]}
    return out


@torch.no_grad()
def evaluate_baseline(net):
    """The baselines' figures on the same batches: an AR's NLL per token; MDLM's CE of the masked
    tokens at masking rates t = eval_t (fixed masks). gain: the unigram CE minus the AR's NLL or
    MDLM's CE at t = 0.5, what context is worth to the model."""
    gen = torch.Generator(device=device).manual_seed(seed)
    out = {}
    for split, batches in eval_batches.items():
        ce = torch.zeros(1 if kind == 'ar' else len(eval_t), device=device)
        ce_unigram = torch.zeros((), device=device)
        for x in batches:
            ce_unigram += F.cross_entropy(log_pi.expand(x.numel(), -1), x.flatten())
            with ctx:
                if kind == 'ar':
                    ce[0] += baselines.ar_loss(net, x, vocab_size)
                    continue
                for j, tj in enumerate(eval_t):
                    mask = torch.rand(x.shape, generator=gen, device=device) < tj
                    logits = net(torch.where(mask, vocab_size, x)).float()
                    ce[j] += F.cross_entropy(logits[mask], x[mask])
        ce, ce_unigram = (ce / len(batches)).tolist(), ce_unigram.item() / len(batches)
        out[split] = {'ce': sum(ce) / len(ce), 'ce_t': ce, 'gain': ce_unigram - ce[0 if kind == 'ar' else eval_t.index(0.5)]}
    return out


@torch.no_grad()
def generate(net, net_kind, steps, n):
    """n samples (ids, n x L) from the same noise at every call: kind's sampler, deterministic."""
    gen = torch.Generator(device=device).manual_seed(seed)
    shape = (n, block_size, vocab_size)
    with ctx:
        if net_kind == 'ar':
            return baselines.ar_sample(net, shape[:2], generator=gen, device=device)
        if net_kind == 'mdlm':
            return baselines.mdlm_sample(net, shape[:2], vocab_size, steps, generator=gen, device=device)
        if net_kind == 'flowmap-1':
            return flm.stage1_sample(teacher_net, net, table, shape, steps, generator=gen, device=device)
        return flm.euler_sample(net, table, shape, steps, generator=gen, device=device,
                                flow_map=net_kind == 'flowmap-2')


# distillation evals: the flow map's 1- and 4-step samples against the teacher's many-step ones,
# from the same noise: valid words (character data), unigram entropy, and agreement (the share
# of positions where the two texts have the same token: 1 would be a perfect flow map)
def sample_figures(ids):
    out = {'entropy': textstats.mean_unigram_entropy(ids.tolist()),
           'agreement': (ids == teacher_ids).float().mean().item()}
    if words is not None:
        out['valid_words'] = textstats.valid_word_fraction([decode(s) for s in ids.tolist()], words)
    return out


def figures_text(f):
    vw = f"valid words {100 * f['valid_words']:.1f}%, " if 'valid_words' in f else ''
    return f"{vw}entropy {f['entropy']:.3f}, agreement {100 * f['agreement']:.1f}%"


def evaluate_flow_map(net):
    """The figures of each eval, and the 1-step samples (the first is printed)."""
    out = {'teacher': teacher_figures, 'reference': reference}
    samples = {steps: generate(net, kind, steps, eval_samples) for steps in (1, 4)}
    for steps, ids in samples.items():
        out[f'{steps} step'] = sample_figures(ids)
    return out, samples[1]


if distill and master_process:  # the teacher's side is the same at every eval: once
    words, reference = (textstats.char_data_stats(data_dir, meta['itos'], block_size)
                        if 'itos' in meta else (None, None))
    teacher_ids = generate(teacher_net, 'flm', eval_ref_steps, eval_samples)
    teacher_figures = sample_figures(teacher_ids)


def save_checkpoint():
    # every rank's RNG state (so that a resumed run continues exactly); only rank 0 writes
    state = {'cpu': torch.get_rng_state(), 'cuda': torch.cuda.get_rng_state() if device_type == 'cuda' else None}
    weight_sum = sum(p.double().abs().sum() for p in raw_model.parameters()).item()
    if ddp:
        gathered = [None] * world_size
        dist.all_gather_object(gathered, (state, weight_sum))
        states, weight_sums = [s for s, _ in gathered], [f for _, f in gathered]
    else:
        states, weight_sums = [state], [weight_sum]
    if not master_process:
        return
    ckpt = {'kind': kind, 'model': raw_model.state_dict(), 'ema': ema.state_dict(),
            'optimizer': optimizer.state_dict(), 'model_args': model_args, 'iter_num': iter_num,
            'config': config, 'meta': meta, 'rng': states, 'weight_fingerprints': weight_sums,
            'teachers': teachers}
    if kind == 'flowmap-1':
        ckpt['teacher_weights'] = teacher_weights
    os.makedirs(out_dir, exist_ok=True)
    torch.save(ckpt, ckpt_path + '.tmp')
    os.replace(ckpt_path + '.tmp', ckpt_path)  # atomic: an interrupted save leaves the old file
    print(f"saved checkpoint to {ckpt_path}")

# -----------------------------------------------------------------------------
# training loop
def on_sigterm(signum, frame):
    raise KeyboardInterrupt


signal.signal(signal.SIGTERM, on_sigterm)  # a killed job saves like a Ctrl-C
t0 = time.time()
saved_at = -1
try:
    while True:
        if iter_num % eval_interval == 0 or iter_num == max_iters:
            if master_process and not distill:
                ev = evaluate(ema) if kind == 'flm' else evaluate_baseline(ema)
                tr, va = ev['train'], ev['val']
                gain = f"context gain {va['gain']:.4f} (train {tr['gain']:.4f})"
                if kind == 'ar':
                    print(f"eval {iter_num}: train nll {tr['ce']:.4f}, val nll {va['ce']:.4f} "
                          f"(ppl {math.exp(va['ce']):.3f}), {gain}")
                    print(f"sample: {decode(generate(ema, kind, 0, 1)[0].tolist())[:200]!r}")
                else:
                    print(f"eval {iter_num}: train ce {tr['ce']:.4f}, val ce {va['ce']:.4f} "
                          f"({'t' if kind == 'flm' else 'masked share'}="
                          f"{', '.join(f'{t}:{c:.3f}' for t, c in zip(eval_t, va['ce_t']))}), {gain}")
                    print(f"sample ({eval_sample_steps} steps): "
                          f"{decode(generate(ema, kind, eval_sample_steps, 1)[0].tolist())[:200]!r}")
                    ev = {'eval_t': eval_t, **ev}
            elif master_process:
                ev, one_step = evaluate_flow_map(ema)
                print(f"eval {iter_num}: " + " | ".join(f"{name}: {figures_text(ev[name])}" for name in ('1 step', '4 step'))
                      + f" | FLM at {eval_ref_steps} steps: {figures_text(ev['teacher'])}")
                print(f"sample (1 step): {decode(one_step[0].tolist())[:200]!r}")
            if master_process:
                os.makedirs(out_dir, exist_ok=True)
                with open(os.path.join(out_dir, 'eval_log.jsonl'), 'a') as f:  # for plot_eval.py
                    f.write(json.dumps({'iter': iter_num, 'kind': kind, **ev}) + '\n')
            save_checkpoint()
            saved_at = iter_num
            t0 = time.time()  # do not count the eval in the next step's time
        if iter_num >= max_iters:
            break

        lr = get_lr(iter_num)
        for group in optimizer.param_groups:
            group['lr'] = lr
        for micro_step in range(gradient_accumulation_steps):
            if ddp:  # sync gradients on the last micro step only
                model.require_backward_grad_sync = micro_step == gradient_accumulation_steps - 1
            x = get_batch('train')
            with ctx:
                if kind == 'ar':
                    loss = baselines.ar_loss(model, x, vocab_size)
                elif kind == 'mdlm':
                    loss = baselines.mdlm_loss(model, x, vocab_size)
                elif distill == 'stage1':
                    loss = flm.stage1_loss(model, teacher_net, x, table, vocab_size, boundary_prob, loss_weighting)
                elif distill == 'stage2':
                    loss = flm.stage2_loss(model, teacher_net, residual_net, x, table, vocab_size, boundary_prob,
                                           loss_weighting)
                else:
                    loss = flm.flm_loss(model, x, table, vocab_size, t_power=t_power)
                loss = loss / gradient_accumulation_steps
            scaler.scale(loss).backward()
        if grad_clip > 0.0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        flm.ema_update(ema, raw_model, min(ema_decay, (1 + iter_num) / (10 + iter_num)))
        iter_num += 1

        if iter_num % log_interval == 0 and master_process:
            dt = time.time() - t0
            lossf = loss.item() * gradient_accumulation_steps  # a sync: only every log_interval
            print(f"iter {iter_num}: loss {lossf:.4f}, lr {lr:.2e}, {dt * 1000 / log_interval:.1f} ms/iter, "
                  f"{tokens_per_iter * log_interval / dt:,.0f} tokens/s")
            t0 = time.time()
except KeyboardInterrupt:
    if iter_num != saved_at and not ddp:
        print(f"interrupted at iter {iter_num}: saving")
        save_checkpoint()
    sys.exit(130)
finally:
    if ddp:
        dist.destroy_process_group()
