"""The walkthrough notebooks in notebooks/ run top to bottom, each in its own kernel, in fast mode
(NOTEBOOK_FAST=1: tiny networks, few iterations, no checkpoints read) from the repository root. Their
cells assert what they show (the toy's distances to the data, shapes, that samples keep the prompt), so
a broken flm.py fails here. The saved notebooks are executed as in-memory copies, never rewritten.
Needs nbclient, nbformat and ipykernel (skipped without them)."""
import os

import pytest

from conftest import ROOT

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')
pytest.importorskip('ipykernel')

NOTEBOOKS = ('01_one_hot_flow.ipynb', '02_tiny_flm_shakespeare.ipynb', '03_flow_maps.ipynb')
NEEDS_SHAKESPEARE = ('02_tiny_flm_shakespeare.ipynb', '03_flow_maps.ipynb')
KERNEL = 'flm-tests-python'


@pytest.fixture(scope='module')
def jupyter_path(tmp_path_factory):
    """A kernel spec that runs this very interpreter (the one with torch), whatever `python` is on PATH."""
    from ipykernel.kernelspec import write_kernel_spec
    root = tmp_path_factory.mktemp('jupyter')
    write_kernel_spec(str(root / 'kernels' / KERNEL))
    return str(root)


def shakespeare_available():
    folder = os.path.join(ROOT, 'data', 'shakespeare_char')
    prepared = all(os.path.isfile(os.path.join(folder, f)) for f in ('train.bin', 'val.bin', 'meta.pkl'))
    return prepared or os.path.isfile(os.path.join(folder, 'input.txt'))


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_runs_top_to_bottom(name, jupyter_path, monkeypatch):
    if name in NEEDS_SHAKESPEARE and not shakespeare_available():
        pytest.skip("no tiny Shakespeare: data/shakespeare_char/input.txt is missing")
    path = os.path.join(ROOT, 'notebooks', name)
    nb = nbformat.read(path, as_version=4)
    assert any(c.cell_type == 'code' and c.get('outputs') for c in nb.cells), f"{name} is saved without outputs"
    monkeypatch.setenv('NOTEBOOK_FAST', '1')  # the kernel inherits this environment
    monkeypatch.setenv('JUPYTER_PATH', jupyter_path)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name=KERNEL, record_timing=False,
                                     resources={'metadata': {'path': ROOT}})
    client.execute()  # a failing cell raises CellExecutionError with its traceback
    errors = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs if o.output_type == 'error']
    assert not errors


def code_cells(name):
    return [c for c in nbformat.read(os.path.join(ROOT, 'notebooks', name), as_version=4).cells if c.cell_type == 'code']


def test_saved_source_listings_are_the_code_as_it_is():
    # a cell that prints inspect.getsource(X) shows X as saved; it must be X as the code has it now
    import importlib
    import inspect
    import re
    shown = 0
    for name in NOTEBOOKS:
        for cell in code_cells(name):
            for target in re.findall(r'print\(inspect\.getsource\(([\w.]+)\)\)', cell.source):
                module, attr = target.rsplit('.', 1)
                module = {'runs': 'tools.runs'}.get(module, module)
                source = inspect.getsource(getattr(importlib.import_module(module), attr))
                saved = ''.join(o.get('text', '') for o in cell.outputs if o.output_type == 'stream')
                assert saved.rstrip('\n') == source.rstrip('\n'), f"{name}: the saved listing of {target} is stale"
                shown += 1
    assert shown >= 3  # flm.flm_loss, runs.fit, flm.flowmap_loss


def test_notebooks_import_what_flm_exports_instead_of_redefining_it():
    import ast
    import flm
    exported = {n for n, v in vars(flm).items() if not n.startswith('_') and getattr(v, '__module__', None) == 'flm'}
    for name in NOTEBOOKS:
        for cell in code_cells(name):
            tree = ast.parse('\n'.join(line for line in cell.source.splitlines() if not line.startswith(('%', '!'))))
            defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
            assert not defined & exported, f"{name} defines {sorted(defined & exported)}, which flm.py exports"
