"""bench/benchmark.py builds the model train.py's flags describe. The
PyTorch references of bench/: the same architectures as capsnet's (the
same parameter count), the same JSON as bench/benchmark.py, a loss that
falls, and bench/side_by_side.py running against them by default. These
need the bench extra (pip install -e ".[bench]"): skipped without it
on a user's machine, failed in CI, which installs it."""
import importlib.util
import json
import os
import sys

import pytest

from conftest import ROOT
from conftest import run

SCRIPT = os.path.join('bench', 'torch_reference.py')
TINY = ['--batch', '2', '--steps', '1', '--warmup', '0']


@pytest.fixture(scope='module')
def torch():
    if importlib.util.find_spec('torch') is None:
        how = 'needs torch: pip install -e ".[bench]"'
        (pytest.fail if os.environ.get('CI') == 'true' else pytest.skip)(how)
    import torch
    return torch


def one_line(*args):
    return json.loads(run(*args, env={'OMP_NUM_THREADS': '1'}).stdout
                      .strip().splitlines()[-1])


@pytest.mark.parametrize('model', ['capsnet', 'baseline'])
def test_a_reference_reports_what_the_benchmark_does(torch, model):
    ours = one_line('bench/benchmark.py', '--model', model, *TINY)
    theirs = one_line(SCRIPT, '--model', model, *TINY)
    assert theirs['params'] == ours['params']     # 8,215,568 / 35,445,522
    keys = {'impl', 'batch', 'routing', 'warmup', 'steps', 'params',
            'train_img_s', 'eval_img_s', 'train_step_s', 'eval_step_s',
            'max_rss_mib', 'machine'}
    assert keys <= set(ours) and keys == set(theirs)
    assert theirs['train_img_s'] > 0 and theirs['eval_img_s'] > 0


def test_the_benchmark_builds_the_model_of_train_pys_model_flags():
    ours = one_line('bench/benchmark.py', '--leaky-routing', '--routing',
                    '2', '--router', 'attention', '--ema', '0.5', *TINY)
    assert {key: ours['options'][key] for key in (
        'leaky_routing', 'routing', 'router')} == {
            'leaky_routing': True, 'routing': 2, 'router': 'attention'}
    assert ours['ema'] == 0.5       # and its steps update the average


def test_the_capsnet_reference_learns_a_batch(torch):
    sys.path.insert(0, os.path.join(ROOT, 'bench'))
    try:
        import torch_reference
    finally:
        sys.path.pop(0)
    torch.manual_seed(0)
    model = torch_reference.CapsNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, t = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = model.loss(x, t)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    lengths, reconstruction = model(x)
    assert lengths.shape == (4, 10) and reconstruction.shape == (4, 784)


def test_side_by_side_runs_against_the_reference_by_default(torch):
    result = run('bench/side_by_side.py', '--pairs', '1', *TINY,
                 env={'OMP_NUM_THREADS': '1'})
    lines = result.stdout.splitlines()
    assert lines[2].startswith('| capsnet |')
    assert lines[3].startswith('| reference |')
    runs = json.loads(lines[-1])['runs']
    assert runs['reference'][0]['impl'].startswith('capsnet (torch ')
