"""The paper's Gen PPL protocol (tools/judge.py's GPT-2 judge) against the reference's own metric code.

tests/fixtures/gen_ppl (its README says how it was made) holds a tiny random GPT-2 judge, OWT-like
GPT-2 samples and LM1B-like BERT samples, and the texts, Gen PPL and entropy the reference's code
gave for them. Checked here, in process:
- the samples decode to the reference's texts (dataset.gpt2_text, bert_text);
- Gen PPL and entropy equal the reference's (relative 1e-5), for all samples and each alone;
- real texts with nonsense ids get the same Gen PPL: the metric reads the text;
- texts that are ids are a one-line error.
Skipped without transformers or safetensors (optional for users; CI installs them).
"""
import json
import os

import pytest

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")
from safetensors.torch import load_file  # noqa: E402

import dataset as data  # noqa: E402
from tools import judge as judge_mod  # noqa: E402

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'gen_ppl')
REF = json.load(open(os.path.join(FIXTURE, 'reference.json'), encoding='utf-8'))
TOKENIZER = {'owt': 'gpt2', 'lm1b': 'bert-base-uncased'}


try:  # GPT-2's BPE through tiktoken: downloaded once, or offline from TIKTOKEN_CACHE_DIR
    data.gpt2_encoding()
except SystemExit:
    pytest.skip("GPT-2's BPE is not available (offline: set TIKTOKEN_CACHE_DIR to a cache of it)", allow_module_level=True)


def save_judge(folder):
    """The fixture's GPT-2 saved as a transformers folder (a judge for tools/judge.py)."""
    with open(os.path.join(FIXTURE, 'judge_config.json')) as f:
        cfg = transformers.GPT2Config(**json.load(f), initializer_range=0.5)
    model = transformers.GPT2LMHeadModel(cfg)
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in load_file(
        os.path.join(FIXTURE, 'judge.safetensors')).items()}, strict=False)
    assert missing == ['lm_head.weight'] and not unexpected  # tied to the token embedding
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope='module')
def judge(tmp_path_factory):
    return judge_mod.load_judge(save_judge(str(tmp_path_factory.mktemp('judge') / 'tiny-gpt2')), 'cpu')


def texts_of(name):
    ids = REF[name]['ids']
    if name == 'owt':
        return [data.gpt2_text(i, data.gpt2_encoding()) for i in ids]
    with open(os.path.join(FIXTURE, 'vocab.txt'), encoding='utf-8') as f:
        itos = f.read().split('\n')
    return [data.bert_text(i, itos) for i in ids]


@pytest.mark.parametrize('name', ['owt', 'lm1b'])
def test_samples_decode_to_the_reference_texts(name):
    assert texts_of(name) == REF[name]['texts']


@pytest.mark.parametrize('name', ['owt', 'lm1b'])
def test_gen_ppl_and_entropy_are_the_reference_metrics(judge, name):
    ref, texts = REF[name], texts_of(name)
    r = judge_mod.judge_samples(judge, texts, ref['ids'], batch=3, tokenizer=TOKENIZER[name])
    assert r['gen_ppl'] == pytest.approx(ref['gen_ppl'], rel=1e-5)
    assert r['token_entropy'] == pytest.approx(ref['entropy'], rel=1e-5)
    for text, ids, alone in zip(texts, ref['ids'], ref['gen_ppl_per_sample']):
        assert judge_mod.judge_samples(judge, [text], [ids])['gen_ppl'] == pytest.approx(alone, rel=1e-5)
    # the metric reads the text: nonsense ids of the same length give the same Gen PPL
    nonsense = [[7] * len(i) for i in ref['ids']]
    assert judge_mod.judge_samples(judge, texts, nonsense, batch=3)['gen_ppl'] == r['gen_ppl']


def test_texts_that_are_ids_are_a_one_line_error(judge):
    with pytest.raises(SystemExit) as e:
        judge_mod.judge_samples(judge, ['1 2 3'], [[1, 2, 3]], tokenizer='ids')
    assert str(e.value).startswith('error: ') and '\n' not in str(e.value)
