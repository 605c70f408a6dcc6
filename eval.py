"""
Judge generated text: its Gen PPL (the perplexity a judge model assigns to the samples,
exp of the mean NLL per token) and its mean unigram entropy per sample. Read them together:
a sampler that repeats a few likely tokens gets a low Gen PPL and a low entropy.

Judges: an AR checkpoint (python train.py --model=ar) for character data, or a GPT-2 model of
the transformers package (a name such as gpt2-large, or a saved folder) for GPT-2 BPE data.

$ python sample.py --out_dir=out-shakespeare-char-fm2 --num_samples=64 --out=fm2.json
$ python eval.py --samples=fm2.json --judge=out-shakespeare-char-judge/ckpt.pt
$ python eval.py --samples=owt.json --judge=gpt2-large          # pip install transformers

The NFE sweep: sample each method at each step count (sample.py), judge every samples file,
and write a table (sweep.md, sweep.json) and a plot of Gen PPL against seconds per sample
(sweep.png) to --out_dir. Samples files already there from the same sample.py command are
reused, so an interrupted sweep picks up where it stopped.
$ python eval.py --sweep=True --judge=out-shakespeare-char-judge/ckpt.pt
"""

import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F

import baselines
import flm
import textstats
from configurator import configure, die

# -----------------------------------------------------------------------------
samples = ''              # sample.py --out files to judge, comma-separated
judge = ''                # an AR checkpoint (train.py --model=ar), or a transformers GPT-2 name or folder
judge_batch = 16          # sequences per judge pass
device = 'auto'
# the NFE sweep
sweep = False
out_dir = 'sweep-shakespeare-char'
flm_ckpt = 'out-shakespeare-char/ckpt.pt'        # each method's checkpoint; '' leaves it out
fmlm_ckpt = 'out-shakespeare-char-fm2/ckpt.pt'
mdlm_ckpt = 'out-shakespeare-char-mdlm/ckpt.pt'
ar_ckpt = 'out-shakespeare-char-ar/ckpt.pt'
flm_steps = '1,2,4,8,16,32,64,128,256,1024'    # (512 left out: ~5 CPU minutes each for FLM and MDLM)
fmlm_steps = '1,2,4,8'
mdlm_steps = '8,16,32,64,128,256,1024'
flm_eta = -1.0            # sample.py's --eta for the FLM (-1: its default)
num_samples = 64
batch_size = 64           # samples generated at once: seconds per sample at this batch
seed = 1337
# -----------------------------------------------------------------------------
config_keys = [k for k, v in globals().items() if not k.startswith('_') and isinstance(v, (int, float, bool, str))]
config = configure({k: globals()[k] for k in config_keys}, sys.argv[1:])
globals().update(config)
if not judge:
    die("--judge is required: an AR checkpoint (python train.py --model=ar) or a GPT-2 name such as gpt2-large")
if not sweep and not samples:
    die("nothing to judge: give --samples=file.json[,...] (written by sample.py --out) or --sweep=True")
if device == 'auto':
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
here = os.path.dirname(os.path.abspath(__file__))


def gen_ppl(nll):
    """Gen PPL from the per-token NLLs (N, L) of N samples: exp of their mean."""
    return math.exp(nll.double().mean().item())


def load_judge(path):
    """-> (nll, encode): nll(ids (B, L)) -> per-token NLL (B, L) under the judge, and
    encode(sample) -> the judge's ids of one samples-file entry (text, ids)."""
    if os.path.isfile(path):  # an AR checkpoint of this repo
        try:
            ckpt = torch.load(path, map_location=device, weights_only=True)
        except Exception as e:
            die(f"--judge: cannot load {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        if ckpt.get('kind', 'flm') != 'ar':
            die(f"--judge: {path} is a '{ckpt.get('kind', 'flm')}' checkpoint; the judge must be an AR "
                f"model (python train.py --model=ar)")
        net = baselines.Baseline(flm.FLMConfig(**ckpt['model_args']), 'ar')
        net.load_state_dict(ckpt['ema'])
        net.eval().to(device)
        K, stoi = net.cfg.vocab_size, ckpt['meta'].get('stoi')

        def encode(text, ids):
            if stoi is None:  # a BPE judge: the samples' GPT-2 ids
                return ids
            unknown = sorted(set(c for c in text if c not in stoi))
            if unknown:
                die(f"--judge: the samples have characters outside the judge's vocabulary: {''.join(unknown)!r}")
            return [stoi[c] for c in text]

        def nll(x):
            if x.size(1) > net.cfg.block_size:
                die(f"--judge: samples of {x.size(1)} tokens are longer than the judge's block ({net.cfg.block_size})")
            return baselines.ar_nll(net, x, K)
        return nll, encode

    try:
        import transformers  # optional: only this judge needs it
    except ImportError:
        die(f"--judge={path}: not a checkpoint file, and a GPT-2 judge needs the transformers package "
            f"(pip install transformers)")
    transformers.utils.logging.set_verbosity_error()  # errors are ours to report, in one line
    transformers.utils.logging.disable_progress_bar()
    try:
        net = transformers.GPT2LMHeadModel.from_pretrained(path).eval().to(device)
    except Exception as e:
        die(f"--judge={path}: cannot load a GPT-2 model: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    bos = net.config.bos_token_id  # GPT-2's <|endoftext|>: the context of the first token

    def nll(x):
        if x.size(1) > net.config.n_positions:
            die(f"--judge: samples of {x.size(1)} tokens are longer than the judge's context ({net.config.n_positions})")
        inputs = torch.cat([torch.full_like(x[:, :1], bos), x[:, :-1]], dim=1)
        logits = net(inputs).logits
        return F.cross_entropy(logits.flatten(0, 1).float(), x.flatten(), reduction='none').view(x.shape)

    def encode(text, ids):
        if max(ids) >= net.config.vocab_size:
            die(f"--judge: sample ids reach {max(ids)}, outside the judge's vocabulary of {net.config.vocab_size}")
        return ids
    return nll, encode


judge_nll, judge_encode = load_judge(judge)


@torch.no_grad()
def judge_samples(texts, ids):
    """Gen PPL under the judge and mean unigram entropy of samples (their texts and token ids)."""
    x = torch.tensor([judge_encode(t, i) for t, i in zip(texts, ids)], dtype=torch.long, device=device)
    per_token = torch.cat([judge_nll(x[i:i + judge_batch]) for i in range(0, len(x), judge_batch)])
    return {'gen_ppl': gen_ppl(per_token), 'entropy': textstats.mean_unigram_entropy(ids)}


def judge_file(path):
    """The figures of one samples file (sample.py --out), with its texts and settings."""
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
        texts, ids = data['samples'], data['ids']
    except (OSError, ValueError, KeyError) as e:
        die(f"cannot read samples from {path} (write them with sample.py --out=...): {type(e).__name__}: {e}")
    return {**judge_samples(texts, ids), 'texts': texts, 'n': len(ids),
            'seconds_per_sample': data.get('seconds_per_sample'), 'settings': data.get('settings', {})}

if not sweep:
    for path in samples.split(','):
        r = judge_file(path)
        s = r['settings']
        print(f"{path}: Gen PPL {r['gen_ppl']:.3f}, entropy {r['entropy']:.3f} "
              f"({s.get('kind', '?')}, {s.get('steps', '?')} steps, {r['n']} samples)")
    sys.exit(0)

# -----------------------------------------------------------------------------
# the NFE sweep


def step_list(text, key):
    steps = [int(s) for s in re.findall(r'\d+', text)]  # '1,2,4' (or the tuple configurator makes of it)
    if not steps or min(steps) < 1:
        die(f"--{key} must be step counts >= 1, comma-separated; got '{text}'")
    return steps


runs = []  # (method, checkpoint, steps)
for method, path, key in (('AR', ar_ckpt, None), ('MDLM', mdlm_ckpt, 'mdlm_steps'),
                          ('FLM', flm_ckpt, 'flm_steps'), ('FMLM', fmlm_ckpt, 'fmlm_steps')):
    if not path:
        continue
    if not os.path.isfile(path):
        die(f"no {method} checkpoint at {path}; train it (README, Baselines) or leave it out with --{method.lower()}_ckpt=''")
    runs += [(method, path, s) for s in ([0] if key is None else step_list(config[key], key))]
os.makedirs(os.path.join(out_dir, 'samples'), exist_ok=True)
# the data the checkpoints were trained on: real text for reference; for character data, its words
ckpt = torch.load(runs[0][1], map_location='cpu', weights_only=True)
dataset, L, itos = ckpt['config']['dataset'], ckpt['model_args']['block_size'], ckpt['meta'].get('itos')
data_dir = dataset if os.path.isdir(dataset) else os.path.join(here, 'data', dataset)
have_data = os.path.isfile(os.path.join(data_dir, 'train.bin'))
words = textstats.char_data_stats(data_dir, itos, L)[0] if have_data and itos else None

index_path = os.path.join(out_dir, 'samples', 'index.json')  # name -> the sample.py command of its file
index = json.load(open(index_path)) if os.path.isfile(index_path) else {}
rows = []
for method, path, steps in runs:
    name = f"{method.lower()}-{steps}" if steps else method.lower()
    out = os.path.join(out_dir, 'samples', f'{name}.json')
    args = [os.path.join(here, 'sample.py'), f'--ckpt={path}', f'--steps={steps}', f'--num_samples={num_samples}',
            f'--batch_size={batch_size}', f'--seed={seed}', f'--out={out}', '--stats=False', f'--device={device}']
    if method == 'FLM' and flm_eta != -1:
        args.append(f'--eta={flm_eta}')
    record = {'args': args, 'ckpt_mtime': os.path.getmtime(path)}  # a retrained checkpoint is sampled again
    if not (os.path.isfile(out) and index.get(name) == record):
        proc = subprocess.run([sys.executable] + args, capture_output=True, text=True)
        if proc.returncode != 0:
            die(f"sampling {name} failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
        index[name] = record
        with open(index_path, 'w') as f:
            json.dump(index, f, indent=1)
    r = judge_file(out)
    if words is not None:
        r['valid_words'] = textstats.valid_word_fraction(r['texts'], words)
    nfe = 2 * steps if r['settings'].get('kind') == 'flowmap-1' else r['settings'].get('steps', steps)
    rows.append({'method': method, 'steps': steps or None, 'nfe': nfe, 'gen_ppl': r['gen_ppl'],
                 'entropy': r['entropy'], 'seconds_per_sample': r['seconds_per_sample'],
                 'eta': r['settings'].get('eta') if method == 'FLM' else None, 'valid_words': r.get('valid_words')})
    print(f"{name}: Gen PPL {r['gen_ppl']:.2f}, entropy {r['entropy']:.3f}, "
          f"{r['seconds_per_sample']:.4f} s per sample", flush=True)

# the real text: validation chunks of the same length, under the same judge
reference = None
if have_data:
    val = np.memmap(os.path.join(data_dir, 'val.bin'), dtype=np.uint16, mode='r')
    starts = np.random.default_rng(seed).integers(0, len(val) - L, num_samples)
    chunks = [val[s:s + L].tolist() for s in starts]
    texts = [''.join(itos[i] for i in c) for c in chunks] if itos else [''] * len(chunks)
    reference = {**judge_samples(texts, chunks),
                 'valid_words': textstats.valid_word_fraction(texts, words) if words is not None else None}
    print(f"real text: Gen PPL {reference['gen_ppl']:.2f}, entropy {reference['entropy']:.3f}")

with open(os.path.join(out_dir, 'sweep.json'), 'w') as f:
    json.dump({'rows': rows, 'reference': reference, 'judge': judge, 'config': config}, f, indent=1)
lines = [f"Judge: {judge}. {num_samples} samples of {L} tokens per row, generated {batch_size} at a time.", '',
         '| method | steps | NFE | Gen PPL | entropy | valid words | s per sample |',
         '| --- | --- | --- | --- | --- | --- | --- |']


def percent(f):
    return '-' if f is None else f"{100 * f:.1f}%"


for r in rows:
    lines.append(f"| {r['method']} | {r['steps'] or '-'} | {r['nfe']} | {r['gen_ppl']:.2f} | {r['entropy']:.3f} | "
                 f"{percent(r['valid_words'])} | {r['seconds_per_sample']:.4f} |")
if reference:
    lines.append(f"| real text | | | {reference['gen_ppl']:.2f} | {reference['entropy']:.3f} | "
                 f"{percent(reference['valid_words'])} | |")
with open(os.path.join(out_dir, 'sweep.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
print('\n'.join(lines))

import matplotlib  # noqa: E402
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from matplotlib.ticker import FormatStrFormatter, NullFormatter  # noqa: E402

# a degenerate sampler (e.g. the FLM's one step: one character everywhere, entropy 0) would squash
# both axes: it is left off the plot and named under it
floor = 0.5 * (reference['entropy'] if reference else max(r['entropy'] for r in rows))
shown = [r for r in rows if r['entropy'] >= floor]
off = [r for r in rows if r['entropy'] < floor]
fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
for ax, key, label in ((axes[0], 'gen_ppl', 'Gen PPL under the judge (lower: likelier text)'),
                       (axes[1], 'entropy', 'unigram entropy per sample (nats)')):
    for method, style in (('FLM', 'o-'), ('FMLM', 's-'), ('MDLM', '^-'), ('AR', '*')):
        rs = [r for r in shown if r['method'] == method]
        if not rs:
            continue
        ax.plot([r['seconds_per_sample'] for r in rs], [r[key] for r in rs], style, label=method,
                markersize=12 if method == 'AR' else 5)
        for r in rs:
            if r['steps']:
                ax.annotate(str(r['steps']), (r['seconds_per_sample'], r[key]), fontsize=7,
                            textcoords='offset points', xytext=(3, 3))
    if reference:
        ax.axhline(reference[key], color='gray', ls='--', lw=1, label='real text')
    ax.set_xscale('log')
    ax.set_xlabel(f'seconds per sample (batch {batch_size}, {device}); labels: steps')
    ax.set_title(label)
axes[0].set_yscale('log')
axes[0].yaxis.set_major_formatter(FormatStrFormatter('%g'))
axes[0].yaxis.set_minor_formatter(NullFormatter())
axes[0].legend()
if off:
    fig.text(0.01, 0.01, 'not shown: ' + '; '.join(
        f"{r['method']} {r['steps'] or ''} step{'s' if (r['steps'] or 0) > 1 else ''} (Gen PPL {r['gen_ppl']:.3g}, "
        f"entropy {r['entropy']:.2f})" for r in off), fontsize=8)
fig.tight_layout(rect=(0, 0.04 if off else 0, 1, 1))
fig.savefig(os.path.join(out_dir, 'sweep.png'), dpi=120)
print(f"wrote {os.path.join(out_dir, 'sweep.md')}, sweep.json, sweep.png")
