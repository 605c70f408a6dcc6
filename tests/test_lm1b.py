"""LM1B as the paper prepares it (data/lm1b/prepare.py), offline: its detokenizer; sentences, each
followed by the EOS, wrapped into blocks of 128 = [CLS] + 126 ids + [CLS] group by group, as the paper's
code does (a stand-in tokenizer with BERT's interface; tests/test_paper.py compares with that code's own
output); packed data (meta.pkl's block_size) gives batches of whole blocks, and another --block_size is a
one-line error; the script's own errors."""
import importlib.util
import os
import pickle

import numpy as np
import pytest
import torch

import dataset as data
from conftest import ROOT, run_script
from test_scripts import assert_one_line_error

spec = importlib.util.spec_from_file_location('lm1b_prepare', os.path.join(ROOT, 'data', 'lm1b', 'prepare.py'))
prepare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prepare)
CLS, SEP = 101, 102


class WordTokenizer:
    """Called like a transformers tokenizer: lower-cased words, ids from 1000 on."""
    cls_token_id, sep_token_id = CLS, SEP

    def __init__(self):
        self.vocab = {}

    def __call__(self, texts, add_special_tokens=True):
        assert add_special_tokens is False  # the paper's pipeline adds BOS and EOS itself
        return {'input_ids': [[self.vocab.setdefault(w, 1000 + len(self.vocab)) for w in t.lower().split()]
                              for t in texts]}


# LM1B-style tokenized sentences of 1 to 60 words: some longer than half a block
SENTENCES = [f"sentence {i} says " + " ".join(f"w{(i * j) % 23}" for j in range(i % 57)) + " ." for i in range(90)]


def test_detokenizer():
    assert prepare.detokenize("it 's a test , he said .") == "it's a test, he said."
    assert prepare.detokenize('the " quoted text " ( in brackets ) costs $ 5 .') == \
        'the "quoted text" (in brackets) costs $5.'
    assert prepare.detokenize("see http : / / www.example.com / news ?") == "see http://www.example.com/news?"
    assert prepare.detokenize("no change here") == "no change here"


def test_sentences_are_wrapped_into_whole_blocks():
    # the paper's framing (its BOS = EOS = [CLS]: tests/test_paper.py checks it against its code's output)
    tok = WordTokenizer()
    sentences = prepare.tokenize(SENTENCES, tok, CLS)
    assert all(s[-1] == CLS and CLS not in s[:-1] for s in sentences)  # EOS after each sentence
    blocks = data.frame(sentences, CLS, CLS, 128)
    n = len(blocks)
    assert blocks.shape == (n, 128) and blocks.dtype == np.uint16 and n >= 10
    assert (blocks[:, 0] == CLS).all() and (blocks[:, -1] == CLS).all()
    # 90 sentences: 4 groups (the paper's code's shards), each wrapped alone, its last < 126 ids dropped
    groups = list(data.reference_groups(len(sentences)))
    assert [b - a for a, b in groups] == [23, 23, 22, 22]
    streams = [np.concatenate(sentences[a:b]) for a, b in groups]
    assert n == sum(len(s) // 126 for s in streams)
    inside = blocks[:, 1:-1].ravel()
    assert (inside == np.concatenate([s[:len(s) // 126 * 126] for s in streams])).all()
    # the first group's insides, split after each EOS, give its sentences back in order (but the last, cut off)
    words = {i: w for w, i in tok.vocab.items()}
    first = inside[:len(streams[0]) // 126 * 126]
    got = [[words[i] for i in part[:-1].tolist()] for part in np.split(first, np.flatnonzero(first == CLS) + 1)[:-1]]
    assert got == [prepare.detokenize(s).split() for s in SENTENCES[:len(got)]] and len(got) > 5


def packed_dataset(folder, blocks, tokenizer='bert-base-uncased'):
    os.makedirs(folder, exist_ok=True)
    blocks[:-4].tofile(os.path.join(folder, 'train.bin'))
    blocks[-4:].tofile(os.path.join(folder, 'val.bin'))
    with open(os.path.join(folder, 'meta.pkl'), 'wb') as f:
        pickle.dump({'vocab_size': 30522, 'tokenizer': tokenizer, 'block_size': 128}, f)
    return folder


def test_packed_data_gives_whole_blocks(tmp_path):
    blocks = data.wrap_blocks(np.concatenate(prepare.tokenize(SENTENCES, WordTokenizer(), CLS)), CLS, CLS, 128)
    folder = packed_dataset(str(tmp_path / 'lm1b'), blocks)
    meta = data.read_meta(folder)
    assert meta == {'vocab_size': 30522, 'tokenizer': 'bert-base-uncased', 'block_size': 128}
    data.check_splits(folder, meta['vocab_size'], 128, meta['block_size'])
    gen = torch.Generator().manual_seed(0)
    x = data.get_batch(folder, 'train', 256, 128, 'cpu', gen, packed=meta['block_size'])
    assert x.shape == (256, 128)
    rows = {tuple(b) for b in blocks[:-4].astype(np.int64).tolist()}
    assert all(tuple(r) in rows for r in x.tolist())  # each a whole block, from its BOS to its EOS
    assert len({tuple(r) for r in x.tolist()}) > len(rows) // 2  # and they are drawn from all of them
    with pytest.raises(SystemExit, match='packed in blocks of 128 tokens.*--block_size=128'):
        data.check_splits(folder, meta['vocab_size'], 64, meta['block_size'])
    np.zeros(100, np.uint16).tofile(os.path.join(folder, 'val.bin'))
    with pytest.raises(SystemExit, match='val.bin .* not a whole number of blocks of 128'):
        data.check_splits(folder, meta['vocab_size'], 128, meta['block_size'])
    packed_dataset(str(tmp_path / 'bad'), blocks, tokenizer='my-tokenizer')
    with pytest.raises(SystemExit, match="unknown tokenizer 'my-tokenizer'"):
        data.read_meta(str(tmp_path / 'bad'))


def test_train_refuses_another_block_size_and_prepare_errors(tmp_path):
    blocks = data.wrap_blocks(np.concatenate(prepare.tokenize(SENTENCES, WordTokenizer(), CLS)), CLS, CLS, 128)
    folder = packed_dataset(str(tmp_path / 'lm1b'), blocks)
    r = run_script('train.py', f'--dataset={folder}', '--block_size=64', '--out_dir=o', cwd=tmp_path)
    assert_one_line_error(r, '--block_size=64', 'blocks of 128', '--block_size=128')
    assert not (tmp_path / 'o').exists()
    # prepare.py: a missing package (a stand-in that fails to import, whatever is installed) and a bad option
    (tmp_path / 'missing').mkdir()
    (tmp_path / 'missing' / 'datasets.py').write_text("raise ImportError('no datasets', name='datasets')\n")
    r = run_script('data/lm1b/prepare.py', f'--out_dir={tmp_path / "out"}', cwd=tmp_path,
                   env={'PYTHONPATH': str(tmp_path / 'missing')})
    assert_one_line_error(r, 'datasets', 'pip install datasets transformers')
    assert_one_line_error(run_script('data/lm1b/prepare.py', '--num_proc=0', cwd=tmp_path), '--num_proc')
    assert_one_line_error(run_script('data/lm1b/prepare.py', '--outdir=x', cwd=tmp_path), '--out_dir')
