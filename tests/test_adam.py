"""capsnet's Adam takes the same steps as Chainer's."""
import numpy
import pytest

import chainer
import chainer.links as L

from capsnet import adam
from capsnet import parallel


def trained(optimizer, steps=5):
    """A Linear after ``steps`` updates on fixed data; its W."""
    numpy.random.seed(0)
    model = L.Linear(30, 20)
    optimizer.setup(model)
    rng = numpy.random.RandomState(1)
    for _ in range(steps):
        model.cleargrads()
        x = rng.randn(8, 30).astype(numpy.float32)
        chainer.functions.sum(model(x) ** 2).backward()
        optimizer.update()
    return model.W.array


@pytest.mark.parametrize('threads', [1, 3])
@pytest.mark.parametrize('options', [{}, {'alpha': 0.01, 'eps': 1e-4},
                                     {'amsgrad': True}])
def test_same_steps_as_chainers_adam(options, threads, monkeypatch):
    # W's 600 elements in up to 3 parts of 100 or more, in blocks of 64
    monkeypatch.setattr(parallel, 'THREADS', threads)
    monkeypatch.setattr(adam, 'SPLIT_FROM', 100)
    monkeypatch.setattr(adam, 'BLOCK', 64)
    want = trained(chainer.optimizers.Adam(**options))
    got = trained(adam.Adam(**options))
    assert not numpy.allclose(want, trained(chainer.optimizers.SGD(), 0))
    numpy.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
