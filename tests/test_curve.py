"""A long run's curve keeps each run's epochs in a committed record, in
the order the runs ran, epochs counted from the first run."""
import json

from conftest import run


def run_folder(path, init_epoch, init_iteration, accuracies):
    path.mkdir()
    path.joinpath('log').write_text(json.dumps([
        {'epoch': k + 1, 'iteration': 10 * (k + 1),
         'validation/main/accuracy': a, 'main/accuracy': a - 0.01}
        for k, a in enumerate(accuracies)]))
    path.joinpath('options.json').write_text(json.dumps({'train': {
        'init_epoch': init_epoch, 'init_iteration': init_iteration,
        'lr': 1e-3, 'restart_schedule': False}}))
    return str(path)


def test_runs_are_kept_in_the_order_they_ran(tmp_path):
    record, figure = tmp_path / 'curve.json', tmp_path / 'curve.png'
    later = run_folder(tmp_path / 'b', 2, 20, [0.7])
    first = run_folder(tmp_path / 'a', 0, 0, [0.5, 0.6, 0.55])
    run('experiments/curve.py', str(record), '--add', 'zz-later', later)
    out = run('experiments/curve.py', str(record), '--add', 'first', first,
              '--figure', str(figure)).stdout
    assert out.splitlines() == [
        'first: epochs 1 to 3, last validation 55.00%',
        'zz-later: epochs 3 to 3, last validation 70.00%']
    runs = json.loads(record.read_text())
    assert runs['zz-later']['init_epoch'] == 2
    assert runs['first']['epochs'][1] == [2, 20, 0.6, 0.59]
    assert figure.stat().st_size > 0
    # renewing a run replaces it
    run_folder(tmp_path / 'c', 2, 20, [0.7, 0.8])
    run('experiments/curve.py', str(record), '--add', 'zz-later',
        str(tmp_path / 'c'))
    assert len(json.loads(record.read_text())['zz-later']['epochs']) == 2


def test_a_damaged_record_or_a_folder_without_a_log_is_refused(tmp_path):
    record = tmp_path / 'curve.json'
    record.write_text('{')
    result = run('experiments/curve.py', str(record), check=False)
    assert result.returncode != 0 and 'is damaged' in result.stderr
    record.unlink()
    (tmp_path / 'empty').mkdir()
    result = run('experiments/curve.py', str(record), '--add', 'x',
                 str(tmp_path / 'empty'), check=False)
    assert result.returncode != 0 and 'has no log' in result.stderr
