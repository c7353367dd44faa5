"""The routers: the registry, hand-computed cases, numerical gradients, a
router from outside the package through the real commands (each router's
short run on the fixture is in test_learning.py)."""
import json

import numpy
import pytest

import chainer
from chainer import gradient_check

from capsnet import model_file
from capsnet import functions
from capsnet import routing
from capsnet.ops import Ops

from conftest import DATA
from conftest import TINY
from conftest import refuses
from conftest import run_here

N, J, I, D, K = 2, 3, 5, 4, 2
BUILT_IN = ['attention', 'dynamic', 'self-routing', 'uniform']


def rand(*shape, seed=0, dtype=numpy.float64):
    return numpy.random.RandomState(seed).uniform(-1, 1, shape).astype(dtype)


def rand32(*shape, seed=0):
    """Inputs for routers of float32 parameters, as models build them."""
    return rand(*shape, seed=seed, dtype=numpy.float32)


def router(name, **options):
    """A router of the small shapes, in float64 for the gradient checks."""
    with chainer.using_config('dtype', numpy.float64):
        made = routing.ROUTERS[name](n_in=I, n_out=J, dim=D, child_dim=K,
                                     ops=Ops(fast=False), **options)
    for param in made.params():       # away from the starting zeros
        param.array[...] += rand(*param.shape, seed=9) * 0.5
    return made


def test_the_four_routers_are_registered():
    assert set(BUILT_IN) <= set(routing.ROUTERS)
    assert routing.ROUTERS['dynamic'] is routing.Dynamic


@pytest.mark.parametrize('name, options', [
    ('dynamic', dict(routing=3)),
    ('dynamic', dict(routing=3, capsule_bias=True)),
    ('dynamic', dict(routing=2, leaky_routing=True)),
    ('uniform', {}),
    ('self-routing', {}),
    ('attention', dict(routing=3)),
])
def test_router_gradients(name, options):
    made = router(name, **options)
    gradient_check.check_backward(
        made, (rand(N, J, I, D, seed=1), rand(N, I, K, seed=2)),
        rand(N, J, D, seed=3), params=tuple(made.params()), no_grads=(
            False, name != 'self-routing'), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('name, options', [
    ('dynamic', dict(routing=1)),
    ('uniform', {}),
    ('attention', dict(routing=1)),
])
def test_one_pass_is_uniform_coupling(name, options):
    """r = 1: every child sends 1/J of itself, v = squash(mean over i x I/J)."""
    u_hat = rand32(N, J, I, D, seed=4)
    made = routing.ROUTERS[name](n_in=I, n_out=J, dim=D, child_dim=K,
                                 **options)
    v = made(u_hat, rand32(N, I, K)).array
    numpy.testing.assert_allclose(
        v, functions.squash(u_hat.sum(axis=2) / J).array, rtol=1e-6)
    numpy.testing.assert_allclose(made.couplings, 1 / J)


def test_leaky_routing_sends_part_to_none_of_the_above():
    # zero predictions: every logit stays 0, so each child gives 1/(J + 1)
    # to each digit and the rest to the extra logit
    made = routing.ROUTERS['dynamic'](n_out=J, dim=D, routing=3,
                                      leaky_routing=True)
    made(numpy.zeros((N, J, I, D)), None)
    numpy.testing.assert_allclose(made.couplings, 1 / (J + 1))
    # and it matches the plain routing's couplings when the extra logit
    # is far below the others
    u_hat = rand(N, J, I, D, seed=5) + 6
    made(u_hat, None)
    plain = functions.dynamic_routing(u_hat, 3)[1].array
    assert made.couplings.sum(axis=1).max() < 1
    numpy.testing.assert_allclose(made.couplings, plain, atol=1e-3)


def test_self_routing_starts_uniform_with_lengths_one_over_j():
    """Routing weights at zero: c = 1/J and each parent's activation, its
    length, is sum_i a_i / J / sum_i a_i = 1/J, whatever the votes."""
    made = routing.ROUTERS['self-routing'](n_in=I, n_out=J, child_dim=K)
    v = made(rand32(N, J, I, D, seed=6), rand32(N, I, K, seed=7)).array
    numpy.testing.assert_allclose(made.couplings, 1 / J)
    numpy.testing.assert_allclose(numpy.linalg.norm(v, axis=-1), 1 / J,
                                  rtol=1e-6)


def test_attention_couplings_follow_each_iterations_agreement():
    """Hand-computed, one child and two parents: after the uniform pass s_j
    = u_hat_j / 2; LN of it (gain 1, bias 0) and the scaled agreement give
    the softmax over the parents."""
    u_hat = numpy.array([[[[3, 1]], [[-1, 1]]]], numpy.float32)  # 1,2,1,2
    made = routing.ROUTERS['attention'](dim=2, routing=2)
    made(u_hat, None)
    # LN of (1.5, 0.5) is (1, -1); of (-0.5, 0.5) is (-1, 1) (eps aside)
    agreement = numpy.array([3 - 1, 1 + 1]) / numpy.sqrt(2)
    want = numpy.exp(agreement) / numpy.exp(agreement).sum()
    numpy.testing.assert_allclose(made.couplings[0, :, 0], want, rtol=1e-4)


def test_the_dynamic_router_is_the_same_on_its_fast_kernel():
    u_hat = rand32(N, J, I, D, seed=8)
    fast, plain = (routing.ROUTERS['dynamic'](
        n_out=J, dim=D, routing=3, capsule_bias=True, ops=Ops(fast=f))
        for f in (True, False))
    numpy.testing.assert_allclose(fast(u_hat, None).array,
                                  plain(u_hat, None).array, rtol=1e-5)


def test_a_router_from_outside_the_package_trains_and_evaluates(tmp_path):
    import mean_router          # registers 'mean', as a user's module would
    out = tmp_path / 'mean'
    run_here('train.py', *TINY, '-e', '1', '--save', str(out),
             '--router', 'mean')
    assert json.loads((out / 'options.json').read_text())['model'][
        'router'] == 'mean'
    model = model_file.load(str(out / 'model.npz'))
    assert isinstance(model.router, mean_router.Mean)
    report = json.loads(run_here('analyze.py', '--load', str(out), *DATA,
                                 '--test-size', '50', '--evaluate').stdout)
    assert report['n'] == 50
    # where it is not registered, the file is refused in one line naming it
    del routing.ROUTERS['mean']
    try:
        refuses("option router holds 'mean'; it names no router registered",
                'analyze.py', '--load', str(out), *DATA, '--evaluate')
        refuses("--router invalid choice: 'mean'", 'train.py', *TINY,
                '--save', str(tmp_path / 'again'), '--router', 'mean')
    finally:
        routing.ROUTERS['mean'] = mean_router.Mean


def test_plain_runs_the_readable_compositions(tmp_path, monkeypatch):
    """train.py --plain: an edit to capsnet/functions.py reaches the run."""
    calls = []
    readable = functions.dynamic_routing

    def edited(*args, **kwargs):
        calls.append(1)
        return readable(*args, **kwargs)
    monkeypatch.setattr(functions, 'dynamic_routing', edited)
    run_here('train.py', *TINY, '-e', '1', '--save', str(tmp_path / 'fast'))
    assert not calls
    run_here('train.py', *TINY, '-e', '1', '--save', str(tmp_path / 'plain'),
             '--plain')
    assert calls
