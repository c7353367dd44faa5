"""Every Trainer extension of a run, and the triggers they share.

- The schedule: Adam's step size (``ContinuousDecay``; Chainer's
  ExponentialShift for once an epoch), when the run stops (``StopTrigger``,
  ``Patience``) and when it writes (``WriteTrigger``).
- Safety: a snapshot and a clean stop on Ctrl-C or SIGTERM
  (``GracefulStop``), a stop before a non-finite loss reaches any file
  (``FiniteLoss``).
- What a run leaves: the best model (``MaxValueTrigger``,
  ``SaveBestModel``), or the best of the weights' moving average
  (``WeightAverage``), plots written atomically that resume exactly
  (``AtomicPlotReport``), the data's random generators in every snapshot
  (``RandomStates``), the progress bar, and the Evaluator that weighs each
  batch by its images.

Two step-size decays, both exponential: once an epoch (x0.9 an epoch is a
reimplementation's choice, XifengGuo's, and capsnet's default), or
continuously every step as the paper's official TensorFlow code does
(x0.96 every 2,000 steps of 128 images, never below 1e-6). The paper itself
says only "TensorFlow default parameters, including the exponentially
decaying learning rate".
"""
import json
import os
import signal
import time

import numpy

import chainer
from chainer import training
from chainer.training import extensions as chainer_extensions
from chainer.training import triggers

from capsnet import model_file
from capsnet import kernels
from capsnet.errors import Interrupted
from capsnet.errors import UserError

# Between two snapshots, by default: a CapsNet snapshot (99 MB) takes about
# a second to write here, 0.3% of 5 minutes, and a killed run loses at most
# 5 minutes. Counted in iterations instead, a GPU step of 14 ms wrote one
# every 1.4 s at 100 iterations.
SNAPSHOT_MINUTES = 5


def step_size(iteration, lr, rate, steps, floor=0.0):
    """lr * rate ** (iteration / steps), at least ``floor``: TensorFlow's
    exponential_decay (staircase off) under tf.maximum, after ``iteration``
    updates."""
    return max(lr * rate ** (iteration / steps), floor)


class PerUpdate(chainer.training.Extension):
    """Sets the optimizer's hyperparameter ``name`` to ``value(iteration)``
    before every update. It depends on the iteration alone, so a resumed
    run continues it exactly, with nothing to snapshot."""

    trigger = 1, 'iteration'
    name = None

    def value(self, iteration):
        raise NotImplementedError

    def initialize(self, trainer):
        self(trainer)           # the first update, or the first after resume

    def __call__(self, trainer):
        updater = trainer.updater
        setattr(updater.get_optimizer('main'), self.name,
                self.value(updater.iteration))


class ContinuousDecay(PerUpdate):
    """Adam's ``alpha`` from ``step_size`` before every update. ``start``:
    the model's place in the schedule before this run (train.py --init),
    so that the schedule goes on from there."""

    name = 'alpha'

    def __init__(self, lr, rate, steps, floor=0.0, start=0):
        self.lr, self.rate, self.steps, self.floor = lr, rate, steps, floor
        self.start = start

    def value(self, iteration):
        return step_size(self.start + iteration, self.lr, self.rate,
                         self.steps, self.floor)


class Warmup(PerUpdate):
    """Adam's steps grow linearly over this run's first ``updates`` updates,
    through its ``eta`` (Chainer's multiplier of the whole step), so that
    whatever schedule sets ``alpha`` is kept. Adam's first updates move
    every weight by about the step size, whatever its scale; a warm-up is
    the usual remedy (Liu et al. 2020, RAdam), and docs/training.md
    measures what it does to a small set's slow start."""

    name = 'eta'

    def __init__(self, updates):
        self.updates = updates

    def value(self, iteration):
        return min(1.0, (iteration + 1) / self.updates)


class Patience(chainer.training.Extension):
    """Counts the epochs since ``key`` (a validation accuracy) last rose.

    Chainer's EarlyStoppingTrigger keeps this count in the stop trigger,
    which looks at the epoch's values at the next iteration, after the
    epoch's snapshot is written and before a resume can show them again:
    resumed, it lost an epoch's check or waited ``patience`` epochs afresh.
    Here the count is kept after the Evaluator reports and before the
    snapshot, so that it resumes exactly.
    """

    # at each epoch's end; unlike an IntervalTrigger, with nothing to
    # snapshot, so that snapshots of runs without patience resume with it
    trigger = staticmethod(lambda trainer: trainer.updater.is_new_epoch)
    priority = chainer.training.PRIORITY_EDITOR    # after the Evaluator

    def __init__(self, key, patience):
        self.key, self.patience = key, patience
        self.best, self.count = float('-inf'), 0

    def __call__(self, trainer):
        value = float(trainer.observation[self.key])
        if value > self.best:
            self.best, self.count = value, 0
        else:
            self.count += 1

    def exhausted(self):
        return self.count >= self.patience

    def serialize(self, serializer):
        try:
            self.count = int(serializer('count', self.count))
        except KeyError:
            return      # a snapshot of a run started without patience
        self.best = float(serializer('best', self.best))


class StopTrigger:
    """The Trainer's stop trigger: after ``epochs`` epochs, or once
    ``patience`` (a Patience, or None) is exhausted. A snapshot holds it as
    it holds a plain ``(epochs, 'epoch')`` trigger."""

    def __init__(self, epochs, patience=None):
        self.limit = triggers.IntervalTrigger(epochs, 'epoch')
        self.patience = patience

    def __call__(self, trainer):
        return self.limit(trainer) or bool(
            self.patience and self.patience.exhausted())

    def get_training_length(self):          # for the ProgressBar
        return self.limit.get_training_length()

    def serialize(self, serializer):
        self.limit.serialize(serializer)


class WriteTrigger:
    """When a run writes its files: at every epoch's end (log, plots, model,
    snapshot), before a stop, and in between (snapshot) every ``iterations``
    iterations or, without them, once ``minutes`` have passed since the
    last write (``clock``: seconds, time.monotonic). A resumed run starts
    its clock at the resume.

    ``stop`` (guards.GracefulStop) is asked first, every iteration: under
    MPI it is a collective call that every process must make, and so is
    ``cluster.max`` on whether the time is up, so that every process
    snapshots at the same iteration, once any one's time is up. Several
    extensions ask within one iteration and get one answer.
    """

    def __init__(self, stop, cluster, iterations=None,
                 minutes=SNAPSHOT_MINUTES, clock=time.monotonic):
        self.stop, self.cluster = stop, cluster
        self.iterations, self.seconds = iterations, minutes * 60
        self.clock = clock
        self.last_write = None
        self._answer = (None, False)             # (iteration, answer)

    def __call__(self, trainer):
        updater = trainer.updater
        if self._answer[0] == updater.iteration:
            return self._answer[1]
        if self.last_write is None:
            self.last_write = self.clock()
        stopping = self.stop.requested(trainer)
        if self.iterations:
            due = updater.iteration % self.iterations == 0
        else:
            due = bool(self.cluster.max(
                int(self.clock() - self.last_write >= self.seconds)))
        answer = stopping or updater.is_new_epoch or due
        if answer:
            self.last_write = self.clock()
        self._answer = (updater.iteration, answer)
        return answer


class GracefulStop(chainer.training.Extension):
    """On SIGINT or SIGTERM, let the current iteration finish with all its
    extensions (the snapshot extension asks ``requested`` as a trigger),
    then stop the run with ``Interrupted``. A second signal stops at once.

    Under MPI the processes agree, once an iteration, on whether any of them
    got a signal, so that all snapshot and stop at the same iteration; only
    the first (``cluster.is_root``) says so. Use as a context manager around
    ``trainer.run()``: it installs the handlers and restores the old ones.
    """

    priority = -1000          # after everything, the snapshot (-100) included

    def __init__(self, cluster):
        self.cluster = cluster
        self.signal = None
        self._agreed = (None, 0)        # (iteration, signal number or 0)
        self._previous = {}

    def agreed_signal(self, trainer):
        """The signal any process got, or 0; one collective an iteration."""
        iteration = trainer.updater.iteration
        if self._agreed[0] != iteration:
            self._agreed = (iteration, self.cluster.max(self.signal or 0))
        return self._agreed[1]

    def requested(self, trainer):
        return self.agreed_signal(trainer) != 0

    def _handle(self, signum, frame):
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def __call__(self, trainer):
        sig = self.agreed_signal(trainer)
        if sig:
            raise Interrupted(
                '{} at iteration {}: its snapshot is saved in {}; run the '
                'same command to resume'.format(
                    signal.Signals(sig).name, trainer.updater.iteration,
                    trainer.out) if self.cluster.is_root else '', sig)


class FiniteLoss(chainer.training.Extension):
    """Stop the run with a UserError once the training loss has been NaN or
    infinite, before any writer (log, model, snapshot) sees an iteration
    since: the files on disk stay those of the last write before it.

    ``writes(trainer)``: whether anything is written this iteration. Only
    then is the loss read on the host; between reads the first bad
    iteration is kept on the device, so that a GPU step does not wait for
    the device each iteration.
    """

    priority = chainer.training.PRIORITY_WRITER + 1

    def __init__(self, writes):
        self.writes = writes
        self.first_bad = None   # on the device: first bad iteration, or -1

    def __call__(self, trainer):
        loss = chainer.as_array(trainer.observation['main/loss'])
        xp = chainer.backend.get_array_module(loss)
        iteration = trainer.updater.iteration
        if self.first_bad is None:
            self.first_bad = xp.array(-1)
        self.first_bad = xp.where((self.first_bad < 0) & ~xp.isfinite(loss),
                                  iteration, self.first_bad)
        if not self.writes(trainer):
            return
        first_bad, self.first_bad = int(self.first_bad), None
        if first_bad >= 0:
            raise UserError(
                'the training loss became NaN or infinite at iteration {}; '
                'the run stopped at iteration {} and its files are those of '
                'the last write before it (a smaller --lr may help)'.format(
                    first_bad, iteration))


class ProgressBar(chainer_extensions.ProgressBar):
    """Chainer's ProgressBar, whose first line gives the rate since the run
    (or its resume) began: Chainer's measures from its own first line, and
    so printed 'inf iters/sec' there."""

    def initialize(self, trainer):
        updater = trainer.updater
        self._pbar._recent_timing.append(
            (updater.iteration, updater.epoch_detail, time.time()))


class MaxValueTrigger(training.triggers.MaxValueTrigger):
    """Chainer's MaxValueTrigger, whose snapshots hold no Python object:
    until it has seen a value, its best is stored as NaN where Chainer's
    would pickle None (and a snapshot from the first epoch would then need
    pickle to resume)."""

    def serialize(self, serializer):
        self._interval_trigger.serialize(serializer['interval_trigger'])
        self._summary.serialize(serializer['summary'])
        best = serializer('best_value', numpy.nan if self._best_value is None
                          else self._best_value)
        self._best_value = None if numpy.isnan(best) else best


class WeightAverage(chainer.training.Extension):
    """An exponential moving average of ``link``'s weights, kept in
    ``average`` (a copy of it) for the evaluators and the saved model to
    use: after each update, average += (1 - d) (weights - average), with
    d = min(decay, (1 + n) / (10 + n)) after n updates (TensorFlow's
    ExponentialMovingAverage with num_updates), so that the average soon
    leaves the weights it started from. The steps' noise averages
    out, while the average follows the weights' drift over about
    1 / (1 - decay) updates. A run resumed from a snapshot that holds no
    average starts it at the resumed weights."""

    trigger = 1, 'iteration'
    priority = chainer.training.PRIORITY_WRITER + 1   # before the Evaluator

    def __init__(self, link, average, decay):
        self.link, self.average, self.decay = link, average, decay
        self.n = 0

    def __call__(self, trainer):
        rate = 1 - min(self.decay, (1 + self.n) / (10 + self.n))
        for mean, param in zip(self.average.params(), self.link.params()):
            mean.array += rate * (param.array - mean.array)
        self.n += 1

    def serialize(self, serializer):
        try:
            self.n = int(serializer('n', self.n))
            self.average.serialize(serializer['average'])
        except KeyError:        # a snapshot of a run without the average
            self.n = 0
            self.average.copyparams(self.link)


class SaveBestModel(chainer.training.Extension):
    """Write the model to ``model.npz`` each time ``trigger`` fires."""

    def __init__(self, model):
        self.model = model

    def __call__(self, trainer):
        model_file.save(os.path.join(trainer.out,
                                           model_file.NAME), self.model)


class AtomicPlotReport(chainer_extensions.PlotReport):
    """PlotReport that draws to a temporary name and then renames, so a
    killed run never leaves a half-written PNG, and that resumes exactly.

    Chainer's PlotReport snapshots its points but neither its trigger nor
    the epoch's running means: a resumed run plotted an extra point at its
    first iteration, and the epoch's point then averaged only the
    iterations after the resume. Both are kept here, as LogReport keeps
    them.
    """

    def __init__(self, y_keys, file_name, **kwargs):
        root, ext = os.path.splitext(file_name)
        self._final_name = file_name
        super().__init__(y_keys, file_name=root + '.partial' + ext, **kwargs)

    def __call__(self, trainer):
        super().__call__(trainer)
        partial = os.path.join(trainer.out, self._file_name)
        if os.path.exists(partial):
            os.replace(partial, os.path.join(trainer.out, self._final_name))

    def serialize(self, serializer):
        super().serialize(serializer)
        self._trigger.serialize(serializer['_trigger'])
        self._summary.serialize(serializer['_summary'])


class RandomStates(chainer.training.Extension):
    """Carry NumPy Generators through snapshots, so a resumed run draws the
    same data order and shifts as one never interrupted. Does nothing when
    called; it exists for ``serialize``."""

    trigger = (1, 'epoch')

    def __init__(self, **generators):
        self.generators = generators

    def __call__(self, trainer):
        pass

    def serialize(self, serializer):
        for name, generator in self.generators.items():
            if isinstance(serializer, chainer.serializer.Serializer):
                serializer(name, json.dumps(generator.bit_generator.state))
            else:
                generator.bit_generator.state = json.loads(
                    serializer(name, ''))


class Evaluator(chainer_extensions.Evaluator):
    """Chainer's Evaluator, with each batch's values counted by its number of
    images: Chainer's mean of batch means counts the last 8 of 5,000
    validation images (batch 128) as much as 128 others. The weights stay
    fixed during a pass, so each convolution's kernel spectrum is computed
    once per pass."""

    def __init__(self, iterator, target, **kwargs):
        def weighted(x, *rest):
            target(x, *rest)
            observation = chainer.get_current_reporter().observation
            for key, value in observation.items():
                observation[key] = (value, len(x))  # DictSummary's weight
        super().__init__(iterator, target, eval_func=weighted, **kwargs)

    def evaluate(self):
        with kernels.frozen_weights():
            return super().evaluate()
