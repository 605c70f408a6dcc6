"""The paper's run from this project's presets, checked against the paper's code (github david3684/flm),
offline. Fixtures made once, outside this repository, by running that code:
- reference_dit.json: its DIT (models/dit.py) built on the meta device for the released configs
  (configs/model/small.yaml; algo flm for FLM-B-*, flm_distill_double for FMLM-B-*; L = 1024, K = 50258
  for OWT, L = 128, K = 30522 for LM1B): parameter count and state-dict shapes.
- reference_framing.npz: its dataloader.get_tokenizer and get_dataset (wrap=True, num_proc=4, the
  tokenizers built offline: GPT-2 from its BPE files, BERT from a small vocabulary of the text's words, the
  hub's dataset loader replaced by the documents below) on 4101 short documents of tiny Shakespeare (one
  of them with the text '<|endoftext|>' inside), framed as OpenWebText (L = 1024), and the same as LM1B-style
  tokenized sentences (L = 128): the blocks it returned, and its BOS and EOS.
Checked here:
- the full OWT and LM1B presets build the reference's network: its parameter count and state-dict shapes
  (the flow map's too, but for the learnable loss weighting's second time, which the reference lacks);
- a train.py checkpoint of a scaled-down paper preset exports to the release layout (key set: the release
  fixtures'), and loads back with the same logits; a flow map's export likewise;
- our framing (dataset.frame, the prepare scripts' tokenizers) gives the reference's blocks, BOS = EOS =
  <|endoftext|> for OWT and BOS = EOS = [CLS] for LM1B (the first id of BERT's encode of its stand-in EOS);
- end to end with the fixture release folder (hub layout): --teacher distils the one-network flow map 3
  iterations, saves, resumes exactly and samples in one step; --init_from trains an FLM 3 iterations; a
  release whose L or K differs from the data's is a one-line error.
"""
import importlib.util
import json
import os
import shutil
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("safetensors")
from safetensors.torch import load_file  # noqa: E402

import dataset as data  # noqa: E402
import flm  # noqa: E402
from tools import runs  # noqa: E402
from tools import pretrained  # noqa: E402
from configurator import overrides  # noqa: E402
from test_presets import script_defaults  # noqa: E402
from conftest import ROOT, run_scripts, write_char_dataset  # noqa: E402
from test_scripts import losses  # noqa: E402

FIXTURES = os.path.join(ROOT, 'tests', 'fixtures')
REFERENCE = json.load(open(os.path.join(FIXTURES, 'reference_dit.json')))
FRAMING = np.load(os.path.join(FIXTURES, 'reference_framing.npz'))


def fixture_text(name):
    """A text of the framing fixture (stored as its UTF-8 bytes)."""
    return bytes(FRAMING[name]).decode('utf-8')


def preset_network(preset, vocab_size, **extra):
    """The FLMConfig that train.py builds from a preset (train.py's model_args)."""
    defaults = script_defaults('train.py')
    c = {**defaults, **overrides(defaults, [os.path.join(ROOT, 'config', preset)])}
    return flm.FLMConfig(vocab_size=vocab_size, block_size=c['block_size'], n_layer=c['n_layer'], n_head=c['n_head'],
                         n_embd=c['n_embd'], n_cond=c['n_cond'], dropout=c['dropout'], ln_scale=c['ln_scale'],
                         attn_softcap=c['attn_softcap'], time_scale=c['time_scale'],
                         embed_dropout=c['embed_dropout'], **extra)


def release_shapes(net):
    """Our network's state dict under the release layout's names and shapes (tools/pretrained.py release_weights)."""
    shapes = {}
    for key, p in net.state_dict().items():
        prefix = next((q for q in pretrained.LOSS_WEIGHT if key.startswith(q)), None)
        if prefix is not None:
            if pretrained.LOSS_WEIGHT[prefix]:
                shapes[pretrained.LOSS_WEIGHT[prefix] + key[len(prefix):]] = list(p.shape)
            continue
        shapes[pretrained.reference_name(key)] = list(p.shape)[::-1] if key == 'embed.weight' else list(p.shape)
    shapes['rotary_emb.inv_freq'] = [net.cfg.n_embd // net.cfg.n_head // 2]
    return shapes


@pytest.mark.parametrize('preset, release, K', [('train_owt.py', 'OWT', 50258), ('train_lm1b.py', 'LM1B', 30522)])
def test_the_presets_build_the_reference_network(preset, release, K):
    ref_flm, ref_fmlm = REFERENCE[f'FLM-B-{release}'], REFERENCE[f'FMLM-B-{release}']
    cfg = preset_network(preset, K)
    assert (cfg.ln_scale, cfg.attn_softcap, cfg.time_scale, cfg.embed_dropout) == (True, 50.0, 1.0, False)
    assert (K, cfg.block_size) == (ref_flm['vocab_size'], ref_flm['length'])
    with torch.device('meta'):
        net = flm.FLM(cfg)
        student = flm.FLM(flm.FLMConfig(**{**cfg.__dict__, 'two_times': True, 'learn_loss_weight': 2}))
    assert net.num_params() == ref_flm['parameters']
    assert release_shapes(net) == ref_flm['shapes']
    # the flow map (stage 2, flowmap): the reference's w reads s alone, ours s and t (one more time embedding)
    assert release_shapes(student) == ref_fmlm['shapes']
    extra = sum(p.numel() for p in student.loss_weight.embed_t.parameters())
    assert student.num_params() == ref_fmlm['parameters'] + extra


# -----------------------------------------------------------------------------
# data framing

def load_prepare(name):
    spec = importlib.util.spec_from_file_location(f'{name}_prepare', os.path.join(ROOT, 'data', name, 'prepare.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_openwebtext_framing_is_the_reference_s():
    info = json.loads(fixture_text('info'))['owt']
    owt = load_prepare('openwebtext')
    assert (info['BOS'], info['EOS'], info['len']) == (owt.EOT, owt.EOT, owt.VOCAB_SIZE) == (50256, 50256, 50258)
    docs = fixture_text('owt_docs').split('\n')
    assert len(docs) == 4101 and any('<|endoftext|>' in d for d in docs)
    blocks = data.frame(owt.tokenize(docs, data.gpt2_encoding()), owt.EOT, owt.EOT, owt.BLOCK_SIZE)
    np.testing.assert_array_equal(blocks, FRAMING['owt_blocks'])
    # a meta.pkl of this data: GPT-2 with the pad token, blocks of 1024; decoding drops the pad
    meta = {'vocab_size': 50258, 'tokenizer': 'gpt2', 'block_size': 1024}
    encode, decode = data.codec(meta)
    assert decode(encode('a <|endoftext|> b') + [50257]) == 'a <|endoftext|> b'


def test_lm1b_framing_is_the_reference_s(tmp_path):
    transformers = pytest.importorskip('transformers')  # optional for users; CI installs it
    info = json.loads(fixture_text('info'))['lm1b']
    (tmp_path / 'vocab.txt').write_text(fixture_text('bert_vocab') + '\n', encoding='utf-8')
    tok = transformers.BertTokenizer(str(tmp_path / 'vocab.txt'))
    lm1b = load_prepare('lm1b')
    bos, eos = lm1b.reference_eos(tok)
    assert (bos, eos) == (info['BOS'], info['EOS']) == (tok.cls_token_id, tok.cls_token_id) == (101, 101)
    sentences = fixture_text('lm1b_sentences').split('\n')
    blocks = data.frame(lm1b.tokenize(sentences, tok, eos), bos, eos, lm1b.BLOCK_SIZE)
    np.testing.assert_array_equal(blocks, FRAMING['lm1b_blocks'])
    assert (blocks[:, [0, -1]] == 101).all() and not (blocks == tok.sep_token_id).any()


def test_openwebtext_prepare_errors(monkeypatch):
    owt = load_prepare('openwebtext')
    with pytest.raises(SystemExit, match="error: expected --out_dir=FOLDER and/or --num_proc=N, got '--outdir=x'"):
        owt.main(['--outdir=x'])
    with pytest.raises(SystemExit, match="--num_proc takes a whole number >= 1, got '0'"):
        owt.main(['--num_proc=0'])
    monkeypatch.setitem(sys.modules, 'datasets', None)  # as if not installed: its import fails
    with pytest.raises(SystemExit, match='needs the datasets library: pip install datasets'):
        owt.main([])


class Rows:
    """The little of a tokenized datasets.Dataset that dataset.write_blocks uses: the len column, and slices of
    the numpy format (an array of arrays; a 2-d array where all rows have one length)."""

    def __init__(self, ids):
        self.ids = ids

    def __getitem__(self, key):
        if key == 'len':
            return [len(s) for s in self.ids]
        rows = self.ids[key]
        return {'ids': np.array(rows) if len({len(s) for s in rows}) == 1 else np.array(
            [np.array(s) for s in rows], dtype=object)}

    def with_format(self, kind):
        return self


def test_write_blocks_writes_the_frame(tmp_path):
    rng = np.random.default_rng(0)
    docs = [list(rng.integers(0, 100, rng.integers(1, 60))) + [7] for _ in range(4321)] + [[5, 6, 7]] * 1200
    path = str(tmp_path / 'train.bin')
    data.write_blocks(Rows(docs), path, 9, 7, 32)
    blocks = data.frame(docs, 9, 7, 32)
    assert len(blocks) > 100
    np.testing.assert_array_equal(np.fromfile(path, dtype=np.uint16), blocks.ravel())
    assert os.listdir(tmp_path) == ['train.bin']  # no temporary file left
    # each group's remainder is dropped: fewer blocks than the whole stream's
    assert len(blocks) < sum(map(len, docs)) // 30


# -----------------------------------------------------------------------------
# the release as a teacher and a start; export

SMALL = ['--block_size=16', '--batch_size=4', '--log_interval=1', '--eval_iters=1', '--eval_sample_steps=2',
         '--eval_samples=2', '--eval_ref_steps=2', '--warmup_iters=1']


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """On a dataset of K = 64 characters (the fixture release's K and L = 16): the flow map distilled from the
    release folder straight to 3 iterations and to 2 then resumed to 3; config/train_owt.py's FLM continued
    from it for 3 (the release's network: the paper's, scaled down to 2 layers of width 32); the same preset
    from scratch, scaled down alike, for 1."""
    cwd = tmp_path_factory.mktemp('paper')
    rng = np.random.default_rng(0)
    chars = [chr(c) for c in range(48, 112)]
    write_char_dataset(str(cwd / 'd64'), ''.join(rng.choice(chars, 4000)))
    release = str(cwd / 'FLM-folder')
    shutil.copytree(os.path.join(FIXTURES, 'paper_flm'), release)
    os.remove(os.path.join(release, 'expected.safetensors'))  # a release holds just the two files
    flowmap = ['train.py', '--dataset=d64', '--kind=flowmap', f'--teacher={release}', '--eval_interval=2', *SMALL]
    first = run_scripts([(*flowmap, '--max_iters=3', '--out_dir=fm-full'), (*flowmap, '--max_iters=2', '--out_dir=fm')],
                        cwd=cwd)
    second = run_scripts([
        (*flowmap, '--max_iters=3', '--out_dir=fm', '--init_from=resume'),
        ('train.py', os.path.join(ROOT, 'config', 'train_owt.py'), '--dataset=d64', f'--init_from={release}',
         '--gradient_accumulation_steps=1', '--compile=False', '--max_iters=3', '--eval_interval=3', *SMALL,
         '--out_dir=flm'),
        ('train.py', os.path.join(ROOT, 'config', 'train_owt.py'), '--dataset=d64', '--n_layer=2', '--n_head=2',
         '--n_embd=32', '--n_cond=16', '--gradient_accumulation_steps=1', '--compile=False', '--max_iters=1',
         '--eval_interval=1', *SMALL, '--out_dir=owt-small')], cwd=cwd)
    for r in first + second:
        assert r.returncode == 0, r.stderr[-2000:]
    return cwd, release, dict(zip(['fm-full', 'fm', 'fm-resumed', 'flm', 'owt-small'], first + second))


def test_release_as_teacher_distils_resumes_exactly_and_samples_in_one_step(trained):
    cwd, release, out = trained
    assert f'distilled from {release}' in out['fm-full'].stdout
    full, resumed = losses(out['fm-full'].stdout), losses(out['fm-resumed'].stdout)
    assert sorted(full) == [1, 2, 3] and resumed == {3: full[3]}
    a, b = (torch.load(cwd / d / 'ckpt.pt', weights_only=True) for d in ('fm-full', 'fm'))
    assert all(torch.equal(a['ema'][k], b['ema'][k]) for k in a['ema'])
    assert a['model_args']['time_scale'] == 1.0 and a['model_args']['embed_dropout'] is False  # the release's network
    net, _ = runs.from_checkpoint(runs.load_checkpoint(str(cwd / 'fm' / 'ckpt.pt'), 'test'), 'cpu')
    gen = torch.Generator().manual_seed(0)
    ids = runs.sampler('flowmap', net, flm.g_table(64))(3, 16, 1, generator=gen)
    assert ids.shape == (3, 16) and 0 <= ids.min() and ids.max() < 64


def test_release_as_the_start_of_an_flm_run(trained):
    cwd, release, out = trained
    assert f'continued from {release}' in out['flm'].stdout and sorted(losses(out['flm'].stdout)) == [1, 2, 3]
    ckpt = torch.load(cwd / 'flm' / 'ckpt.pt', weights_only=True)
    p = pretrained.load_pretrained(release)
    assert p.model_args.items() <= ckpt['model_args'].items() and ckpt['kind'] == 'flm'
    assert ckpt['config']['learning_rate'] == 3e-4 and ckpt['config']['ema_decay'] == 0.9999  # the preset's
    moved = [k for k, w in p.model.state_dict().items() if not torch.equal(ckpt['model'][k], w)]
    assert len(moved) > 10  # trained on from the release's weights (same shapes, 3 steps further)


def logits(net, x, t, t2):
    with torch.no_grad():
        return net(x, t, t2) if net.cfg.two_times else net(x, t)


@pytest.mark.parametrize('run, fixture', [('owt-small', 'paper_flm'), ('fm', 'paper_fmlm')])
def test_export_round_trip(trained, tmp_path, run, fixture):
    cwd, _, _ = trained
    pretrained.main(['export', f'--ckpt={cwd / run / "ckpt.pt"}', f'--out={tmp_path / "rel"}'])
    assert sorted(os.listdir(tmp_path / 'rel')) == ['config.json', 'model.safetensors']
    assert set(load_file(tmp_path / 'rel' / 'model.safetensors')) == set(
        load_file(os.path.join(FIXTURES, fixture, 'model.safetensors')))
    config = json.load(open(tmp_path / 'rel' / 'config.json'))
    ref = json.load(open(os.path.join(FIXTURES, fixture, 'config.json')))
    for group in ('algo', 'model'):  # the fields the reference's DIT reads, and their neighbours
        assert set(ref[group]) - {'teacher_f_path', 'teacher_g_path', 'use_curriculum', 'add_boundary'} <= \
            set(config[group]), group
    assert set(config) <= set(ref) and config['vocab_size'] == 64
    p = pretrained.load_pretrained(str(tmp_path / 'rel'))
    ckpt = runs.load_checkpoint(str(cwd / run / 'ckpt.pt'), 'test')
    # the preset's switches reach the network (train.py's options), and dropout stays out of the embedding
    assert {k: ckpt['model_args'][k] for k in ('ln_scale', 'attn_softcap', 'time_scale', 'embed_dropout')} == \
        {'ln_scale': True, 'attn_softcap': 50.0, 'time_scale': 1.0, 'embed_dropout': False}
    ours = runs.frozen(ckpt['kind'], ckpt['model_args'], ckpt['ema'], 'cpu')
    g = torch.Generator().manual_seed(1)
    x, t, t2 = torch.randn(2, 16, 64, generator=g), torch.rand(2, generator=g), torch.rand(2, generator=g)
    assert p.kind == ('flm' if run == 'owt-small' else 'stage2')
    torch.testing.assert_close(logits(p.model, x, t, t2), logits(ours, x, t, t2), atol=0, rtol=0)


def test_export_refuses_what_the_layout_cannot_hold(trained, tmp_path):
    cwd, _, _ = trained
    ckpt = torch.load(cwd / 'owt-small' / 'ckpt.pt', weights_only=True)
    ckpt['model_args']['time_scale'] = 1000.0
    torch.save(ckpt, tmp_path / 'ckpt.pt')
    with pytest.raises(SystemExit, match=r"time_scale=1000.0: the release layout is the paper's network"):
        pretrained.export(str(tmp_path / 'ckpt.pt'), str(tmp_path / 'out'))
    with pytest.raises(SystemExit, match='usage'):
        pretrained.main(['exprot'])


def test_a_release_that_does_not_fit_the_data_is_a_one_line_error(trained):
    _, release, _ = trained
    for K, L, flag, what in [(65, 16, '--teacher', 'vocab_size=64, block_size=16; this run'),
                             (64, 8, '--teacher', 'vocab_size=64, block_size=16; this run')]:
        with pytest.raises(SystemExit) as e:
            runs.frozen_networks('flowmap', release, '', None, K, L, 'cpu')
        msg = str(e.value)
        assert msg.startswith(f'error: {flag}={release} has') and what in msg and '\n' not in msg
        assert f"{K}, {L}" in msg
    with pytest.raises(SystemExit, match=r'--init_from=.* has vocab_size=64, block_size=16; this run.* 65, 16'):
        pretrained.release_as_checkpoint(release, '--init_from', 65, 16)
    with pytest.raises(SystemExit, match='is a flow map'):
        pretrained.release_as_checkpoint(os.path.join(FIXTURES, 'paper_fmlm'), '--teacher', 64, 16)


def test_embed_dropout_switch():
    # a network without blocks: dropout can act only on the input embedding, and only with the switch on
    for on in (True, False):
        net = flm.FLM(flm.FLMConfig(vocab_size=11, block_size=8, n_layer=0, n_head=2, n_embd=16, n_cond=8,
                                    dropout=0.5, embed_dropout=on))
        torch.nn.init.normal_(net.head.weight)
        x, t = torch.randn(2, 8, 11), torch.rand(2)
        torch.manual_seed(0)
        train_mode = net.train()(x, t)
        assert torch.equal(train_mode, net.eval()(x, t)) != on
