"""Every numeric flag of every script is checked when it is parsed.

The walk finds the flags in the scripts' own parsers, so a new flag is
covered without editing this file: it must take a ``cli.Range`` type, its
out-of-range values must end in one line, ``error: --flag ...``, with exit
status 1, and each edge value it accepts must make a normal run or a
one-line refusal. A value runs only where it takes effect: not where it is
the default, and with the flag that switches it on (ACTIVATED_BY). The runs
are the scripts' main() in this process: what is tested is the command's
work, not the process around it (test_scripts.py has that).
"""
import argparse
import os

import pytest

from capsnet import cli
from conftest import DATA
from conftest import ROOT
from conftest import TINY
from conftest import run_here
from conftest import script_module

SCRIPTS = ['train.py', 'analyze.py', 'experiments/grid.py',
           'experiments/shapes.py',
           'bench/benchmark.py', 'bench/convolution.py']
# zero, negative, not a number, infinite, huge (as a float and as an int);
# given as --flag=VALUE, since argparse reads a lone '-inf' as a flag
EDGES = ['0', '-1', 'nan', 'inf', '-inf', '1e30', '1' + '0' * 30]
# flags that do nothing without another one
ACTIVATED_BY = {
    ('analyze.py', flag): ['--affine'] for flag in (
        '--affine-rotation', '--affine-scale', '--affine-shear',
        '--affine-translation', '--affine-seed')}
# ... or whose other flag cannot run here: the reason says where it is tested
NOT_RUN = {('analyze.py', '--port'): '--serve serves until stopped: '
           'test_explorer.py serves on --port 0'}


def numeric_flags(parser):
    """The long name of every flag that takes a value through a type."""
    return [action.option_strings[-1] for action in parser._actions
            if action.type is not None]


def base_args(script, model, folder):
    """A small, quick, normal run of each script."""
    return {
        'train.py': [*TINY, '-e', '1', '--save', folder],
        'analyze.py': ['--load', model, *DATA, '--test-size', '50',
                       '--evaluate'],
        'experiments/grid.py': ['table1', '--epochs', '1', '--seeds', '3',
                                '--rows', 'r1', '--train-size', '16', '-b',
                                '16', '--val-size', '50', '--test-size', '20',
                                *DATA, '--out', folder],
        'experiments/shapes.py': [os.path.join(folder + '.npz'), '-n',
                                  '4'],
        'bench/benchmark.py': ['--batch', '2', '--steps', '1', '--warmup',
                               '1'],
        'bench/convolution.py': ['--batches', '1', '--steps', '1'],
    }[script]


def test_range_accepts_its_bounds_and_refuses_the_rest():
    half_open = cli.number(0, 1, low_open=True)
    assert half_open('1') == 1.0 and half_open('1e-9') == 1e-9
    for text in ('0', '1.0001', 'nan', 'inf', 'one'):
        with pytest.raises(argparse.ArgumentTypeError,
                           match=r'must be a number in \(0, 1\], got '):
            half_open(text)
    at_least_one = cli.integer(1)
    assert at_least_one('7') == 7
    for text in ('0', '1.5', '1e3'):
        with pytest.raises(argparse.ArgumentTypeError,
                           match='must be an integer >= 1'):
            at_least_one(text)


@pytest.mark.parametrize('script', SCRIPTS)
def test_every_flag_of_every_script_is_checked(script, tmp_path, capsys):
    parser = script_module(script).build_parser()
    flags = numeric_flags(parser)
    assert flags, script
    untyped = [f for f in flags if not isinstance(
        parser._option_string_actions[f].type, cli.Range)]
    assert not untyped, 'numeric flags without a checked range: {}'.format(
        untyped)
    model = os.path.join(ROOT, 'saved_model')
    base = base_args(script, model, str(tmp_path / 'out'))
    default = vars(parser.parse_args(base))
    to_run = []
    for flag in flags:
        dest = parser._option_string_actions[flag].dest
        for value in EDGES:
            try:
                parsed = parser.parse_args(base + ['{}={}'.format(flag,
                                                                  value)])
            except SystemExit as e:
                lines = capsys.readouterr().err.strip().splitlines()
                assert e.code == 1 and len(lines) == 1, (flag, value, lines)
                assert lines[0].startswith('error: {} must be '.format(flag))
                assert 'got {}'.format(value) in lines[0]
            else:
                if getattr(parsed, dest) != default[dest] and \
                        (script, flag) not in NOT_RUN:
                    to_run.append((flag, value))
    for flag, value in to_run:
        folder = str(tmp_path / 'run{}{}'.format(flag, value[:8]))
        result = run_here(
            script, *base_args(script, model, folder),
            *ACTIVATED_BY.get((script, flag), ()),
            '{}={}'.format(flag, value), check=False)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 0 or (
            result.returncode == 1 and len(lines) == 1 and
            lines[0].startswith('error: ')), (flag, value,
                                              result.stderr[-2000:])


def test_the_tables_name_flags_that_exist():
    """A renamed flag cannot leave a stale entry that skips nothing."""
    for script, flag in list(ACTIVATED_BY) + list(NOT_RUN):
        assert flag in numeric_flags(script_module(script).build_parser())
