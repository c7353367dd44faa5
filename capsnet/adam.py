"""Chainer's Adam with a leaner update on the CPU.

Chainer's CPU update makes about a dozen temporary arrays the size of the
parameter (``grad - m``, its scaled copy, ``grad * grad``, ``sqrt(v)``,
...). Here each step of the update writes into one scratch array instead:
the same arithmetic, with less memory allocated and moved, in blocks that
stay in the cache, and a large parameter's elements split over
parallel.THREADS. CuPy keeps Chainer's own fused GPU kernel.
"""
import numpy

from chainer.optimizers import adam

from capsnet import parallel

# elements below which a parameter's update stays on one thread
SPLIT_FROM = 1 << 16
# elements updated at a time, so that the ten passes over them read the
# cache, not memory (29-37 -> 21-25 ms a step on one core for 8.2M)
BLOCK = 1 << 17


class AdamRule(adam.AdamRule):

    def update_core_cpu(self, param):
        hp = self.hyperparam
        grad = param.grad
        if (grad is None or hp.amsgrad or hp.adabound or
                hp.weight_decay_rate or param.dtype == numpy.float16):
            return super().update_core_cpu(param)
        self._check_eps(param.dtype.type)
        m, v = self.state['m'], self.state['v']
        if not all(a.flags.c_contiguous for a in (param.data, m, v)):
            return super().update_core_cpu(param)   # no flat views to write
        # flat views; grad may be a transposed view, read as a copy
        p, g, m, v = (a.reshape(-1) for a in (param.data, grad, m, v))
        step = -hp.eta * self.alpha_t

        def update(lo, hi):
            # in blocks that stay in cache through all ten passes
            block = numpy.empty(min(BLOCK, hi - lo), dtype=p.dtype)
            for start in range(lo, hi, BLOCK):
                end = min(start + BLOCK, hi)
                pp, gg, mm, vv = (a[start:end] for a in (p, g, m, v))
                scratch = block[:end - start]
                numpy.subtract(gg, mm, out=scratch)  # m += (1 - b1) (g - m)
                scratch *= 1 - hp.beta1
                mm += scratch
                numpy.multiply(gg, gg, out=scratch)  # v += (1 - b2) (g^2 - v)
                scratch -= vv
                scratch *= 1 - hp.beta2
                vv += scratch
                numpy.sqrt(vv, out=scratch)    # p -= eta a_t m / (sqrt v + e)
                scratch += hp.eps
                numpy.divide(mm, scratch, out=scratch)
                scratch *= step
                pp += scratch
        parallel.split(numpy, len(p), update, SPLIT_FROM)


class Adam(adam.Adam):
    """chainer.optimizers.Adam, with AdamRule's CPU update."""

    def create_update_rule(self):
        return AdamRule(self.hyperparam)
