"""Adam's step size over a run.

Two decays, both exponential: once an epoch (``ExponentialShift``; x0.9 an
epoch is a reimplementation's choice, XifengGuo's, and capsnet's default),
or continuously every step as the paper's official TensorFlow code does
(``ContinuousDecay``: x0.96 every 2,000 steps of 128 images, never below
1e-6). The paper itself says only "TensorFlow default parameters, including
the exponentially decaying learning rate".
"""
import chainer


def step_size(iteration, lr, rate, steps, floor=0.0):
    """lr * rate ** (iteration / steps), at least ``floor``: TensorFlow's
    exponential_decay (staircase off) under tf.maximum, after ``iteration``
    updates."""
    return max(lr * rate ** (iteration / steps), floor)


class ContinuousDecay(chainer.training.Extension):
    """Sets the optimizer's ``alpha`` to ``step_size`` before every update.
    It depends on the iteration alone, so a resumed run continues it
    exactly, with nothing to snapshot."""

    trigger = 1, 'iteration'

    def __init__(self, lr, rate, steps, floor=0.0):
        self.lr, self.rate, self.steps, self.floor = lr, rate, steps, floor

    def initialize(self, trainer):
        self(trainer)           # the first update, or the first after resume

    def __call__(self, trainer):
        updater = trainer.updater
        updater.get_optimizer('main').alpha = step_size(
            updater.iteration, self.lr, self.rate, self.steps, self.floor)
