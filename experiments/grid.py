#!/usr/bin/env python
"""Train and evaluate a grid of train.py flags: every row, once per seed.

    python experiments/grid.py table1 --epochs 50 --seeds 0 1 2 -g 0
    python experiments/grid.py routers --epochs 5 --seeds 0 1 \\
        --data-dir DIR --figure docs/routing.png
    python experiments/grid.py table1 --epochs 1 --seeds 0 1 \\
        --train-size 1000 --val-size 500 --test-size 500   # tiny
    python experiments/grid.py table1 -g 0 --communicator pure_nccl \\
        --mpiexec "mpiexec -n 8 -f hostfile"        # each run on 8 GPUs

A grid (GRIDS below) is rows of train.py flags; every row gets the same
budget (epochs, batch, schedule, data). Each cell, a row and a seed, trains
with train.py into OUT/runs/ROW/seedK (not in git); a cell that was cut off
resumes from its newest snapshot when the command runs again. The model
that validation picked is evaluated once on the test set with analyze.py
--evaluate (and --affine where the grid asks), and what the table needs
goes to OUT/results/ROW-seedK.json: test error, parameters, each epoch's
seconds, whether the routing ran a fast kernel, the validation curve. Those
small files are committed: a cell that has one is done and never runs
again, wherever its run folder went. OUT/GRID.md (the table) and the
validation curves (--figure) are remade from every finished cell; --report
remakes them alone, for a grid still running.
"""
import collections
import datetime
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
from capsnet import model_file  # noqa: E402
from capsnet.errors import UserError  # noqa: E402

# key: names the cell's files; columns: its first cells in the table;
# paper: the paper's figure for it, where there is one
Row = collections.namedtuple('Row', 'key columns flags paper')
Grid = collections.namedtuple('Grid', 'header rows affine')

GRIDS = {
    # the paper's Table 1: MNIST test error, %
    'table1': Grid(('model', 'routing', 'reconstruction'), [
        Row('baseline', ('Baseline CNN', '-', '-'), ['--model', 'baseline'],
            '0.39'),
        Row('r1', ('CapsNet', '1', 'no'), ['--routing', '1',
                                           '--no-reconstruct'],
            '0.34 ± 0.032'),
        Row('r1-recon', ('CapsNet', '1', 'yes'), ['--routing', '1'],
            '0.29 ± 0.011'),
        Row('r3', ('CapsNet', '3', 'no'), ['--routing', '3',
                                           '--no-reconstruct'],
            '0.35 ± 0.036'),
        Row('r3-recon', ('CapsNet', '3', 'yes'), ['--routing', '3'],
            '0.25 ± 0.005'),
    ], affine=False),
    # the routers of capsnet/routing.py, the paper's CapsNet otherwise
    'routers': Grid(('router',), [
        Row('dynamic', ('`dynamic`, 3 iterations',),
            ['--router', 'dynamic'], None),
        Row('uniform', ('`uniform`',), ['--router', 'uniform'], None),
        Row('self-routing', ('`self-routing`',),
            ['--router', 'self-routing'], None),
        Row('attention', ('`attention`, 3 iterations',),
            ['--router', 'attention'], None),
        Row('dynamic-leaky', ('`dynamic --leaky-routing`',),
            ['--router', 'dynamic', '--leaky-routing'], None),
    ], affine=True),
}


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


def routing_path(model):
    """What the model's router runs, found by running one blank image:
    'kernel DynamicRouting' where it runs capsnet's fast kernels only,
    'kernel Squash + 2 Chainer functions' where it also composes Chainer's
    (the readable path); '-' for a model without a router."""
    import chainer
    router = getattr(model, 'router', None)
    if router is None:
        return '-'
    kernels, readable = [], []

    class Record(chainer.FunctionHook):
        def forward_preprocess(self, function, in_data):
            function = getattr(function, '_function', function)  # old-style
            if type(function).__module__.startswith('capsnet.kernels'):
                kernels.append(type(function).__name__)
            else:
                readable.append(type(function).__name__)

    forward = router.forward

    def recorded(*args):
        with Record():
            return forward(*args)

    side = model.options['in_size']
    router.forward = recorded           # this instance only
    try:
        with chainer.using_config('train', False), \
                chainer.no_backprop_mode():
            model.capsules(model.xp.zeros(
                (1, model.options['in_channels'], side, side), 'f'))
    finally:
        del router.forward
    parts = (['kernel ' + ', '.join(sorted(set(kernels)))] if kernels
             else []) + (['{} Chainer functions'.format(len(readable))]
                         if readable else [])
    return ' + '.join(parts)


def cell_result(folder, evaluation, affine):
    """What the table needs of a finished run: its test error, affine
    accuracy, parameters, seconds per epoch, routing path and validation
    curve."""
    with open(os.path.join(folder, 'log')) as f:
        log = json.load(f)
    validated = [entry for entry in log
                 if 'validation/main/accuracy' in entry]
    model = model_file.load(model_file.path_for(folder))
    # each epoch's wall time (Chainer's elapsed_time, which a pause swells,
    # and a resume too: that epoch redoes the work since its snapshot)
    ends = [0.0] + [entry['elapsed_time'] for entry in log]
    epoch_seconds = [round(b - a, 1) for a, b in zip(ends, ends[1:])]
    return {
        'error_percent': evaluation['error_percent'],
        'affine_accuracy_percent': (round(100 * affine['accuracy'], 4)
                                    if affine else None),
        'parameters': int(sum(p.size for p in model.params())),
        'epoch_seconds': epoch_seconds,
        'routing_path': routing_path(model),
        'validation': [[e['epoch'], e['validation/main/accuracy']]
                       for e in validated],
        'blas_threads': os.environ.get('OPENBLAS_NUM_THREADS'),
        'machine': '{}, {} cores'.format(platform.machine(),
                                         os.cpu_count()),
        'finished': datetime.date.today().isoformat(),
    }


def result_path(out, row, seed):
    return os.path.join(out, 'results', '{}-seed{}.json'.format(row.key,
                                                               seed))


def run_cell(out, row, seed, grid, args):
    """Train and evaluate one cell unless it is done; its result."""
    path = result_path(out, row, seed)
    if os.path.exists(path):
        try:
            with open(path) as f:
                result = json.load(f)
            float(result['error_percent'])      # what makes it a result
            return result
        except (ValueError, KeyError, TypeError) as e:
            raise UserError('{} is damaged ({}); delete it to run that cell '
                            'again'.format(path, e))
    folder = os.path.join(out, 'runs', row.key, 'seed{}'.format(seed))
    data = ['--dataset', args.dataset] + (
        ['--data-dir', args.data_dir] if args.data_dir else []) + (
        ['--test-size', args.test_size] if args.test_size else [])
    train = ['-e', args.epochs, '-b', args.batchsize, '--val-size',
             args.val_size, '-g', args.gpu, '--seed', seed] + (
        ['--train-size', args.train_size] if args.train_size else []) + (
        ['--communicator', args.communicator] if args.communicator else [])
    script('train.py', '--save', folder, *row.flags, *train, *data,
           launcher=shlex.split(args.mpiexec) if args.communicator else ())

    def evaluate(*more):
        line = script('analyze.py', '--load', folder, '--evaluate', '-g',
                      args.gpu, *data, *more).strip().splitlines()[-1]
        return json.loads(line)

    result = cell_result(folder, evaluate(),
                         evaluate('--affine') if grid.affine else None)
    # the flags without this machine's data folder, which a reader's is not
    flags = [str(f) for f in row.flags + train + data]
    if args.data_dir:
        flags[flags.index('--data-dir') + 1] = 'DIR'
    result.update(row=row.key, seed=seed, flags=flags)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    files.write_json(path, result)
    for name in os.listdir(folder):     # resuming is over
        if name.startswith('snapshot_iter_'):
            os.remove(os.path.join(folder, name))
    return result


def spread(values, digits=2):
    """'mean ± sd (n=K)' of ``values``; without ± for one."""
    text = '{:.{}f}'.format(statistics.mean(values), digits)
    if len(values) > 1:
        text += ' ± {:.{}f}'.format(statistics.stdev(values), digits)
    return '{} (n={})'.format(text, len(values))


def markdown(grid, results, args, command):
    """The table of every row with a finished cell: mean and spread over
    its seeds; the median of its epochs' wall times."""
    paper = any(row.paper for row in grid.rows)
    header = list(grid.header) + ['test error %'] + (
        ['affine accuracy %'] if grid.affine else []) + [
        'parameters', 's / epoch (median)', 'routing ran'] + (
            ['paper'] if paper else [])
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + ' --- |' * len(header)]
    for row in grid.rows:
        cells = results.get(row.key)
        if not cells:
            continue
        line = list(row.columns) + [spread([c['error_percent']
                                            for c in cells])]
        if grid.affine:
            line.append(spread([c['affine_accuracy_percent']
                                for c in cells]))
        line += ['{:,}'.format(cells[0]['parameters']),
                 '{:.0f}'.format(statistics.median(
                     s for c in cells for s in c['epoch_seconds'])),
                 cells[0]['routing_path']]
        if paper:
            line.append(row.paper)
        lines.append('| ' + ' | '.join(map(str, line)) + ' |')
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


def plot(results, path):
    """Validation error by epoch of every finished cell: a colour per row,
    a line style per seed."""
    import matplotlib
    import matplotlib.ticker
    matplotlib.use('Agg')
    from matplotlib import pyplot
    figure, axes = pyplot.subplots(figsize=(7, 4.5))
    styles = ['-', '--', ':', '-.']
    for index, (key, cells) in enumerate(results.items()):
        for k, cell in enumerate(cells):
            if not cell['validation']:         # --val-size 0
                continue
            epochs, accuracy = zip(*cell['validation'])
            axes.plot(epochs, [100 * (1 - a) for a in accuracy],
                      styles[k % len(styles)], color='C{}'.format(index),
                      label='{} seed {}'.format(key, cell['seed']))
    axes.set_xlabel('epoch')
    axes.set_ylabel('validation error %')
    axes.set_yscale('log')
    plain = matplotlib.ticker.FormatStrFormatter('%.2g')
    axes.yaxis.set_major_formatter(plain)
    axes.yaxis.set_minor_formatter(plain)
    axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes.grid(True, which='both', alpha=0.3)
    if axes.lines:
        axes.legend(fontsize='small', ncol=2)
    figure.tight_layout()
    files.write_png(path, figure, dpi=100)


def build_parser():
    p = cli.ArgumentParser(description=__doc__)
    p.add_argument('grid', choices=sorted(GRIDS))
    p.add_argument('--out', help='default: experiments/GRID')
    p.add_argument('--figure', help='the validation curves (default: '
                   'OUT/validation.png)')
    p.add_argument('--epochs', type=cli.EPOCHS, default=50)
    p.add_argument('--seeds', type=cli.SEED, nargs='+', default=[0, 1, 2])
    p.add_argument('-b', '--batchsize', type=cli.BATCH, default=128)
    p.add_argument('-g', '--gpu', type=cli.GPU, default=-1)
    p.add_argument('--train-size', type=cli.integer(1), default=None)
    p.add_argument('--val-size', type=cli.integer(0), default=5000)
    p.add_argument('--test-size', type=cli.integer(1), default=None)
    p.add_argument('--dataset', default='mnist')
    p.add_argument('--data-dir', default=None)
    p.add_argument('--rows', nargs='+', metavar='ROW',
                   help='only these rows of the grid')
    p.add_argument('--report', action='store_true',
                   help='run no cell: remake the table and the curves from '
                   'the cells finished so far')
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
    grid = GRIDS[args.grid]
    keys = [row.key for row in grid.rows]
    unknown = sorted(set(args.rows or ()) - set(keys))
    if unknown:
        raise UserError('--rows {}: grid {} has the rows {}'.format(
            ' '.join(unknown), args.grid, ', '.join(keys)))
    out = args.out or os.path.join(ROOT, 'experiments', args.grid)
    cli.writable_dir(out)
    command = 'python experiments/grid.py ' + ' '.join(   # what makes it
        shlex.quote(a) for a in argv if a != '--report')

    # seed by seed, so that a grid cut off early has every row once
    rows = [row for row in grid.rows if not args.rows or row.key in args.rows]
    results = {row.key: [] for row in rows}
    for seed in args.seeds:
        for row in rows:
            if args.report and not os.path.exists(result_path(out, row,
                                                              seed)):
                continue
            result = run_cell(out, row, seed, grid, args)
            results[row.key].append(result)
            print('{} seed {}: {:.2f}% test error'.format(
                row.key, seed, result['error_percent']), flush=True)
    table = markdown(grid, results, args, command)
    files.atomic_write(os.path.join(out, args.grid + '.md'),
                       lambda f: f.write(table.encode()))
    plot(results, args.figure or os.path.join(out, 'validation.png'))
    print(table)


if __name__ == '__main__':
    sys.exit(cli.run(main))
