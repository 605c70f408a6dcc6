"""
Sample from a checkpoint of any kind train.py writes, with that kind's sampler:
- an FLM ('flm'): the Euler sampler (flm.euler_sample), 64 steps by default. By default it
  redraws a share of the noise after each step (--eta, not in the paper; README, Sampling):
  --eta=0 is the paper's deterministic sampler;
- a stage-1 flow map ('flowmap-1'): teacher + residual, two passes per step (flm.stage1_sample);
- a stage-2 flow map ('flowmap-2'): one pass per step; one step by default: one-step text;
- the baselines (baselines.py): 'ar', left to right with a KV cache (--steps does not apply),
  and 'mdlm', unmasking from all masks in --steps steps, 128 by default.

$ python sample.py                                   # out-shakespeare-char/ckpt.pt, 64 steps
$ python sample.py --steps=8 --num_samples=4 --start="ROMEO:"
$ python sample.py --out_dir=out-shakespeare-char-fm2          # one step
$ python sample.py --ckpt=path/to/ckpt.pt --start=FILE:prompt.txt --out=samples.json
$ python sample.py --out_dir=out-shakespeare-char-mdlm --steps=32

--out writes the texts, their token ids, the settings and the seconds per sample, which
eval.py reads.
"""

import json
import os
import sys
import time
from contextlib import nullcontext

import torch

import baselines
import flm
import textstats
from configurator import configure, die

# -----------------------------------------------------------------------------
out_dir = 'out-shakespeare-char'  # reads out_dir/ckpt.pt ...
ckpt = ''                 # ... or this path
steps = 0                 # sampler steps; 0: the kind's default, 64 for an FLM, 1 for a flow map, 128 for MDLM
eta = -1.0                # share of fresh noise after each step (flm.euler_sample); 0: the paper's
                          # deterministic sampler; -1: the kind's default, 0.6 for an FLM (the most
                          # real words at 64 steps, README), 0 for a flow map
num_samples = 8
batch_size = 16           # samples generated at once
start = ''                # prompt text at the start of every sample, or FILE:path
seed = 1337
out = ''                  # write the samples and settings as JSON here
ema = True                # sample with the EMA weights
stats = True              # for character data: valid-word fraction and unigram entropy
device = 'auto'
dtype = 'auto'
# -----------------------------------------------------------------------------
config_keys = [k for k, v in globals().items() if not k.startswith('_') and isinstance(v, (int, float, bool, str))]
config = configure({k: globals()[k] for k in config_keys}, sys.argv[1:])
globals().update(config)
for key in ('num_samples', 'batch_size'):
    if config[key] <= 0:
        die(f"--{key} must be > 0, got {config[key]}")
if steps < 0:
    die(f"--steps must be >= 0 (0: the checkpoint kind's default), got {steps}")
if not (0 <= eta <= 1 or eta == -1):
    die(f"--eta must be in [0, 1] (or -1: the checkpoint kind's default), got {eta}")
if start.startswith('FILE:'):
    try:
        with open(start[5:], 'r', encoding='utf-8') as f:
            start = f.read()
    except OSError as e:
        die(f"cannot read the prompt file: {e}")

if device == 'auto':
    device = 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu'
device_type = 'cuda' if 'cuda' in device else 'mps' if 'mps' in device else 'cpu'
if dtype == 'auto':
    dtype = 'bfloat16' if device_type == 'cuda' and torch.cuda.is_bf16_supported() else 'float32'
ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}.get(dtype)
if ptdtype is None:
    die(f"--dtype must be one of auto, float32, bfloat16, float16; got '{dtype}'")
ctx = nullcontext() if ptdtype == torch.float32 else torch.autocast(device_type=device_type, dtype=ptdtype)

# -----------------------------------------------------------------------------
ckpt_path = ckpt or os.path.join(out_dir, 'ckpt.pt')
if not os.path.isfile(ckpt_path):
    die(f"no checkpoint at {ckpt_path}; train one with python train.py (or pass --ckpt=path)")
try:
    checkpoint = torch.load(ckpt_path, map_location=device, weights_only=True)
    kind = checkpoint.get('kind', 'flm')
    if kind not in ('flm', 'flowmap-1', 'flowmap-2', *baselines.KINDS):
        die(f"{ckpt_path} is a '{kind}' checkpoint; sample.py knows flm, flowmap-1, flowmap-2, "
            f"{', '.join(baselines.KINDS)}")
    if kind in baselines.KINDS:
        model = baselines.Baseline(flm.FLMConfig(**checkpoint['model_args']), kind)
    else:
        model = flm.FLM(flm.FLMConfig(**checkpoint['model_args']))
    model.load_state_dict(checkpoint['ema' if ema else 'model'])
    if kind == 'flowmap-1':  # its sampler needs the teacher too: the checkpoint carries its weights
        teacher = flm.FLM(flm.FLMConfig(**checkpoint['teachers']['flm']['model_args']))
        teacher.load_state_dict(checkpoint['teacher_weights'])
        teacher.eval().to(device)
except Exception as e:
    die(f"cannot load {ckpt_path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
model.eval().to(device)
meta, L, K = checkpoint['meta'], model.cfg.block_size, model.cfg.vocab_size
steps = L if kind == 'ar' else steps or {'flm': 64, 'mdlm': 128}.get(kind, 1)  # AR: one pass per token
if kind in baselines.KINDS and eta != -1:
    die(f"--eta is the flow samplers' fresh noise; the {kind} sampler has none")
eta = eta if eta >= 0 else (0.6 if kind == 'flm' else 0.0)
if kind == 'flowmap-1' and eta > 0:
    die("--eta: the stage-1 sampler has no fresh-noise option (its state is not a denoiser's estimate); use --eta=0")

if 'stoi' in meta:
    stoi, itos = meta['stoi'], meta['itos']
    unknown = sorted(set(c for c in start if c not in stoi))
    if unknown:
        die(f"the prompt has characters outside the vocabulary: {''.join(unknown)!r}")
    encode, decode = (lambda s: [stoi[c] for c in s]), (lambda ids: ''.join(itos[i] for i in ids))
else:
    import tiktoken
    enc = tiktoken.get_encoding('gpt2')
    encode, decode = (lambda s: enc.encode(s, allowed_special={'<|endoftext|>'})), enc.decode
prompt = encode(start)
if len(prompt) > L:
    die(f"the prompt is {len(prompt)} tokens long, longer than the block ({L})")

# -----------------------------------------------------------------------------
table = flm.g_table(K, device)
generator = torch.Generator(device=device).manual_seed(seed)
samples_ids = []
t0 = time.time()
for i in range(0, num_samples, batch_size):
    B = min(batch_size, num_samples - i)
    x_known = torch.zeros(B, L, dtype=torch.long, device=device)
    x_known[:, :len(prompt)] = torch.tensor(prompt, dtype=torch.long, device=device)
    known = torch.zeros(B, L, dtype=torch.bool, device=device)
    known[:, :len(prompt)] = True
    with ctx:
        if kind == 'ar':
            x = baselines.ar_sample(model, (B, L), x_known, known, generator=generator, device=device)
        elif kind == 'mdlm':
            x = baselines.mdlm_sample(model, (B, L), K, steps, x_known, known, generator=generator, device=device)
        elif kind == 'flowmap-1':
            x = flm.stage1_sample(teacher, model, table, (B, L, K), steps, x_known, known, generator=generator,
                                  device=device)
        else:  # a stage-2 flow map's jump has the Euler step's form (method.md 5)
            x = flm.euler_sample(model, table, (B, L, K), steps, x_known, known, generator=generator,
                                 device=device, eta=eta, flow_map=kind == 'flowmap-2')
    samples_ids += x.tolist()
if device_type == 'cuda':
    torch.cuda.synchronize()
seconds = (time.time() - t0) / num_samples
samples = [decode(ids) for ids in samples_ids]
for s in samples:
    print(s)
    print('---------------')
name = f"{kind}, {steps} steps" + (f", eta {eta:g}" if kind not in baselines.KINDS else '')
print(f"{seconds:.3f} s per sample ({name}, {num_samples} samples, batch {batch_size}, {device})")

result = {'samples': samples, 'ids': samples_ids, 'settings': {**config, 'steps': steps, 'eta': eta, 'start': start, 'ckpt': ckpt_path,
                                          'kind': kind},
          'seconds_per_sample': seconds}
if stats and 'itos' in meta:
    dataset = checkpoint['config']['dataset']
    data_dir = dataset if os.path.isdir(dataset) else os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', dataset)
    if os.path.isfile(os.path.join(data_dir, 'train.bin')):
        words, reference = textstats.char_data_stats(data_dir, itos, L)
        figures = {'valid_words': textstats.valid_word_fraction(samples, words),
                   'entropy': textstats.mean_unigram_entropy(samples_ids)}
        print(textstats.report(name, figures, reference))
        result['stats'], result['reference'] = figures, reference
if out:
    with open(out, 'w', encoding='utf-8') as f:
        json.dump(result, f, indent=1)
    print(f"wrote {out}")
