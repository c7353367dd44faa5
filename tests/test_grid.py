"""The grid runner: a cell trains, is evaluated and leaves a result that
is never recomputed; the table gives every row's mean and spread beside the
paper's figures; what the routing ran is found, not declared."""
import argparse
import json
import os

from conftest import DATA
from conftest import run
from conftest import script_module


def fake_cell(error, seed):
    return {'error_percent': error, 'affine_accuracy_percent': 90.0 + error,
            'parameters': 1234567, 'epoch_seconds': [400.0, 401.0, 9000.0],
            'routing_path': '34 Chainer functions', 'seed': seed,
            'validation': [[1, 0.9], [2, 0.95]]}


def test_table_has_every_row_with_mean_and_spread():
    grid = script_module('experiments/grid.py')
    table1 = grid.GRIDS['table1']
    results = {row.key: [fake_cell(1.0, 0), fake_cell(2.0, 1)]
               for row in table1.rows}
    args = argparse.Namespace(epochs=1, batchsize=128, train_size=1000,
                              val_size=500, test_size=500, gpu=-1,
                              seeds=[0, 1])
    text = grid.markdown(table1, results, args, 'python experiments/grid.py')
    rows = [line for line in text.splitlines() if line.startswith('| ')]
    assert len(rows) == 2 + len(table1.rows)
    assert all('| 1.50 ± 0.71 (n=2) | 1,234,567 | 401 | 34 Chainer functions |' in row
               for row in rows[2:])
    for paper in ('0.39', '0.34 ± 0.032', '0.29 ± 0.011', '0.35 ± 0.036',
                  '0.25 ± 0.005'):
        assert any(row.endswith('| {} |'.format(paper)) for row in rows)
    assert 'affine' not in rows[0] and rows[0].endswith('| paper |')
    assert text.startswith('Budget: 1 epoch(s), batch 128, 1000 training')
    assert 'Command: `python experiments/grid.py`' in text


def test_the_routers_table_has_affine_accuracy_and_only_finished_rows():
    grid = script_module('experiments/grid.py')
    routers = grid.GRIDS['routers']
    args = argparse.Namespace(epochs=5, batchsize=128, train_size=None,
                              val_size=5000, test_size=None, gpu=-1,
                              seeds=[0, 1])
    text = grid.markdown(routers, {'uniform': [fake_cell(0.5, 0)]}, args,
                         'c')
    rows = [line for line in text.splitlines() if line.startswith('| ')]
    assert rows[0] == ('| router | test error % | affine accuracy % | '
                       'parameters | s / epoch (median) | routing ran |')
    assert rows[2] == ('| `uniform` | 0.50 (n=1) | 90.50 (n=1) | 1,234,567 '
                       '| 401 | 34 Chainer functions |')
    assert len(rows) == 3


def test_the_routing_path_is_what_the_router_ran():
    from capsnet.model import CapsNet
    grid = script_module('experiments/grid.py')
    small = dict(n_classes=3, in_size=20)
    assert grid.routing_path(CapsNet(**small)) == 'kernel DynamicRouting'
    assert grid.routing_path(CapsNet(router='uniform', **small)) == \
        'kernel Squash + 2 Chainer functions'      # a squashed mean
    plain = grid.routing_path(CapsNet(fused=False, **small))
    assert plain.endswith(' Chainer functions') and 'kernel' not in plain


def test_a_cell_runs_once_and_its_result_is_kept(tmp_path):
    args = ['routers', '--rows', 'uniform', '--epochs', '1', '--seeds', '0',
            '--train-size', '32', '-b', '16', '--val-size', '50',
            '--test-size', '20', *DATA, '--out', str(tmp_path)]
    first = run('experiments/grid.py', *args)
    assert 'uniform seed 0:' in first.stdout
    result_path = tmp_path / 'results' / 'uniform-seed0.json'
    result = json.loads(result_path.read_text())
    assert result['row'] == 'uniform' and result['seed'] == 0
    assert 0 <= result['error_percent'] <= 100
    assert 0 <= result['affine_accuracy_percent'] <= 100
    assert result['parameters'] > 6_000_000
    assert [epoch for epoch, _ in result['validation']] == [1]
    assert len(result['epoch_seconds']) == 1
    assert result['epoch_seconds'][0] > 0
    assert result['routing_path'] == 'kernel Squash + 2 Chainer functions'
    assert result['flags'][result['flags'].index('--data-dir') + 1] == 'DIR'
    folder = tmp_path / 'runs' / 'uniform' / 'seed0'
    assert not [n for n in os.listdir(folder) if n.startswith('snapshot')]
    assert (tmp_path / 'validation.png').stat().st_size > 0
    assert '| `uniform` |' in (tmp_path / 'routers.md').read_text()

    # done once: its run folder can go, the result stands
    (folder / 'model.npz').unlink()
    before = result_path.read_text()
    again = run('experiments/grid.py', *args)
    assert 'uniform seed 0:' in again.stdout
    assert result_path.read_text() == before
    # --report runs no cell: attention has none yet
    (tmp_path / 'routers.md').unlink()
    report = run('experiments/grid.py', *args[:3], 'attention', *args[3:],
                 '--report')
    assert 'attention seed' not in report.stdout
    assert not (tmp_path / 'runs' / 'attention').exists()
    assert '| `uniform` |' in (tmp_path / 'routers.md').read_text()
