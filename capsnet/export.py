"""Ship a run: its best model, options and log, into a folder of their own.

    python -m capsnet.export runs/multimnist saved_model/multimnist --float16

The paths among the run's options (--save, --data-dir, --resume, --init) become
relative to the current folder, so that none of the training machine's
ships. --float16 stores the parameters in half precision, half the size
(loading casts them back to float32): measure the shipped model, not the run.
"""
import os
import sys

import numpy

from capsnet import model_file
from capsnet import run_folder
from capsnet import cli
from capsnet import files
from capsnet.errors import UserError


def shipped_options(options):
    """A run's options.json with its paths relative to the current folder."""
    train = dict(options.get('train', {}))
    for key in run_folder.PATH_OPTIONS:
        if train.get(key):
            train[key] = os.path.relpath(train[key])
    return dict(options, train=train)


def export(run, out, dtype=None):
    """Write ``run``'s model (in ``dtype``), options and log into ``out``."""
    model = model_file.load(model_file.path_for(run))
    advice = 'it is not a finished run folder of train.py'
    options = run_folder.read_json(run, 'options.json', advice)
    if options is None or not os.path.isfile(os.path.join(run, 'log')):
        raise UserError('{} has no options.json or no log; {}'.format(
            run, advice))
    model_file.save(os.path.join(out, model_file.NAME), model,
                          dtype)
    files.write_json(os.path.join(out, 'options.json'),
                          shipped_options(options))
    with open(os.path.join(run, 'log'), 'rb') as f:
        log = f.read()
    files.atomic_write(os.path.join(out, 'log'), lambda f: f.write(log))


def build_parser():
    p = cli.ArgumentParser(description=__doc__)
    p.add_argument('run', help='a save folder of train.py')
    p.add_argument('out', help='the folder to ship')
    p.add_argument('--float16', action='store_true',
                   help='store the parameters in half precision')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not os.path.isdir(args.run):
        raise UserError('{} is not a folder'.format(args.run))
    export(args.run, cli.writable_dir(args.out),
           numpy.float16 if args.float16 else None)


if __name__ == '__main__':
    sys.exit(cli.run(main))
