"""Seeing the sampling and catching collapse: the diversity figures across samples (distinct-4 and
overlap-4, tools/textstats.py) on cases with known answers and against a direct count; real text's
figures come from the validation split; sample.py --animate writes one GIF frame per step plus the
final text, the same file for the same seed, and a flow map's panels follow the longest path's time."""
import itertools
import random

import pytest
import torch
from PIL import Image

import flm
from conftest import run_script, write_char_dataset
from tools import animation, textstats


def test_distinct_n_is_one_without_repeats_and_one_over_n_for_copies():
    unique = [list(range(10 * i, 10 * i + 10)) for i in range(5)]
    assert textstats.distinct_n(unique, 4) == 1.0
    for N in (2, 3, 7):
        assert textstats.distinct_n([unique[0]] * N, 4) == pytest.approx(1 / N)


def test_overlap_is_one_for_copies_zero_for_disjoint_and_the_shared_share_between():
    a = list(range(20))
    assert textstats.overlap_n([a, list(a), list(a)], 4) == 1.0
    assert textstats.overlap_n([a, list(range(100, 120))], 4) == 0.0
    # b shares a's first 9 tokens: 6 of a's 17 4-grams, and 6 of its own 17
    b = a[:9] + list(range(200, 211))
    assert textstats.overlap_n([a, b], 4) == pytest.approx(6 / 17)
    assert textstats.overlap_n([a], 4) is None  # no other sample


def test_overlap_equals_a_direct_count_over_all_pairs():
    rng = random.Random(0)
    # a small alphabet makes many shared 4-grams: more than one column block of the matrix product
    samples = [[rng.randrange(6) for _ in range(rng.randrange(5, 60))] for _ in range(300)]
    sets = [set(textstats.ngrams(s, 4)) for s in samples]
    direct = sum(max(len(a & b) / max(1, len(a)) for j, b in enumerate(sets) if j != i)
                 for i, a in enumerate(sets)) / len(sets)
    shared = {g for a, b in itertools.combinations(sets, 2) for g in a & b}
    assert len(shared) > 1000
    assert textstats.overlap_n(samples, 4) == pytest.approx(direct, rel=1e-9)


def test_real_blocks_do_not_overlap(tmp_path):
    import numpy as np
    np.arange(1000, dtype=np.uint16).tofile(tmp_path / 'val.bin')
    blocks = textstats.real_blocks(str(tmp_path), 10, 50)
    ids = [i for b in blocks for i in b]
    assert len(set(ids)) == len(ids) == 500  # 50 of the 100 aligned blocks, none twice
    assert all(b == list(range(b[0], b[0] + 10)) and b[0] % 10 == 0 for b in blocks)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny FLM on a dataset whose validation split is 'ab' repeated (its real text figures are known)."""
    cwd = tmp_path_factory.mktemp("anim")
    rng = random.Random(1)
    train_text = ''.join(rng.choice('abcdefgh \n') for _ in range(9000))
    data = write_char_dataset(str(cwd / 'data'), train_text + 'ab' * 500)
    r = run_script('train.py', f'--dataset={data}', '--n_layer=1', '--n_head=2', '--n_embd=32', '--n_cond=16',
                   '--block_size=32', '--batch_size=4', '--max_iters=2', '--eval_interval=2', '--eval_iters=1',
                   '--eval_sample_steps=2', '--out_dir=flm', cwd=cwd, env={'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr
    return cwd


def test_real_text_figures_come_from_the_validation_split(tiny_run):
    r = run_script('sample.py', '--out_dir=flm', '--steps=2', '--num_samples=5', '--out=s.json', cwd=tiny_run,
                   env={'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr
    import json
    reference = json.load(open(tiny_run / 's.json'))['reference']
    # 5 validation blocks of 32 of 'abab...': 2 distinct 4-grams of 5 * 29, and each block holds the others'
    assert reference['distinct_4'] == pytest.approx(2 / (5 * 29))
    assert reference['overlap_4'] == 1.0
    assert 'distinct-4' in r.stdout and 'overlap-4' in r.stdout


def test_sample_py_animates_one_frame_per_step_plus_the_final_text_deterministically(tiny_run):
    for name in ('a.gif', 'b.gif'):
        r = run_script('sample.py', '--out_dir=flm', '--steps=6', '--num_samples=2', f'--animate={name}', '--stats=False',
                       cwd=tiny_run, env={'OMP_NUM_THREADS': '1'})
        assert r.returncode == 0, r.stderr
    assert Image.open(tiny_run / 'a.gif').n_frames == 7
    assert (tiny_run / 'a.gif').read_bytes() == (tiny_run / 'b.gif').read_bytes()
    (tiny_run / 'notes.txt').write_text('keep me')
    r = run_script('sample.py', '--out_dir=flm', '--steps=2', '--animate=notes.txt', cwd=tiny_run)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and 'not a GIF' in r.stderr
    assert (tiny_run / 'notes.txt').read_text() == 'keep me'


def test_a_flow_maps_panels_follow_the_teachers_time(tmp_path):
    torch.manual_seed(0)
    cfg = flm.FLMConfig(vocab_size=5, block_size=8, n_layer=1, n_head=2, n_embd=16, n_cond=16)
    teacher = flm.FLM(cfg).eval()
    torch.nn.init.normal_(teacher.head.weight, std=1.0)
    student = flm.flow_map_student(teacher).eval()
    table = flm.g_table(5)
    paths = [(f'{n}', animation.trajectory(net, table, 5, 8, n, 0.0, 0, 'cpu', fm))
             for n, net, fm in ((8, teacher, False), (4, student, True), (1, student, True))]
    assert [len(frames) for _, frames in paths] == [9, 5, 2]
    # every path starts from the same noise: at t = 0 the student (the teacher's weights) reads as the teacher
    assert paths[0][1][0][1] == paths[1][1][0][1] == paths[2][1][0][1]
    n = animation.write_gif(str(tmp_path / 'fm.gif'), paths, lambda ids: ['abcde'[i] for i in ids])
    assert n == 9 and Image.open(tmp_path / 'fm.gif').n_frames == 9
