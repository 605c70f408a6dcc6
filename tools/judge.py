"""
Judge generated text: its Gen PPL (the perplexity a judge model assigns to the samples,
exp of the mean NLL per token) and its mean unigram entropy per sample (of the decoded text's
characters, tools/textstats.py; and of the token ids, the paper's figure for GPT-2 BPE). Read them together:
a sampler that repeats a few likely tokens gets a low Gen PPL and a low entropy.

Judges: an AR checkpoint (python train.py --kind=ar, another seed) of the data the samples come
from, characters or GPT-2 BPE, or a GPT-2 model of the transformers package (a name such as
gpt2-large, or a saved folder) for GPT-2 BPE data.

$ python sample.py --out_dir=out-shakespeare-char-fm --num_samples=64 --out=fm.json
$ python -m tools.judge --samples=fm2.json --judge=out-shakespeare-char-judge/ckpt.pt
$ python -m tools.judge --samples=owt.json --judge=gpt2-large          # pip install transformers

tools/sweep.py judges every method at every step count with the same functions.
"""

import json
import math
import os
import sys

import torch
import torch.nn.functional as F

from configurator import configure, die
from tools import baselines, runs, textstats
from tools.runs import system


def gen_ppl(nll):
    """Gen PPL from the per-token NLLs (N, L) of N samples: exp of their mean."""
    return math.exp(nll.double().mean().item())


def ar_judge(path, device):
    """An AR checkpoint of this repository as judge: (nll, encode); see load_judge."""
    ckpt = runs.load_checkpoint(path, '--judge', device)
    if ckpt['kind'] != 'ar':
        die(f"--judge: {path} is a '{ckpt['kind']}' checkpoint; the judge must be an AR model (python train.py --kind=ar)")
    net, _ = runs.from_checkpoint(ckpt, device)
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


def gpt2_judge(name, device):
    """A transformers GPT-2 (a hub name or a saved folder) as judge: (nll, encode); see load_judge."""
    try:
        import transformers  # optional: only this judge needs it
    except ImportError:
        die(f"--judge={name}: not a checkpoint file, and a GPT-2 judge needs the transformers package "
            f"(pip install transformers)")
    transformers.utils.logging.set_verbosity_error()  # errors are ours to report, in one line
    transformers.utils.logging.disable_progress_bar()
    try:
        net = transformers.GPT2LMHeadModel.from_pretrained(name).eval().to(device)
    except Exception as e:
        die(f"--judge={name}: cannot load a GPT-2 model: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    bos = net.config.bos_token_id  # GPT-2's <|endoftext|>: the context of the first token

    def nll(x):
        if x.size(1) > net.config.n_positions:
            die(f"--judge: samples of {x.size(1)} tokens are longer than the judge's context ({net.config.n_positions})")
        logits = net(torch.cat([torch.full_like(x[:, :1], bos), x[:, :-1]], dim=1)).logits
        return F.cross_entropy(logits.flatten(0, 1).float(), x.flatten(), reduction='none').view(x.shape)

    def encode(text, ids):
        if max(ids) >= net.config.vocab_size:
            die(f"--judge: sample ids reach {max(ids)}, outside the judge's vocabulary of {net.config.vocab_size}")
        return ids
    return nll, encode


def load_judge(path, device):
    """-> (nll, encode): nll(ids (B, L)) -> per-token NLL (B, L) under the judge, and
    encode(text, ids) -> the judge's ids of one sample."""
    if os.path.isfile(path):
        return ar_judge(path, device)
    if not os.path.isdir(path) and (path.endswith(('.pt', '.pth')) or path.startswith(('.', '/', '~'))
                                    or os.path.isdir(path.split('/')[0])):
        die(f"--judge={path}: no such file or folder")  # a mistyped path is no model name to look up online
    return gpt2_judge(path, device)


@torch.no_grad()
def judge_samples(judge, texts, ids, batch=16, device='cpu'):
    """Gen PPL under the judge and mean unigram entropy of samples (their texts and token ids): of the
    texts' characters (textstats) and of the ids (the paper's, for GPT-2 BPE; the same for characters)."""
    nll, encode = judge
    x = torch.tensor([encode(t, i) for t, i in zip(texts, ids)], dtype=torch.long, device=device)
    per_token = torch.cat([nll(x[i:i + batch]) for i in range(0, len(x), batch)])
    return {'gen_ppl': gen_ppl(per_token), 'entropy': textstats.mean_unigram_entropy(texts),
            'token_entropy': textstats.mean_unigram_entropy(ids)}


def read_samples(path):
    """A samples file (sample.py --out): its texts, ids and settings, checked to be what sample.py writes."""
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        die(f"cannot read samples from {path} (write them with sample.py --out=...): {type(e).__name__}: {e}")
    texts, ids = (data.get('samples'), data.get('ids')) if isinstance(data, dict) else (None, None)
    ok = (isinstance(texts, list) and isinstance(ids, list) and len(texts) == len(ids) > 0
          and all(isinstance(t, str) for t in texts)
          and all(isinstance(i, list) and i and all(type(v) is int and v >= 0 for v in i) for i in ids)
          and len({len(i) for i in ids}) == 1)
    if not ok:
        die(f"{path} is not a samples file of sample.py: it needs 'samples' (texts) and 'ids' (as many non-empty "
            f"lists of token ids, all of one length)")
    settings = data.get('settings') if isinstance(data.get('settings'), dict) else {}
    return texts, ids, {'settings': settings, 'seconds_per_sample': data.get('seconds_per_sample')}


def judge_file(judge, path, batch=16, device='cpu'):
    """The figures of one samples file, with its texts, count, settings and seconds per sample."""
    texts, ids, extra = read_samples(path)
    return {**judge_samples(judge, texts, ids, batch, device), 'texts': texts, 'n': len(ids), **extra}


if __name__ == '__main__':
    samples = ''              # sample.py --out files to judge, comma-separated
    judge = ''                # an AR checkpoint (train.py --kind=ar), or a transformers GPT-2 name or folder
    judge_batch = 16          # sequences per judge pass
    device = 'auto'
    config = configure({'samples': samples, 'judge': judge, 'judge_batch': judge_batch, 'device': device}, sys.argv[1:])
    if not config['judge']:
        die("--judge is required: an AR checkpoint (python train.py --kind=ar) or a GPT-2 name such as gpt2-large")
    if not config['samples']:
        die("nothing to judge: give --samples=file.json[,...] (written by sample.py --out)")
    if config['judge_batch'] < 1:
        die(f"--judge_batch must be >= 1, got {config['judge_batch']}")
    device = system(config['device'], 'float32')[0]
    files = {path: read_samples(path) for path in config['samples'].split(',')}  # all checked before any work
    the_judge = load_judge(config['judge'], device)
    for path, (texts, ids, extra) in files.items():
        r = judge_samples(the_judge, texts, ids, config['judge_batch'], device)
        s = extra['settings']
        print(f"{path}: Gen PPL {r['gen_ppl']:.3f}, entropy {r['entropy']:.3f} (characters), token entropy "
              f"{r['token_entropy']:.3f} ({s.get('kind', '?')}, {s.get('steps', '?')} steps, {len(ids)} samples)")
