"""train.py --wandb_log=True, offline: a stand-in `wandb` module on PYTHONPATH records the calls,
which must be one init (the project, the run's name and config), the eval figures at every eval
and the loss and lr at every logged step, then finish; without wandb, a one-line error that says
how to install it."""
import json
import sys

import pytest

from tools import runs
from test_scripts import losses, train

STANDIN = '''import json, os
_calls = []
def _record(**call):
    _calls.append(call)
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'calls.json'), 'w') as f:
        json.dump(_calls, f)
def init(project=None, name=None, config=None):
    _record(call='init', project=project, name=name, config=config)
def log(data, step=None):
    _record(call='log', data=data, step=step)
def finish():
    _record(call='finish')
'''


def test_wandb_logs_evals_and_steps(tmp_path, char_dataset):
    (tmp_path / 'standin').mkdir()
    (tmp_path / 'standin' / 'wandb.py').write_text(STANDIN)
    r = train(tmp_path, f'--dataset={char_dataset}', '--max_iters=4', '--eval_interval=2', '--out_dir=run',
              '--wandb_log=True', '--wandb_project=p', env={'PYTHONPATH': str(tmp_path / 'standin')})
    assert r.returncode == 0, r.stderr
    calls = json.load(open(tmp_path / 'standin' / 'calls.json'))
    assert [c['call'] for c in (calls[0], calls[-1])] == ['init', 'finish']
    assert calls[0]['project'] == 'p' and calls[0]['name'] == 'run'  # named after out_dir by default
    assert calls[0]['config']['max_iters'] == 4 and calls[0]['config']['wandb_log'] is True
    logs = [c for c in calls if c['call'] == 'log']
    assert [c['step'] for c in logs] == sorted(c['step'] for c in logs)  # wandb's steps never go back
    evals = [c for c in logs if 'val/ce' in c['data']]
    assert [c['step'] for c in evals] == [0, 2, 4]
    assert all({'iter', 'lr', 'train/ce', 'val/ce', 'val/gain'} <= set(c['data']) for c in evals)
    steps = {c['step']: c['data'] for c in logs if 'loss' in c['data']}
    assert sorted(steps) == [1, 2, 3, 4] and all(d['lr'] > 0 and d['tokens/s'] > 0 for d in steps.values())
    assert {i: f"{d['loss']:.4f}" for i, d in steps.items()} == losses(r.stdout)  # the figures printed


def test_wandb_missing_is_a_one_line_error_and_figures_are_flattened(monkeypatch):
    monkeypatch.setitem(sys.modules, 'wandb', None)  # import wandb fails, whether or not it is installed
    with pytest.raises(SystemExit, match=r'^error: --wandb_log=True needs the wandb package: pip install wandb$'):
        runs.wandb_init('p', 'run', {})
    ev = {'teacher': {'entropy': 3.1, 'agreement': 1.0}, 'reference': None, '1 step': {'entropy': 2.5},
          'eval_t': [0.1, 0.5], 'flag': True}
    assert runs.scalars(ev) == {'teacher/entropy': 3.1, 'teacher/agreement': 1.0, '1 step/entropy': 2.5}
