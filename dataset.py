"""
The data a run reads, in nanoGPT's format: a folder with train.bin and val.bin (uint16
token ids) and, for a character vocabulary, meta.pkl (vocab_size, stoi, itos); a folder
without meta.pkl holds GPT-2 BPE ids. train.py, sample.py and sweep.py read it from here.
"""

import os
import pickle
import subprocess
import sys

import numpy as np
import torch

from configurator import die

HERE = os.path.dirname(os.path.abspath(__file__))
GPT2 = {'vocab_size': 50257, 'encoding': 'gpt2'}


def folder(dataset):
    """A dataset is a folder under data/, or a path to one."""
    return dataset if os.path.isdir(dataset) else os.path.join(HERE, 'data', dataset)


def prepare_if_missing(dataset):
    """tiny Shakespeare is small enough to prepare on the fly; any other dataset says how to."""
    path = folder(dataset)
    if all(os.path.isfile(os.path.join(path, f)) for f in ('train.bin', 'val.bin')):
        return
    script = os.path.join(path, 'prepare.py')
    if dataset != 'shakespeare_char':
        hint = f"python {os.path.relpath(script)}" if os.path.isfile(script) else "a prepare script"
        die(f"dataset '{dataset}' not found: no train.bin/val.bin in {path}; prepare it with {hint}")
    print(f"preparing {dataset} ...")
    if subprocess.run([sys.executable, script]).returncode != 0:
        sys.exit(1)  # the prepare script has said why, in one line


class _PlainUnpickler(pickle.Unpickler):
    # dicts, strings and ints need no class lookup; anything else (code to run) does
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"it refers to {module}.{name}")


def read_meta(path):
    """meta.pkl's vocabulary, read without running code: only plain dicts, strings and ints."""
    meta_path = os.path.join(path, 'meta.pkl')
    if not os.path.isfile(meta_path):
        return dict(GPT2)
    try:
        with open(meta_path, 'rb') as f:
            meta = _PlainUnpickler(f).load()
        V, stoi, itos = meta['vocab_size'], meta['stoi'], meta['itos']
        ok = (type(V) is int and 0 < V <= 65536 and isinstance(stoi, dict) and isinstance(itos, dict)
              and sorted(itos) == list(range(V)) and all(type(c) is str for c in itos.values())
              and stoi == {c: i for i, c in itos.items()})
    except Exception as e:
        die(f"{meta_path} is not a vocabulary file (a dict of vocab_size, stoi, itos): {type(e).__name__}: {e}")
    if not ok:
        die(f"{meta_path}: vocab_size, stoi and itos must describe the same vocabulary of ints 0..vocab_size-1")
    return {'vocab_size': V, 'stoi': stoi, 'itos': itos}


def split(path, name):
    """The token ids of train.bin or val.bin (a fresh memmap per call, as nanoGPT does: no leak)."""
    return np.memmap(os.path.join(path, f'{name}.bin'), dtype=np.uint16, mode='r')


def check_splits(path, vocab_size, block_size):
    """Both splits hold more than block_size ids, all in the vocabulary. Returns the unigram
    counts of train.bin's first 100M ids (the whole of any small dataset)."""
    for name in ('train', 'val'):
        size = os.path.getsize(os.path.join(path, f'{name}.bin'))
        if size % 2:
            die(f"{name}.bin in {path} has an odd number of bytes: not uint16 token ids")
        if size // 2 <= block_size:
            die(f"{name}.bin in {path} has {size // 2} tokens, fewer than block_size + 1 = {block_size + 1}")
    counts = np.bincount(split(path, 'train')[:100_000_000], minlength=vocab_size)
    top = max(len(counts), int(split(path, 'val').max()) + 1)
    if top > vocab_size:
        die(f"the data in {path} has token ids up to {top - 1}, outside its vocabulary of {vocab_size}")
    return counts


def gpt2_encoding():
    """GPT-2's BPE from tiktoken, which downloads it once and caches it."""
    import tiktoken
    try:
        return tiktoken.get_encoding('gpt2')
    except Exception as e:
        die(f"cannot load GPT-2's BPE through tiktoken (offline, point TIKTOKEN_CACHE_DIR at a cache of it): "
            f"{type(e).__name__}")


def codec(meta):
    """(encode, decode) between text and token ids for a dataset's vocabulary."""
    if 'itos' in meta:
        stoi, itos = meta['stoi'], meta['itos']

        def encode(text):
            unknown = sorted(set(c for c in text if c not in stoi))
            if unknown:
                die(f"the text has characters outside the vocabulary: {''.join(unknown)!r}")
            return [stoi[c] for c in text]
        return encode, lambda ids: ''.join(itos[i] for i in ids)
    enc = gpt2_encoding()
    return (lambda text: enc.encode(text, allowed_special={'<|endoftext|>'})), enc.decode


def get_batch(path, name, batch_size, block_size, device, generator=None):
    """batch_size random windows of block_size ids from a split: (B, L) int64 on the device."""
    ids = split(path, name)
    ix = torch.randint(len(ids) - block_size, (batch_size,), generator=generator)
    x = torch.stack([torch.from_numpy(ids[i:i + block_size].astype(np.int64)) for i in ix])
    if str(device).startswith('cuda'):
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)
