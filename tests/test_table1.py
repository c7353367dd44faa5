"""The Table 1 runner renders every row with mean and standard deviation
beside the paper's numbers (the runs themselves are tested in test_scripts)."""
import argparse
import importlib.util
import os

from conftest import ROOT


def load_runner():
    path = os.path.join(ROOT, 'experiments', 'table1.py')
    spec = importlib.util.spec_from_file_location('table1', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_markdown_table_has_every_row_with_mean_and_spread():
    table1 = load_runner()
    results = {key: [1.0, 2.0] for key, *_ in table1.ROWS}
    args = argparse.Namespace(epochs=1, batchsize=128, train_size=1000,
                              val_size=500, test_size=500, gpu=-1,
                              seeds=[0, 1])
    text = table1.markdown(results, args, 'python experiments/table1.py')
    rows = [line for line in text.splitlines() if line.startswith('| ')]
    assert len(rows) == 2 + len(table1.ROWS)
    assert all('1.50 ± 0.71 (n=2)' in row for row in rows[2:])
    for paper in ('0.39', '0.34 ± 0.032', '0.29 ± 0.011', '0.35 ± 0.036',
                  '0.25 ± 0.005'):
        assert any(row.endswith('| {} |'.format(paper)) for row in rows)
    assert text.startswith('Budget: 1 epoch(s), batch 128, 1000 training')
    assert 'Command: `python experiments/table1.py`' in text
