"""
The NFE sweep: sample each method at each step count (sample.py), judge every samples file
(tools/judge.py: Gen PPL, entropy, and the diversity across samples beside real text's on as many
validation blocks), and write a table (sweep.md, sweep.json) and a plot of Gen PPL and entropy against
seconds per sample (sweep.png, tools/plot_eval.py) to --out_dir. Samples files already there from
the same sample.py command and an unchanged checkpoint are reused, so an interrupted sweep
picks up where it stopped.

$ python -m tools.sweep --judge=out-shakespeare-char-judge/ckpt.pt
$ python -m tools.sweep --judge=... --flm_steps=8,64 --fmlm_ckpt='' --mdlm_steps=8
$ python -m tools.sweep config/sweep_shakespeare_bpe.py          # GPT-2 BPE Shakespeare (README)
"""

import json
import os
import subprocess
import sys

import dataset as data
from configurator import configure, die, int_list
from tools import runs, textstats
from tools.judge import judge_file, judge_samples, load_judge, read_samples
from tools.plot_eval import plot_sweep
from tools.runs import system

# -----------------------------------------------------------------------------
judge = ''                # an AR checkpoint (train.py --kind=ar), or a transformers GPT-2 name or folder
out_dir = 'sweep-shakespeare-char'
flm_ckpt = 'out-shakespeare-char/ckpt.pt'        # each method's checkpoint; '' leaves it out
fmlm_ckpt = 'out-shakespeare-char-fm/ckpt.pt'
mdlm_ckpt = 'out-shakespeare-char-mdlm/ckpt.pt'
ar_ckpt = 'out-shakespeare-char-ar/ckpt.pt'
flm_steps = '1,2,4,8,16,32,64,128,256,1024'    # (512 left out: ~5 CPU minutes each for FLM and MDLM)
fmlm_steps = '1,2,4,8'
mdlm_steps = '8,16,32,64,128,256,1024'
flm_eta = ''              # the FLM's fresh noise (sample.py --eta), comma-separated for several ('': its default)
num_samples = 64
batch_size = 64           # samples generated at once: seconds per sample at this batch
latency = False           # also the seconds of one sample at batch 1 (one more sample.py run per setting)
judge_batch = 16
seed = 1337
device = 'auto'
# -----------------------------------------------------------------------------
config = configure({k: v for k, v in globals().items() if not k.startswith('_') and isinstance(v, (int, float, bool, str))},
                   sys.argv[1:])
globals().update(config)
if not judge:
    die("--judge is required: an AR checkpoint (python train.py --kind=ar) or a GPT-2 name such as gpt2-large")
if min(num_samples, batch_size, judge_batch) < 1:
    die(f"--num_samples, --batch_size and --judge_batch must be >= 1")
device = system(device, 'float32')[0]
here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root
try:
    etas = [float(e) for e in flm_eta.split(',')] if flm_eta else [-1.0]
except ValueError:
    etas = [2.0]
if not all(0 <= e <= 1 or e == -1 for e in etas):
    die(f"--flm_eta takes numbers in [0, 1], comma-separated ('': sample.py's default); got '{flm_eta}'")
plan = []  # (method, checkpoint, steps, eta)
for method, path, key in (('AR', ar_ckpt, None), ('MDLM', mdlm_ckpt, 'mdlm_steps'),
                          ('FLM', flm_ckpt, 'flm_steps'), ('FMLM', fmlm_ckpt, 'fmlm_steps')):
    if not path:
        continue
    if not os.path.isfile(path):
        die(f"no {method} checkpoint at {path}; train it (README) or leave it out with --{method.lower()}_ckpt=''")
    for eta in (etas if method == 'FLM' else [-1.0]):
        label = f"FLM eta {eta:g}" if eta != -1 else method
        plan += [(label, path, s, eta) for s in ([0] if key is None else int_list(config[key], key))]
if not plan:
    die("every checkpoint is left out: nothing to sweep")
the_judge = load_judge(judge, device)
os.makedirs(os.path.join(out_dir, 'samples'), exist_ok=True)


def sample_file(name, path, steps, eta, n=num_samples, batch=batch_size):
    """The samples file of one setting, made by sample.py unless the same command already made it."""
    out = os.path.join(out_dir, 'samples', f'{name}.json')
    index_path = os.path.join(out_dir, 'samples', 'index.json')  # name -> the command of its file
    index = runs.read_index(index_path, ('args', 'ckpt_mtime'))
    args = [os.path.join(here, 'sample.py'), f'--ckpt={path}', f'--steps={steps}', f'--num_samples={n}',
            f'--batch_size={batch}', f'--seed={seed}', f'--out={out}', '--stats=False', f'--device={device}']
    if eta != -1:
        args.append(f'--eta={eta}')
    record = {'args': args, 'ckpt_mtime': os.path.getmtime(path)}  # a retrained checkpoint is sampled again
    if not (os.path.isfile(out) and index.get(name) == record):
        if os.path.isfile(out):  # the sweep's own stale file (sample.py replaces only samples files)
            os.remove(out)
        proc = subprocess.run([sys.executable] + args, capture_output=True, text=True)
        if proc.returncode != 0:
            die(f"sampling {name} failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
        index[name] = record
        try:  # through a temporary file: a kill while writing leaves the old index
            with open(index_path + '.tmp', 'w', encoding='utf-8') as f:
                json.dump(index, f, indent=1)
            os.replace(index_path + '.tmp', index_path)
        except OSError as e:
            print(f"warning: cannot write {index_path} ({e.strerror or e}); its samples will be made again",
                  file=sys.stderr)
    return out


# the data the checkpoints were trained on: real text for reference, and its words
ckpt = runs.load_checkpoint(plan[0][1], f'--{plan[0][0].lower()}_ckpt')
data_dir, L, meta = data.folder(ckpt['config']['dataset']), ckpt['model_args']['block_size'], ckpt['meta']
decode = data.codec(meta)[1]
have_data = os.path.isfile(os.path.join(data_dir, 'val.bin'))
words = textstats.data_stats(data_dir, decode, L)[0] if have_data else None
chars = 'itos' in meta  # character data: the ids' entropy is the text's
rows = []
for method, path, steps, eta in plan:
    name = method.lower().replace(' ', '-') + (f"-{steps}" if steps else '')
    r = judge_file(the_judge, sample_file(name, path, steps, eta), judge_batch, device)
    if words is not None:
        r['valid_words'] = textstats.valid_word_fraction(r['texts'], words)
    nfe = 2 * steps if r['settings'].get('kind') == 'stage1' else r['settings'].get('steps', steps)
    rows.append({'method': method, 'steps': steps or None, 'nfe': nfe, 'gen_ppl': r['gen_ppl'],
                 'entropy': r['entropy'], 'token_entropy': r['token_entropy'], 'seconds_per_sample': r['seconds_per_sample'],
                 'eta': r['settings'].get('eta') if method.startswith('FLM') else None, 'valid_words': r.get('valid_words'),
                 'distinct_4': r['distinct_4'], 'overlap_4': r['overlap_4']})
    if latency:  # one sample at batch 1
        rows[-1]['seconds_batch_1'] = read_samples(sample_file(name + '-batch1', path, steps, eta, 1, 1))[2]['seconds_per_sample']
    print(f"{name}: Gen PPL {r['gen_ppl']:.2f}, entropy {r['entropy']:.3f}, {textstats.diversity_text(r)}, "
          f"{r['seconds_per_sample']:.4f} s per sample"
          + (f", {rows[-1]['seconds_batch_1']:.4f} s at batch 1" if latency else ''), flush=True)

# the real text: validation chunks of the same length, under the same judge
reference = None
if have_data:
    chunks = textstats.real_blocks(data_dir, L, num_samples, seed)  # as many as samples, none overlapping
    texts = [decode(c) for c in chunks]
    reference = {**judge_samples(the_judge, texts, chunks, judge_batch, device),
                 'valid_words': textstats.valid_word_fraction(texts, words) if words is not None else None}
    print(f"real text: Gen PPL {reference['gen_ppl']:.2f}, entropy {reference['entropy']:.3f}, "
          f"{textstats.diversity_text(reference)}")  # judge_samples' diversity: of as many blocks as samples

with open(os.path.join(out_dir, 'sweep.json'), 'w') as f:
    json.dump({'rows': rows, 'reference': reference, 'judge': judge, 'config': config, 'device': device}, f, indent=1)


def percent(f):
    return '-' if f is None else f"{100 * f:.1f}%"


def token_entropy(r):  # a column of its own where tokens are not characters
    return '' if chars else f" {r['token_entropy']:.3f} |"


def diversity(r):
    return ' | '.join('-' if r.get(k) is None else f"{r[k]:.3f}" for k in ('distinct_4', 'overlap_4'))


def batch_1(r):
    return f" {r['seconds_batch_1']:.4f} |" if latency and 'seconds_batch_1' in r else (' |' if latency else '')


lines = [f"Judge: {judge}. {num_samples} samples of {L} tokens per row, generated {batch_size} at a time. "
         f"Entropy: of the decoded text's characters" + ('.' if chars else '; token entropy: of the ids.')
         + " Distinct-4 and overlap-4: across the samples' ids (real text: as many validation blocks).", '',
         '| method | steps | NFE | Gen PPL | entropy |' + ('' if chars else ' token entropy |')
         + ' distinct-4 | overlap-4 | valid words | s per sample |' + (' s per sample, batch 1 |' if latency else ''),
         '| --- | --- | --- | --- | --- |' + ('' if chars else ' --- |') + ' --- | --- | --- | --- |' + (' --- |' if latency else '')]
lines += [f"| {r['method']} | {r['steps'] or '-'} | {r['nfe']} | {r['gen_ppl']:.2f} | {r['entropy']:.3f} |"
          f"{token_entropy(r)} {diversity(r)} | {percent(r['valid_words'])} | {r['seconds_per_sample']:.4f} |{batch_1(r)}"
          for r in rows]
if reference:
    lines.append(f"| real text | | | {reference['gen_ppl']:.2f} | {reference['entropy']:.3f} |{token_entropy(reference)} "
                 f"{diversity(reference)} | {percent(reference['valid_words'])} | |" + (' |' if latency else ''))
with open(os.path.join(out_dir, 'sweep.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
print('\n'.join(lines))
plot_sweep(os.path.join(out_dir, 'sweep.json'), os.path.join(out_dir, 'sweep.png'))
