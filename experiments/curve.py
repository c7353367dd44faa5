#!/usr/bin/env python
"""The accuracy curve of a long run through its continuations (train.py
--init): one line per run, epochs counted from the first run's start.

    python experiments/curve.py experiments/multimnist/curve.json \\
        --add anneal runs/multimnist3 --figure docs/multimnist_accuracy.png

A run folder is ignored by git and its log goes with it, so the curve keeps
what it needs of each run's log in a small committed JSON file (RECORD):
--add NAME FOLDER takes in, or renews, the run NAME from its folder (its
log, and from its options.json the epochs and updates before it),
and the figure is drawn from the record alone.
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
from capsnet import cli  # noqa: E402
from capsnet import files  # noqa: E402
from capsnet import run_folder  # noqa: E402
from capsnet.errors import UserError  # noqa: E402

def run_record(folder):
    """What the curve needs of the run folder ``folder``: where it started
    (epochs and updates before it), and per epoch its validation and
    training accuracy."""
    advice = 'it is not a run folder of train.py'
    log = run_folder.read_json(folder, 'log', advice)
    options = run_folder.read_json(folder, 'options.json', advice)
    if not log or not options:
        raise UserError('{} has no log or no options.json; {}'.format(
            folder, advice))
    train = options.get('train', {})
    return {
        'init_epoch': train.get('init_epoch', 0),
        'init_iteration': train.get('init_iteration', 0),
        'epochs': [[entry['epoch'], entry['iteration'],
                    entry.get('validation/main/accuracy'),
                    entry.get('main/accuracy')] for entry in log],
    }


def plot(runs, path):
    """Validation (solid) and training (dotted) accuracy of every run
    against epochs in all, a colour per run."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot
    figure, axes = pyplot.subplots(figsize=(8, 4.5))
    for index, (name, run) in enumerate(runs.items()):
        epochs = [run['init_epoch'] + e[0] for e in run['epochs']]
        colour = 'C{}'.format(index)
        for column, style, what in ((2, '-', 'validation'),
                                    (3, ':', 'training')):
            axes.plot(epochs, [100 * e[column] for e in run['epochs']],
                      style, color=colour, marker='.',
                      label='{}: {}'.format(name, what))
    axes.set_xlabel('epoch, counted from the first run')
    axes.set_ylabel('accuracy %')
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize='small')
    figure.tight_layout()
    files.write_png(path, figure, dpi=100)


def build_parser():
    p = cli.ArgumentParser(description=__doc__)
    p.add_argument('record', help='the JSON file of the runs so far')
    p.add_argument('--add', nargs=2, metavar=('NAME', 'FOLDER'),
                   help='take in (or renew) the run NAME from its folder')
    p.add_argument('--figure', help='draw the curve into this PNG')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    runs = {}
    if os.path.exists(args.record):
        try:
            with open(args.record) as f:
                runs = json.load(f)
        except ValueError as e:
            raise UserError('{} is damaged ({})'.format(args.record, e))
    if args.add:
        name, folder = args.add
        runs[name] = run_record(folder)
        files.write_json(args.record, runs)
    # in the order they ran
    runs = dict(sorted(runs.items(), key=lambda item: (
        item[1]['init_iteration'], item[0])))
    if args.figure:
        plot(runs, args.figure)
    for name, run in runs.items():
        last = run['epochs'][-1]
        print('{}: epochs {} to {}, last validation {:.2%}'.format(
            name, run['init_epoch'] + 1, run['init_epoch'] + last[0],
            last[2] or 0))


if __name__ == '__main__':
    sys.exit(cli.run(main))
