#!/usr/bin/env python
"""Rerun the paper's Table 1 (MNIST test error, %) at any budget.

    python experiments/table1.py --epochs 50 --seeds 0 1 2 -g 0       # full
    python experiments/table1.py --epochs 1 --seeds 0 1 --train-size 1000 \\
        --val-size 500 --test-size 500 --data-dir ../shared/data/mnist  # tiny
    python experiments/table1.py -g 0 --communicator pure_nccl \\
        --mpiexec "mpiexec -n 8 -f hostfile"        # each run on 8 GPUs

Each row is trained with train.py once per seed into OUT/runs/<row>/seed<k>
(its log, options and best-by-validation model; the snapshots are deleted
once a run is done), evaluated on the test set with analyze.py --evaluate,
and summarised in OUT/results.json and OUT/table1.md. Finished runs are
skipped, so the command can be interrupted and run again.
"""
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from capsnet import cli  # noqa: E402
from capsnet import distributed  # noqa: E402
from capsnet import files  # noqa: E402
from capsnet.errors import UserError  # noqa: E402

# (key, model, routing, reconstruction, train.py flags, the paper's error)
ROWS = [
    ('baseline', 'Baseline CNN', '-', '-', ['--model', 'baseline'], '0.39'),
    ('r1', 'CapsNet', 1, 'no', ['--routing', '1', '--no-reconstruct'],
     '0.34 ± 0.032'),
    ('r1-recon', 'CapsNet', 1, 'yes', ['--routing', '1'], '0.29 ± 0.011'),
    ('r3', 'CapsNet', 3, 'no', ['--routing', '3', '--no-reconstruct'],
     '0.35 ± 0.036'),
    ('r3-recon', 'CapsNet', 3, 'yes', ['--routing', '3'], '0.25 ± 0.005'),
]


def script(name, *args, launcher=()):
    """Run one of the project's scripts (behind ``launcher``, a command
    such as mpiexec -n 4); its stdout."""
    command = [*launcher, sys.executable, os.path.join(ROOT, name),
               *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        # the script's own one-line error, or the end of whatever it said
        lines = result.stderr.strip().splitlines() or ['exit status {}'.format(
            result.returncode)]
        raise UserError('{}: {}'.format(name, lines[-1].replace(
            'error: ', '', 1)))
    return result.stdout


def run_one(folder, flags, args):
    """Train and evaluate one run unless done; its test error in %."""
    result_path = os.path.join(folder, 'result.json')
    if os.path.exists(result_path):
        try:
            with open(result_path) as f:
                return json.load(f)['error_percent']
        except (ValueError, KeyError, TypeError) as e:
            raise UserError('{} is damaged ({}); delete it to run that row '
                            'again'.format(result_path, e))
    data = ['--dataset', args.dataset] + (
        ['--data-dir', args.data_dir] if args.data_dir else []) + (
        ['--test-size', args.test_size] if args.test_size else [])
    train = ['-e', args.epochs, '-b', args.batchsize, '--val-size',
             args.val_size, '-g', args.gpu] + (
        ['--train-size', args.train_size] if args.train_size else []) + (
        ['--communicator', args.communicator] if args.communicator else [])
    script('train.py', '--save', folder, *flags, *train, *data,
           launcher=shlex.split(args.mpiexec) if args.communicator else ())
    line = script('analyze.py', '--load', folder, '--evaluate', '-g',
                  args.gpu, *data).strip().splitlines()[-1]
    for name in os.listdir(folder):
        if name.startswith('snapshot_iter_'):
            os.remove(os.path.join(folder, name))
    files.atomic_write(result_path,
                            lambda f: f.write((line + '\n').encode()))
    return json.loads(line)['error_percent']


def markdown(results, args, command):
    lines = [
        '| model | routing | reconstruction | test error % (this run) '
        '| paper |', '| --- | --- | --- | --- | --- |']
    for key, model, routing, recon, _, paper in ROWS:
        errors = results[key]
        spread = (' ± {:.2f}'.format(statistics.stdev(errors))
                  if len(errors) > 1 else '')
        lines.append('| {} | {} | {} | {:.2f}{} (n={}) | {} |'.format(
            model, routing, recon, statistics.mean(errors), spread,
            len(errors), paper))
    budget = ('{} epoch(s), batch {}, {} training images, {} validation, {} '
              'test; {}; seeds {}'.format(
                  args.epochs, args.batchsize, args.train_size or 'all',
                  args.val_size, args.test_size or 'all 10,000',
                  'GPU {}'.format(args.gpu) if args.gpu >= 0 else
                  'CPU ({}, {} cores)'.format(platform.machine(),
                                              os.cpu_count()),
                  ', '.join(map(str, args.seeds))))
    return '\n'.join(['Budget: ' + budget, '', 'Command: `{}`'.format(
        command), ''] + lines) + '\n'


def build_parser():
    p = cli.ArgumentParser(description=__doc__)
    p.add_argument('--out', default=os.path.join(ROOT, 'experiments',
                                                 'table1'))
    p.add_argument('--epochs', type=cli.EPOCHS, default=50)
    p.add_argument('--seeds', type=cli.SEED, nargs='+', default=[0, 1, 2])
    p.add_argument('-b', '--batchsize', type=cli.BATCH, default=128)
    p.add_argument('-g', '--gpu', type=cli.GPU, default=-1)
    p.add_argument('--train-size', type=cli.integer(1), default=None)
    p.add_argument('--val-size', type=cli.integer(0), default=5000)
    p.add_argument('--test-size', type=cli.integer(1), default=None)
    p.add_argument('--dataset', default='mnist')
    p.add_argument('--data-dir', default=None)
    p.add_argument('--rows', nargs='+', default=[r[0] for r in ROWS],
                   choices=[r[0] for r in ROWS])
    p.add_argument('--communicator', default=None,
                   choices=distributed.COMMUNICATORS,
                   help='train each run data-parallel with ChainerMN, '
                   'launched by --mpiexec (-b is then per process)')
    p.add_argument('--mpiexec', default='{} -n 2'.format(os.path.join(
        os.path.dirname(sys.executable), 'mpiexec')),
                   help='how to start the processes of one run (default: '
                   'mpiexec -n 2 beside this Python)')
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    cli.writable_dir(args.out)
    command = 'python experiments/table1.py ' + ' '.join(
        shlex.quote(a) for a in argv)

    results = {}
    for key, _, _, _, flags, _ in ROWS:
        if key not in args.rows:
            continue
        results[key] = []
        for seed in args.seeds:
            folder = os.path.join(args.out, 'runs', key, 'seed{}'.format(seed))
            error = run_one(folder, flags + ['--seed', seed], args)
            results[key].append(error)
            print('{} seed {}: {:.2f}% test error'.format(key, seed, error),
                  flush=True)
    files.write_json(os.path.join(args.out, 'results.json'),
                          {'command': command, 'test_error_percent': results})
    if set(results) == {r[0] for r in ROWS}:
        table = markdown(results, args, command)
        files.atomic_write(os.path.join(args.out, 'table1.md'),
                                lambda f: f.write(table.encode()))
        print(table)


if __name__ == '__main__':
    sys.exit(cli.run(main))
