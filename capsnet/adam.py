"""Chainer's Adam with a leaner update on the CPU.

Chainer's CPU update makes about a dozen temporary arrays the size of the
parameter (``grad - m``, its scaled copy, ``grad * grad``, ``sqrt(v)``,
...). Here each step of the update writes into one scratch array instead:
the same arithmetic, with less memory allocated and moved. CuPy keeps
Chainer's own fused GPU kernel.
"""
import numpy

from chainer.optimizers import adam


class AdamRule(adam.AdamRule):

    def update_core_cpu(self, param):
        hp = self.hyperparam
        grad = param.grad
        if (grad is None or hp.amsgrad or hp.adabound or
                hp.weight_decay_rate or param.dtype == numpy.float16):
            return super().update_core_cpu(param)
        self._check_eps(param.dtype.type)
        m, v = self.state['m'], self.state['v']
        scratch = numpy.empty_like(grad)
        numpy.subtract(grad, m, out=scratch)     # m += (1 - b1) (g - m)
        scratch *= 1 - hp.beta1
        m += scratch
        numpy.multiply(grad, grad, out=scratch)  # v += (1 - b2) (g^2 - v)
        scratch -= v
        scratch *= 1 - hp.beta2
        v += scratch
        numpy.sqrt(v, out=scratch)               # p -= eta a_t m / (sqrt v + e)
        scratch += hp.eps
        numpy.divide(m, scratch, out=scratch)
        scratch *= -hp.eta * self.alpha_t
        param.data += scratch


class Adam(adam.Adam):
    """chainer.optimizers.Adam, with AdamRule's CPU update."""

    def create_update_rule(self):
        return AdamRule(self.hyperparam)
