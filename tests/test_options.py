"""Each architecture's options, declared once: the model, train.py's flags
and the model-file checks all read the same declaration."""
import pytest

from capsnet import options
from capsnet.model import ARCHITECTURES
from capsnet.model import BaselineCNN
from capsnet.model import CapsNet
from conftest import script_module


def test_the_model_takes_the_declared_defaults_and_nothing_else():
    assert CapsNet().options == {o.name: o.default for o in CapsNet.OPTIONS}
    with pytest.raises(TypeError, match='unknown option.*routings'):
        CapsNet(routings=3)
    with pytest.raises(ValueError, match='in_size = 12: it must be an '
                       r'integer in \[17, 64\]'):
        CapsNet(in_size=12)
    with pytest.raises(ValueError, match='router'):
        CapsNet(router='nope')


def test_train_flags_come_from_the_declarations():
    parser = script_module('train.py').build_parser()
    args = parser.parse_args(['--routing', '2', '--baseline-dropout', 'both',
                              '--no-reconstruct', '--leaky-routing'])
    for architecture in ARCHITECTURES.values():
        flagged = options.from_flags(architecture, args)
        assert set(flagged) == {o.name for o in architecture.OPTIONS
                                if o.flag}
    assert options.from_flags(CapsNet, args)['routing'] == 2
    assert options.from_flags(CapsNet, args)['reconstruct'] is False
    assert options.from_flags(BaselineCNN, args)['dropout_after'] == 'both'
    # the ranges are the declared ones
    with pytest.raises(SystemExit):
        parser.parse_args(['--routing', '101'])


def test_files_made_before_an_option_read_as_they_were_made():
    assert CapsNet.IMPLICIT_OPTIONS == dict(
        router='dynamic', capsule_bias=False, leaky_routing=False,
        in_channels=1, class_names=None, subtract_ground=False)
    assert BaselineCNN.IMPLICIT_OPTIONS == dict(
        dropout_after='both', in_channels=1, class_names=None,
        subtract_ground=False)


def test_check_names_the_first_wrong_option():
    assert options.check(CapsNet.OPTIONS, dict(routing=3)) is None
    assert options.check(CapsNet.OPTIONS, dict(routing=0.5))[0] == 'routing'
    assert options.check(CapsNet.OPTIONS, dict(dropout=0.5),
                         'a capsnet model') == (
        'dropout', 0.5, 'is not an option of a capsnet model')
    assert options.check(CapsNet.OPTIONS, dict(
        n_classes=3, class_names=['a', 'b']))[0] == 'class_names'
