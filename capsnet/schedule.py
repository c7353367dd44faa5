"""A run's schedule: Adam's step size, when it writes and when it stops.

Two decays, both exponential: once an epoch (``ExponentialShift``; x0.9 an
epoch is a reimplementation's choice, XifengGuo's, and capsnet's default),
or continuously every step as the paper's official TensorFlow code does
(``ContinuousDecay``: x0.96 every 2,000 steps of 128 images, never below
1e-6). The paper itself says only "TensorFlow default parameters, including
the exponentially decaying learning rate".

A run stops after its epochs, or earlier with ``Patience``: once validation
has not improved for that many epochs.
"""
import time

import chainer
from chainer.training import triggers

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


class ContinuousDecay(chainer.training.Extension):
    """Sets the optimizer's ``alpha`` to ``step_size`` before every update.
    It depends on the iteration alone, so a resumed run continues it
    exactly, with nothing to snapshot. ``start``: the updates that trained
    the model before this run (train.py --init), so that the schedule goes
    on from its place."""

    trigger = 1, 'iteration'

    def __init__(self, lr, rate, steps, floor=0.0, start=0):
        self.lr, self.rate, self.steps, self.floor = lr, rate, steps, floor
        self.start = start

    def initialize(self, trainer):
        self(trainer)           # the first update, or the first after resume

    def __call__(self, trainer):
        updater = trainer.updater
        updater.get_optimizer('main').alpha = step_size(
            self.start + updater.iteration, self.lr, self.rate, self.steps,
            self.floor)


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
