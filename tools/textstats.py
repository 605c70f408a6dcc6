"""
Cheap quality figures of generated text, always read together:
- valid-word fraction: the share of whitespace-separated words of the decoded samples
  that occur in the training text;
- unigram entropy: the mean over samples of the entropy (nats) of each sample's own
  character frequencies, in the decoded text. A sampler that repeats itself scores low
  here. For character data it is the entropy of the token ids; for GPT-2 BPE it is the
  text's, comparable across vocabularies (tools/judge.py also reports the ids' entropy).
"""

import os
from collections import Counter

import numpy as np


def unigram_entropy(tokens):
    """Entropy in nats of the empirical token distribution of one sample."""
    counts = np.array(list(Counter(tokens).values()), dtype=np.float64)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def mean_unigram_entropy(samples):
    return sum(unigram_entropy(s) for s in samples) / len(samples)


def valid_word_fraction(texts, words):
    """Share of the whitespace-separated words of `texts` that are in the set `words`."""
    found = [w for text in texts for w in text.split()]
    return sum(w in words for w in found) / max(1, len(found))


def data_stats(data_dir, decode, L, n=256, seed=0, max_tokens=5_000_000):
    """The training text's word set (of its first max_tokens tokens), and the figures of n real
    validation chunks of L tokens, decoded (the reference a sampler is compared with)."""
    train = np.memmap(os.path.join(data_dir, 'train.bin'), dtype=np.uint16, mode='r')
    val = np.memmap(os.path.join(data_dir, 'val.bin'), dtype=np.uint16, mode='r')
    words = set(decode(train[:max_tokens].tolist()).split())
    starts = np.random.default_rng(seed).integers(0, len(val) - L, n)
    # chunks, like samples, may cut a word at either end: both are counted alike
    return words, text_figures([decode(val[s:s + L].tolist()) for s in starts], words)


def text_figures(texts, words):
    """Valid-word fraction and mean unigram entropy (of characters) of decoded samples."""
    return {'valid_words': valid_word_fraction(texts, words), 'entropy': mean_unigram_entropy(texts)}


def report(name, figures, reference):
    """One line: valid words and entropy, each with its real-text reference."""
    ratio = figures['entropy'] / reference['entropy']
    return (f"{name}: valid words {100 * figures['valid_words']:.1f}% (real text "
            f"{100 * reference['valid_words']:.1f}%), unigram entropy {figures['entropy']:.3f} nats "
            f"(real text {reference['entropy']:.3f}, ratio {ratio:.3f})")


def sample_figures(ids, reference_ids, decode, words=None):
    """A flow map's samples (ids, B x L) against a reference sampler's from the same noise: unigram
    entropy of the decoded text, agreement (the share of positions with the same token) and, given
    the training text's words, the valid-word fraction."""
    texts = [decode(s) for s in ids.tolist()]
    out = {'entropy': mean_unigram_entropy(texts), 'agreement': (ids == reference_ids).float().mean().item()}
    if words is not None:
        out['valid_words'] = valid_word_fraction(texts, words)
    return out


def figures_text(f):
    vw = f"valid words {100 * f['valid_words']:.1f}%, " if 'valid_words' in f else ''
    return f"{vw}entropy {f['entropy']:.3f}, agreement {100 * f['agreement']:.1f}%"
