"""
The data a run reads, in nanoGPT's format: a folder with train.bin and val.bin (uint16
token ids) and, for a character vocabulary, meta.pkl (vocab_size, stoi, itos); a folder
without meta.pkl holds GPT-2 BPE ids. Other tokenizers: meta.pkl names one (vocab_size,
tokenizer: 'gpt2' with the paper's pad token, K = 50258, or 'bert-base-uncased'), and block_size
there says that the splits are packed blocks of that many ids (data/openwebtext, data/lm1b, framed
as the paper's code frames them: frame() below), which a batch takes whole. train.py, sample.py
and tools/sweep.py read it from here.
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
TOKENIZERS = ('bert-base-uncased', 'gpt2')  # meta.pkl's 'tokenizer' names one of these (gpt2: tiktoken)
GPT2_EOT = 50256  # <|endoftext|>; the paper's OpenWebText data adds a pad token, 50257, never in the data: K = 50258


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
    """meta.pkl, read without running code (only plain dicts, strings and ints): a character
    vocabulary (vocab_size, stoi, itos) or a tokenizer's name (vocab_size, tokenizer), and for
    packed blocks their block_size."""
    meta_path = os.path.join(path, 'meta.pkl')
    if not os.path.isfile(meta_path):
        return dict(GPT2)
    try:
        with open(meta_path, 'rb') as f:
            meta = _PlainUnpickler(f).load()
        V, block = meta['vocab_size'], meta.get('block_size', 0)
        if type(V) is not int or not 0 < V <= 65536 or type(block) is not int or block < 0:
            die(f"{meta_path}: vocab_size must be a whole number in 1..65536 and block_size one >= 0, "
                f"got {V!r} and {block!r}")
        packed = {'block_size': block} if block else {}
        if 'tokenizer' in meta:
            if meta['tokenizer'] not in TOKENIZERS:
                die(f"{meta_path}: unknown tokenizer {meta['tokenizer']!r}; known: {', '.join(TOKENIZERS)}")
            return {'vocab_size': V, 'tokenizer': meta['tokenizer'], **packed}
        stoi, itos = meta['stoi'], meta['itos']
        ok = (isinstance(stoi, dict) and isinstance(itos, dict)
              and sorted(itos) == list(range(V)) and all(type(c) is str for c in itos.values())
              and stoi == {c: i for i, c in itos.items()})
    except Exception as e:
        die(f"{meta_path} is not a vocabulary file (a dict of vocab_size, stoi, itos): {type(e).__name__}: {e}")
    if not ok:
        die(f"{meta_path}: vocab_size, stoi and itos must describe the same vocabulary of ints 0..vocab_size-1")
    return {'vocab_size': V, 'stoi': stoi, 'itos': itos, **packed}


def split(path, name):
    """The token ids of train.bin or val.bin (a fresh memmap per call, as nanoGPT does: no leak)."""
    return np.memmap(os.path.join(path, f'{name}.bin'), dtype=np.uint16, mode='r')


def check_splits(path, vocab_size, block_size, packed=0):
    """Both splits hold more than block_size ids, all in the vocabulary; packed > 0: whole blocks of
    packed ids, and block_size must be packed. Returns the unigram counts of train.bin's first 100M
    ids (the whole of any small dataset)."""
    if packed and block_size != packed:
        die(f"--block_size={block_size}: the data in {path} is packed in blocks of {packed} tokens "
            f"(meta.pkl's block_size); train with --block_size={packed}")
    for name in ('train', 'val'):
        size = os.path.getsize(os.path.join(path, f'{name}.bin'))
        if size % 2:
            die(f"{name}.bin in {path} has an odd number of bytes: not uint16 token ids")
        if packed and (size // 2 % packed or not size):
            die(f"{name}.bin in {path} has {size // 2} tokens: not a whole number of blocks of {packed}")
        if not packed and size // 2 <= block_size:
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


def hf_tokenizer(name):
    """A tokenizer of the transformers package by name (imported here only: only such data needs it)."""
    try:
        import transformers
    except ImportError:
        die(f"this data is tokenized with {name}, which needs the transformers package: pip install transformers")
    try:
        return transformers.AutoTokenizer.from_pretrained(name)
    except Exception as e:
        die(f"cannot load the {name} tokenizer (offline, set HF_HUB_OFFLINE=1 with it in the Hugging Face cache): "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def gpt2_text(ids, enc, pad=50257):
    """GPT-2 ids as the paper's code decodes its samples (the GPT-2 tokenizer's batch_decode): every
    token's bytes, <|endoftext|> as written, its pad id (50257, the released OWT models' 50258th token)
    as '[PAD]', invalid UTF-8 replaced."""
    pieces = [b'[PAD]' if i == pad else enc.decode_single_token_bytes(i) for i in ids]
    return b''.join(pieces).decode('utf-8', errors='replace')


def bert_text(ids, itos):
    """bert-base-uncased ids (itos: the tokens by id) as the paper's code decodes its samples (the slow
    BertTokenizer's batch_decode): tokens joined by spaces, '##' pieces glued to the previous one,
    [CLS] and [SEP] kept, then transformers' clean-up of spaces before punctuation and contractions,
    on the whole string (the fast tokenizer cleans each token alone: "don ' t" stays)."""
    text = ' '.join(itos[i] for i in ids).replace(' ##', '').strip()
    for dirty, clean in ((' .', '.'), (' ?', '?'), (' !', '!'), (' ,', ','), (" ' ", "'"), (" n't", "n't"),
                         (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(dirty, clean)
    return text


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
    if meta.get('tokenizer') == 'gpt2':  # GPT-2 BPE with the pad token of the paper's OpenWebText data (K = 50258)
        enc = gpt2_encoding()
        return (lambda text: enc.encode(text, allowed_special={'<|endoftext|>'}),
                lambda ids: enc.decode([i for i in ids if i < enc.n_vocab]))
    if 'tokenizer' in meta:  # [CLS] and [SEP] are data here: decoded as they are, never added
        tok = hf_tokenizer(meta['tokenizer'])
        itos = tok.convert_ids_to_tokens(list(range(len(tok))))
        return (lambda text: tok.encode(text, add_special_tokens=False)), (lambda ids: bert_text(ids, itos))
    enc = gpt2_encoding()
    return (lambda text: enc.encode(text, allowed_special={'<|endoftext|>'})), enc.decode


def get_batch(path, name, batch_size, block_size, device, generator=None, packed=0):
    """batch_size random windows of block_size ids from a split: (B, L) int64 on the device.
    packed > 0: the split is packed blocks of that many ids (block_size == packed, check_splits),
    and each window is one whole block."""
    ids = split(path, name)
    if packed:
        ix = torch.randint(len(ids) // packed, (batch_size,), generator=generator) * packed
    else:
        ix = torch.randint(len(ids) - block_size, (batch_size,), generator=generator)
    x = torch.stack([torch.from_numpy(ids[i:i + block_size].astype(np.int64)) for i in ix])
    if str(device).startswith('cuda'):
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


# -----------------------------------------------------------------------------
# Packed blocks as the paper's code frames its data (its dataloader.py, wrap=True): each document's ids
# followed by EOS, the stream cut into blocks of [BOS] + block_size - 2 ids + [EOS]. It packs the documents
# of each batch of datasets.map separately and drops each batch's remainder: the documents, split into
# num_proc = 4 contiguous shards (its loader.num_workers), each shard in batches of 1000 (map's default).
# data/openwebtext and data/lm1b/prepare.py write such blocks (tests/test_paper.py: the reference's own
# output on a small text).

def wrap_blocks(stream, bos, eos, block_size):
    """A token stream (1-d ids) as blocks (n, block_size) of [BOS] + block_size - 2 ids + [EOS]; the last
    ids that do not fill a block are dropped."""
    inner = block_size - 2
    n = len(stream) // inner
    blocks = np.empty((n, block_size), dtype=np.uint16)
    blocks[:, 0], blocks[:, -1] = bos, eos
    blocks[:, 1:-1] = np.asarray(stream[:n * inner]).reshape(n, inner)
    return blocks


def reference_groups(n_docs, num_proc=4, batch=1000):
    """The document ranges [a, b) that the paper's code packs separately: num_proc contiguous shards
    (datasets' split: the first n_docs % num_proc shards one document longer), each in batches."""
    num_proc = max(1, min(num_proc, n_docs))
    div, mod = divmod(n_docs, num_proc)
    start = 0
    for i in range(num_proc):
        end = start + div + (i < mod)
        for a in range(start, end, batch):
            yield a, min(a + batch, end)
        start = end


def frame(docs, bos, eos, block_size):
    """The blocks of tokenized documents (lists of ids, each ending in EOS), group by group."""
    groups = [wrap_blocks(np.concatenate([np.asarray(d, dtype=np.int64) for d in docs[a:b]]), bos, eos, block_size)
              for a, b in reference_groups(len(docs))]
    return np.concatenate(groups) if groups else np.zeros((0, block_size), np.uint16)


def write_blocks(dset, path, bos, eos, block_size):
    """frame() of a tokenized split (a datasets.Dataset with columns ids and len) into path (uint16 blocks one
    after the other), written via a temporary file; one group of documents in memory at a time."""
    lengths = np.asarray(dset['len'], dtype=np.int64)
    groups = list(reference_groups(len(lengths)))
    n_blocks = sum(int(lengths[a:b].sum()) // (block_size - 2) for a, b in groups)
    arr = np.memmap(path + '.tmp', dtype=np.uint16, mode='w+', shape=(n_blocks * block_size,))
    rows, idx = dset.with_format('numpy'), 0
    for a, b in groups:
        # list(): a group's ids are an array of arrays, or a 2-d array if its documents are of one length
        blocks = wrap_blocks(np.concatenate(list(rows[a:b]['ids'])), bos, eos, block_size)
        arr[idx:idx + blocks.size] = blocks.ravel()
        idx += blocks.size
    assert idx == arr.size
    arr.flush()
    os.replace(path + '.tmp', path)  # a half-written file is never mistaken for data
    print(f"{os.path.basename(path)}: {n_blocks:,} blocks of {block_size} = {arr.size:,} tokens")


def hub_prepare_options(argv, here):
    """(out_dir, num_proc) of a prepare script that reads a hub dataset: --out_dir=FOLDER (default: the
    script's folder) and --num_proc=N (default: half the cores); anything else is a one-line error."""
    options = {"out_dir": here, "num_proc": str(max(1, (os.cpu_count() or 2) // 2))}
    for arg in argv:
        key, _, value = arg[2:].partition("=")
        if not arg.startswith("--") or key not in options or not value:
            sys.exit(f"error: expected --out_dir=FOLDER and/or --num_proc=N, got '{arg}'")
        options[key] = value
    if not options["num_proc"].isdigit() or int(options["num_proc"]) < 1:
        sys.exit(f"error: --num_proc takes a whole number >= 1, got '{options['num_proc']}'")
    return options["out_dir"], int(options["num_proc"])
