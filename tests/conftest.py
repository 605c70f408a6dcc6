import os
import pickle
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# the toy distribution and its exact denoiser live in tools/toy.py (the notebooks use them too); the
# tests import them from here
from tools.toy import exact_denoiser, joint_frequencies, toy_joint  # noqa: E402,F401


def write_char_dataset(folder, text, val_fraction=0.1):
    """A character dataset in nanoGPT's format (train.bin, val.bin, meta.pkl)."""
    os.makedirs(folder, exist_ok=True)
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = np.array([stoi[c] for c in text], dtype=np.uint16)
    n = int(len(ids) * (1 - val_fraction))
    ids[:n].tofile(os.path.join(folder, 'train.bin'))
    ids[n:].tofile(os.path.join(folder, 'val.bin'))
    with open(os.path.join(folder, 'meta.pkl'), 'wb') as f:
        pickle.dump({'vocab_size': len(chars), 'stoi': stoi, 'itos': {i: c for c, i in stoi.items()}}, f)
    return folder


TOY_TEXT = ("the cat sat on the mat. the dog sat on the log. a cat and a dog met on the mat.\n"
            "to be or not to be, that is the question.\n") * 40


@pytest.fixture(scope="session")
def char_dataset(tmp_path_factory):
    return write_char_dataset(str(tmp_path_factory.mktemp("data") / "toy_char"), TOY_TEXT)


def run_script(script, *args, cwd, timeout=300, env=None, launcher=None):
    """A script of the repository, by its path; those under tools/ run as modules (python -m tools.judge),
    as the README has them, with the repository on PYTHONPATH."""
    env = dict(env or {})
    if script.startswith('tools/'):
        target = ['-m', script[:-3].replace('/', '.')]
        env['PYTHONPATH'] = os.pathsep.join([ROOT] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    else:
        target = [os.path.join(ROOT, script)]
    cmd = (launcher or [sys.executable]) + target + list(args)
    full_env = {**os.environ, 'PYTHONUNBUFFERED': '1', **env}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


def run_scripts(commands, cwd, timeout=300):
    """Short script runs, (script, *args) each, two at a time with one thread each: most of such a run is
    the interpreter's start-up, which uses one core. Their results, in order."""
    def one(command):
        return run_script(*command, cwd=cwd, timeout=timeout, env={'OMP_NUM_THREADS': '1'})
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(one, commands))
