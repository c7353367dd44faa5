"""The run's extensions: Adam's step size follows the official code's
formula, step by step and across a resume; snapshots come by time; the
weights' moving average follows them by hand."""
import numpy
import pytest

import chainer
import chainer.links as L
from chainer import training

import capsnet.extensions as capsnet_extensions


def test_step_size_is_the_official_formula():
    # TensorFlow's exponential_decay(0.001, step, 2000, 0.96), continuous
    assert capsnet_extensions.step_size(0, 1e-3, 0.96, 2000) == 1e-3
    assert capsnet_extensions.step_size(2000, 1e-3, 0.96, 2000) == pytest.approx(9.6e-4)
    assert capsnet_extensions.step_size(1000, 1e-3, 0.96, 2000) == pytest.approx(
        1e-3 * 0.96 ** 0.5)
    assert capsnet_extensions.step_size(6000, 1e-3, 0.96, 2000) == pytest.approx(
        1e-3 * 0.884736)
    # ... under tf.maximum(lr, 1e-6)
    assert capsnet_extensions.step_size(20, 1e-3, 0.5, 1, 1e-6) == 1e-6


def run(iterations, snapshot=None, resume=None, start=0, warmup=None):
    """A tiny Trainer with ContinuousDecay; the alpha of each update (with
    ``warmup``, a Warmup too, and each update's (alpha, eta))."""
    numpy.random.seed(0)
    model = L.Classifier(L.Linear(3, 2))
    optimizer = chainer.optimizers.Adam(alpha=1e-3)
    optimizer.setup(model)
    seen = []

    def loss(x, t):
        # what this update will use
        seen.append((optimizer.alpha, optimizer.eta) if warmup
                    else optimizer.alpha)
        return model(x, t)
    data = chainer.datasets.TupleDataset(
        numpy.ones((8, 3), numpy.float32), numpy.zeros(8, numpy.int32))
    updater = training.StandardUpdater(
        chainer.iterators.SerialIterator(data, 4), optimizer, loss_func=loss)
    trainer = training.Trainer(updater, (iterations, 'iteration'))
    trainer.extend(capsnet_extensions.ContinuousDecay(1e-3, 0.5, 3, start=start))
    if warmup:
        trainer.extend(capsnet_extensions.Warmup(warmup))
    if resume:
        chainer.serializers.load_npz(resume, trainer)
    trainer.run()
    if snapshot:
        chainer.serializers.save_npz(snapshot, trainer)
    return seen


def test_every_update_uses_the_step_size_of_its_iteration(tmp_path):
    want = [1e-3 * 0.5 ** (k / 3) for k in range(7)]
    numpy.testing.assert_allclose(run(7), want, rtol=1e-12)
    snapshot = str(tmp_path / 'snapshot')
    run(4, snapshot=snapshot)
    numpy.testing.assert_allclose(run(7, resume=snapshot), want[4:],
                                  rtol=1e-12)


def test_a_warmup_grows_the_steps_and_keeps_the_schedule(tmp_path):
    # eta rises over 4 updates; alpha keeps ContinuousDecay's schedule
    want = [(1e-3 * 0.5 ** (k / 3), min(1, (k + 1) / 4)) for k in range(6)]
    numpy.testing.assert_allclose(run(6, warmup=4), want, rtol=1e-12)
    snapshot = str(tmp_path / 'snapshot')
    run(2, snapshot=snapshot, warmup=4)
    numpy.testing.assert_allclose(run(6, resume=snapshot, warmup=4),
                                  want[2:], rtol=1e-12)


def test_a_run_from_init_goes_on_from_the_models_place(tmp_path):
    # train.py --init of a model trained 5 updates: its updates are 5, 6, ...
    want = [1e-3 * 0.5 ** (k / 3) for k in range(5, 12)]
    numpy.testing.assert_allclose(run(7, start=5), want, rtol=1e-12)


class _NoStop:
    def requested(self, trainer):
        return False


class _OneProcess:
    def max(self, value):
        return value


def writes_of(steps, epoch_size, seconds_a_step, **when):
    """The iterations at which a WriteTrigger fires in a tiny Trainer whose
    every update takes ``seconds_a_step`` on a fake clock."""
    now = [0.0]
    model = L.Classifier(L.Linear(3, 2))
    optimizer = chainer.optimizers.SGD()
    optimizer.setup(model)

    def loss(x, t):
        now[0] += seconds_a_step
        return model(x, t)
    data = chainer.datasets.TupleDataset(
        numpy.ones((epoch_size, 3), numpy.float32),
        numpy.zeros(epoch_size, numpy.int32))
    updater = training.StandardUpdater(
        chainer.iterators.SerialIterator(data, 1), optimizer, loss_func=loss)
    trainer = training.Trainer(updater, (steps, 'iteration'))
    writes = capsnet_extensions.WriteTrigger(_NoStop(), _OneProcess(),
                                   clock=lambda: now[0], **when)
    fired = []
    trainer.extend(lambda t: fired.append(t.updater.iteration),
                   trigger=writes, name='write')
    # a second reader in the same iteration gets the same answer
    seen = []
    trainer.extend(lambda t: seen.append(writes(t)), trigger=(1, 'iteration'),
                   name='again', priority=-1)
    trainer.run()
    assert [k for k, w in enumerate(seen, 1) if w] == fired
    return fired


def test_snapshots_come_by_time_and_at_every_epochs_end():
    # 70 s a step, 5 minutes: the clock starts as the first step ends, so
    # 5 steps (350 s) after it, then every 5; the epoch's end (20) writes
    # and starts the clock again
    assert writes_of(30, 20, 70.0) == [6, 11, 16, 20, 25, 30]
    assert writes_of(24, 20, 70.0, minutes=10) == [10, 19, 20]
    # fast steps (a GPU's 14 ms): only the epochs' ends
    assert writes_of(40, 20, 0.014) == [20, 40]


def test_snapshot_interval_in_iterations_stays():
    assert writes_of(12, 10, 70.0, iterations=4) == [4, 8, 10, 12]
    # and it needs no clock
    assert writes_of(12, 10, float('nan'), iterations=4) == [4, 8, 10, 12]


def test_weight_average_follows_the_weights_by_hand():
    """Weights 1, 2, 3, 4 after four updates, from 0 with decay 0.27: the
    decay is min(0.27, (1 + n) / (10 + n)) after n updates: 1/10, 2/11,
    3/12, then 0.27."""
    link = chainer.Link()
    with link.init_scope():
        link.w = chainer.Parameter(numpy.zeros(2, numpy.float32))
    average = link.copy(mode='copy')
    extension = capsnet_extensions.WeightAverage(link, average, 0.27)
    # 0.9 * 1; 2/11 * 0.9 + 9/11 * 2; 0.25 * 1.8 + 0.75 * 3; 0.27 * 2.7 +
    # 0.73 * 4
    for weight, want in zip([1, 2, 3, 4], [0.9, 1.8, 2.7, 3.649]):
        link.w.array[:] = weight
        extension(None)
        numpy.testing.assert_allclose(average.w.array, [want] * 2, rtol=1e-6)
    # a snapshot keeps it; one without it starts it at the weights
    saved = chainer.serializers.DictionarySerializer()
    extension.serialize(saved)
    again = capsnet_extensions.WeightAverage(link, link.copy(mode='copy'),
                                             0.27)
    again.serialize(chainer.serializers.NpzDeserializer(saved.target))
    assert again.n == 4 and again.average.w.array[0] == pytest.approx(3.649)
    fresh = capsnet_extensions.WeightAverage(link, link.copy(mode='copy'),
                                             0.27)
    fresh.average.w.array[:] = -1
    fresh.serialize(chainer.serializers.NpzDeserializer({}))
    assert fresh.n == 0 and list(fresh.average.w.array) == [4.0, 4.0]
