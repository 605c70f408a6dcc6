"""
Cheap quality figures of generated text, always read together:
- valid-word fraction: the share of whitespace-separated words of the decoded samples
  that occur in the training text;
- unigram entropy: the mean over samples of the entropy (nats) of each sample's own
  character frequencies, in the decoded text. A sampler that repeats itself scores low
  here. For character data it is the entropy of the token ids; for GPT-2 BPE it is the
  text's, comparable across vocabularies (tools/judge.py also reports the ids' entropy);
- diversity across the samples of a file, which the two figures above cannot see (each reads one
  sample): distinct-4, the share of distinct 4-grams of token ids among all the samples' 4-grams
  (1.0: no 4-gram repeats; 1/N for N copies of one sample), and overlap-4, the mean over samples of
  the largest share of a sample's 4-grams found in one other sample (1.0 for copies). Both depend on
  the number of samples: real text's are computed on as many validation blocks.
"""

import os
from collections import Counter, defaultdict

import numpy as np


def unigram_entropy(tokens):
    """Entropy in nats of the empirical token distribution of one sample."""
    counts = np.array(list(Counter(tokens).values()), dtype=np.float64)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def mean_unigram_entropy(samples):
    return sum(unigram_entropy(s) for s in samples) / len(samples)


def ngrams(ids, n):
    return [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]


def distinct_n(samples, n=4):
    """Distinct n-grams over all n-grams of all the samples (lists of token ids)."""
    grams = [g for s in samples for g in ngrams(s, n)]
    return len(set(grams)) / max(1, len(grams))


def overlap_n(samples, n=4):
    """The mean over samples of max over the other samples of |A_i & A_j| / |A_i|, A the sets of
    n-grams; None for fewer than two samples. The pairs' shared counts come from the n-grams held by
    two or more samples, as a samples x n-grams 0/1 matrix times its transpose, in column blocks."""
    sets = [set(ngrams(s, n)) for s in samples]
    if len(sets) < 2:
        return None
    holders = defaultdict(list)
    for i, grams in enumerate(sets):
        for g in grams:
            holders[g].append(i)
    shared_grams = [rows for rows in holders.values() if len(rows) > 1]
    N, shared = len(sets), np.zeros((len(sets), len(sets)))
    for lo in range(0, len(shared_grams), 4096):
        A = np.zeros((N, min(4096, len(shared_grams) - lo)), dtype=np.float32)
        for j, rows in enumerate(shared_grams[lo:lo + 4096]):
            A[rows, j] = 1
        shared += A @ A.T
    np.fill_diagonal(shared, 0)
    return float(np.mean(shared.max(1) / np.maximum(1, [len(a) for a in sets])))


def diversity(samples, n=4):
    """{'distinct_4': ..., 'overlap_4': ...} of samples (lists of token ids): see the module's docstring."""
    return {f'distinct_{n}': distinct_n(samples, n), f'overlap_{n}': overlap_n(samples, n)}


def real_blocks(data_dir, L, count, seed=0):
    """count validation blocks of L token ids, real text's reference for the diversity figures: blocks that
    do not overlap (windows at random starts would share text and look like near-copies), drawn without
    replacement from the split's len // L aligned blocks (with replacement where it has fewer than count)."""
    val = np.memmap(os.path.join(data_dir, 'val.bin'), dtype=np.uint16, mode='r')
    n = len(val) // L
    blocks = np.random.default_rng(seed).choice(n, count, replace=count > n)
    return [val[b * L:(b + 1) * L].tolist() for b in blocks]


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


def figures_and_reference(data_dir, decode, L, texts, ids):
    """sample.py's figures of its samples and real text's: valid words and entropy (real: 256 validation
    blocks), and diversity (real: as many validation blocks as samples)."""
    words, reference = data_stats(data_dir, decode, L)
    reference.update(diversity(real_blocks(data_dir, L, len(ids))))
    return {**text_figures(texts, words), **diversity(ids)}, reference


def text_figures(texts, words):
    """Valid-word fraction and mean unigram entropy (of characters) of decoded samples."""
    return {'valid_words': valid_word_fraction(texts, words), 'entropy': mean_unigram_entropy(texts)}


def report(name, figures, reference):
    """One line: valid words, entropy and (where given) diversity, each with its real-text reference."""
    ratio = figures['entropy'] / reference['entropy']
    line = (f"{name}: valid words {100 * figures['valid_words']:.1f}% (real text "
            f"{100 * reference['valid_words']:.1f}%), unigram entropy {figures['entropy']:.3f} nats "
            f"(real text {reference['entropy']:.3f}, ratio {ratio:.3f})")
    return line + (f", {diversity_text(figures, reference)}" if 'distinct_4' in figures else '')


def diversity_text(figures, reference=None):
    """'distinct-4 0.512 (real text 0.530), overlap-4 0.35 (real text 0.31)'; overlap needs two samples."""
    def one(key, name):
        value = figures.get(key)
        real = reference.get(key) if reference else None
        return (f"{name} {'-' if value is None else f'{value:.3f}'}"
                + ('' if real is None else f" (real text {real:.3f})"))
    return f"{one('distinct_4', 'distinct-4')}, {one('overlap_4', 'overlap-4')}"


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
