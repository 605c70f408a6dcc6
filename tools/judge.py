"""
Judge generated text: its Gen PPL (the perplexity a judge model assigns to the samples, exp of
the mean NLL per scored token) and its mean unigram entropy per sample (of the sampler's token
ids, the paper's figure, and of the decoded text's characters, tools/textstats.py). Read them
together: a sampler that repeats a few likely tokens gets a low Gen PPL and a low entropy; one whose
samples are near-copies of one another scores well on both, and is caught by the diversity across
the samples of a file (distinct-4 and overlap-4 of the ids, tools/textstats.py).

Judges:
- a GPT-2 model of the transformers package (a name such as gpt2-large, or a saved folder), with
  the paper's protocol (the reference code's metrics.py, record_generative_perplexity): each
  sample's text, as its own tokenizer decodes it (sample.py writes it: GPT-2 BPE or BERT, as the
  paper's code does), is re-tokenized with GPT-2's BPE, cut to the samples' length L, and scored
  in chunks of the judge's context with no token before the first: the first token is not
  scored, and of the <|endoftext|> tokens only a chunk's first is. Each sample is scored alone,
  as the paper's gen-PPL scripts do (one sample per call: no padding enters the count). The
  Gen PPL reads the text only; the entropy (the headline one) reads the sampler's ids.
- an AR checkpoint (python train.py --kind=ar, another seed) of the data the samples come from,
  characters or GPT-2 BPE: it scores every token, the first given a start token.

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

import dataset as data
from configurator import configure, die
from tools import baselines, runs, textstats
from tools.runs import system


def ar_judge(path, device):
    """An AR checkpoint of this repository as judge; see load_judge."""
    ckpt = runs.load_checkpoint(path, '--judge', device)
    if ckpt['kind'] != 'ar':
        die(f"--judge: {path} is a '{ckpt['kind']}' checkpoint; the judge must be an AR model (python train.py --kind=ar)")
    net, _ = runs.from_checkpoint(ckpt, device)
    K, stoi = net.cfg.vocab_size, ckpt['meta'].get('stoi')

    def encode(text, ids, tokenizer):
        if stoi is None:  # a BPE judge: the samples' GPT-2 ids
            if tokenizer not in (None, 'gpt2'):
                die(f"--judge: {path} reads GPT-2 BPE ids, and these samples are {tokenizer} ids")
            if max(ids) >= K:
                die(f"--judge: sample ids reach {max(ids)}, outside the judge's vocabulary of {K}")
            return ids
        unknown = sorted(set(c for c in text if c not in stoi))
        if unknown:
            die(f"--judge: the samples have characters outside the judge's vocabulary: {''.join(unknown)!r}")
        return [stoi[c] for c in text]

    def score(texts, ids, tokenizer, batch):
        x = torch.tensor([encode(t, i, tokenizer) for t, i in zip(texts, ids)], dtype=torch.long, device=device)
        if x.size(1) > net.cfg.block_size:
            die(f"--judge: samples of {x.size(1)} tokens are longer than the judge's block ({net.cfg.block_size})")
        nll = torch.cat([baselines.ar_nll(net, x[i:i + batch], K) for i in range(0, len(x), batch)])
        return nll.double().sum().item(), nll.numel()

    def decode(ids, tokenizer):  # the text the ids must have (check_samples); None: not checked
        if stoi is not None:
            return ''.join(ckpt['meta']['itos'][i] for i in ids)
        return data.gpt2_text(ids, data.gpt2_encoding()) if tokenizer in (None, 'gpt2') else None
    return {'score': score, 'paper': False, 'vocab_size': K, 'decode': decode}


def paper_counted(x, eos):
    """Which next-token NLLs of chunks x (B, n) the paper's protocol counts (B, n - 1): every token
    but the first, and of the EOS tokens only each chunk's first (an EOS at position 0 is that
    first one, so then none is counted)."""
    is_eos = x == eos
    return (~is_eos | (is_eos.cumsum(-1) == 1))[:, 1:]


def gpt2_judge(name, device):
    """A transformers GPT-2 (a hub name or a saved folder) as judge, with the paper's protocol; see load_judge."""
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
    if net.config.vocab_size != 50257:
        die(f"--judge={name}: a GPT-2 judge has GPT-2's 50257 tokens, this one {net.config.vocab_size}")
    enc = data.gpt2_encoding()  # GPT-2's BPE, the judge's tokenizer (tiktoken: the same ids as GPT-2's own)
    eos, context = enc.eot_token, net.config.n_positions

    def score(texts, ids, tokenizer, batch):
        if tokenizer == 'ids':
            die("--judge: these samples' texts are their ids (a release of no known tokenizer): no text to judge")
        L = len(ids[0])  # the paper's max_length: the samples' own length
        chunks = []
        for text in texts:
            r = enc.encode(text, allowed_special={'<|endoftext|>'})[:L]
            chunks += [r[i:i + context] for i in range(0, len(r), context) if len(r) - i > 1]
        if not chunks:
            die("--judge: the samples' texts have no two tokens to score")
        total, count = 0.0, 0
        for i in range(0, len(chunks), batch):  # padded on the right, masked: each chunk scores as if alone
            part = chunks[i:i + batch]
            x = torch.full((len(part), max(map(len, part))), eos, dtype=torch.long)
            real = torch.zeros_like(x, dtype=torch.bool)
            for j, c in enumerate(part):
                x[j, :len(c)], real[j, :len(c)] = torch.tensor(c), True
            x, real = x.to(device), real.to(device)
            logits = net(x, attention_mask=real.long()).logits[:, :-1].float()
            nll = F.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction='none')
            counted = paper_counted(x, eos) & real[:, 1:]  # the padding comes after every counted EOS
            total += (nll.double() * counted).sum().item()
            count += int(counted.sum())
        return total, count
    # the ids are the sampler's (its entropy), in the samples' tokenizer: checked against the texts for GPT-2's
    decode = lambda ids, tokenizer: data.gpt2_text(ids, enc) if tokenizer == 'gpt2' else None  # noqa: E731
    return {'score': score, 'paper': True, 'vocab_size': None, 'decode': decode}


def load_judge(path, device):
    """-> {'score': score, 'paper': bool, 'vocab_size': K, 'decode': decode}: score(texts, ids, tokenizer,
    batch) -> (the sum of the scored tokens' NLLs, their count) under the judge; 'paper': the paper's
    protocol (a GPT-2 judge); K: the vocabulary the ids must be in (None: any); decode(ids, tokenizer) ->
    the text the ids must have (None: not checked). check_samples reads the last two."""
    if os.path.isfile(path):
        return ar_judge(path, device)
    if not os.path.isdir(path) and (path.endswith(('.pt', '.pth')) or path.startswith(('.', '/', '~'))
                                    or os.path.isdir(path.split('/')[0])):
        die(f"--judge={path}: no such file or folder")  # a mistyped path is no model name to look up online
    return gpt2_judge(path, device)


@torch.no_grad()
def judge_samples(judge, texts, ids, batch=16, device='cpu', tokenizer=None):
    """Gen PPL under the judge and mean unigram entropy of samples (their texts and token ids, and the
    tokenizer that made the ids, as sample.py records it: 'gpt2', 'bert-base-uncased', 'characters', 'ids'
    (texts that are the ids themselves), or None where a file does not say):
    'token_entropy' of the ids (the paper's record_entropy), 'entropy' of the texts' characters, and the
    diversity across the samples, 'distinct_4' and 'overlap_4' of the ids (tools/textstats.py)."""
    check_samples(texts, ids, judge, tokenizer)
    total, count = judge['score'](texts, ids, tokenizer, batch)
    return {'gen_ppl': math.exp(total / count), 'entropy': textstats.mean_unigram_entropy(texts),
            'token_entropy': textstats.mean_unigram_entropy(ids), 'scored_tokens': count, **textstats.diversity(ids)}


def check_samples(texts, ids, judge, tokenizer):
    """One-line errors for samples the judge cannot judge: no text, ids outside its vocabulary, or texts
    that are not their ids decoded (the Gen PPL and the entropies would describe different samples)."""
    K, decode = judge.get('vocab_size'), judge.get('decode')
    for i, (text, sample) in enumerate(zip(texts, ids)):
        if not text:
            die(f"sample {i} is an empty text: nothing to judge")
        if K is not None and max(sample) >= K:
            die(f"--judge: sample {i} has ids up to {max(sample)}, outside the judge's vocabulary of {K}")
        decoded = decode(sample, tokenizer) if decode else None
        if decoded is not None and decoded != text:
            die(f"sample {i}: its text ({len(text)} characters) is not its {len(sample)} ids decoded "
                f"(as {tokenizer or 'the judge reads them'}): the texts and ids disagree")


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
    if not all(texts):
        die(f"{path}: sample {texts.index('')} is an empty text: nothing to judge")
    settings = data.get('settings') if isinstance(data.get('settings'), dict) else {}
    reference = data.get('reference') if isinstance(data.get('reference'), dict) else None  # real text's (sample.py)
    return texts, ids, {'settings': settings, 'seconds_per_sample': data.get('seconds_per_sample'), 'reference': reference}


def judge_file(judge, path, batch=16, device='cpu'):
    """The figures of one samples file, with its texts, count, settings and seconds per sample."""
    texts, ids, extra = read_samples(path)
    r = judge_samples(judge, texts, ids, batch, device, extra['settings'].get('tokenizer'))
    return {**r, 'texts': texts, 'n': len(ids), **extra}


def line(path, r, paper, n):
    """The printed figures of one samples file (r: judge_samples' with its settings) of n samples."""
    s = r.get('settings', {})
    what = f"({s.get('kind', '?')}, {s.get('steps', '?')} steps, {n} samples)"
    # real text's diversity where the file has it (sample.py's stats: as many validation blocks as samples)
    diversity = textstats.diversity_text(r, r.get('reference'))
    if paper:  # the paper's figures first: Gen PPL and the entropy of the token ids
        return (f"{path}: Gen PPL {r['gen_ppl']:.3f}, entropy {r['token_entropy']:.3f} (token ids), "
                f"{r['entropy']:.3f} (characters), {diversity} {what}")
    return (f"{path}: Gen PPL {r['gen_ppl']:.3f}, entropy {r['entropy']:.3f} (characters), token entropy "
            f"{r['token_entropy']:.3f}, {diversity} {what}")


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
        r = judge_samples(the_judge, texts, ids, config['judge_batch'], device, extra['settings'].get('tokenizer'))
        print(line(path, {**r, **extra}, the_judge['paper'], len(ids)))
