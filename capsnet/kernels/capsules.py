"""The capsule kernels: the predictions u_hat, dynamic routing, and the
small steps around them (squash, length, the losses, the masked decoder
input, the decoder), each one node with its backward pass written out.

Axis names: N batch, P grid positions, T capsule types, I = P*T child
capsules, J parent capsules, K child dimensions, D parent dimensions.
"""
import numpy

import chainer
from chainer import backend

from capsnet import functions
from capsnet.functions import EPS
from capsnet.kernels.frozen import weight_form
from capsnet.parallel import split


# --- capsule predictions ---------------------------------------------------

class CapsulePredictions(chainer.Function):
    """u_hat[n, j, p, t] = W[p, t, j] @ u[n, p, t] (W[0, t, j] if shared).

    u (N, ..., T, K), W (P*T or T, J, D, K) -> u_hat (N, J, P*T, D), both
    reshaped inside (no Reshape nodes). One small GEMM (N, K) @ (K, D) per
    (p, t, j), each writing its (N, D) block of u_hat in place through a
    strided view; the grid positions split over THREADS.
    """

    def forward(self, inputs):
        xp = backend.get_array_module(*inputs)
        u, W = inputs
        n, t, k = u.shape[0], u.shape[-2], u.shape[-1]
        u = u.reshape(n, -1, t, k)
        p = u.shape[1]
        j, d = W.shape[1:3]
        self.u_t = xp.ascontiguousarray(u.transpose(1, 2, 0, 3))  # P,T,N,K
        u_hat = xp.empty((n, j, p, t, d), dtype=u.dtype)
        out = u_hat.transpose(2, 3, 1, 0, 4)                    # P,T,J,N,D
        # row-major (K, D) blocks keep the many small GEMMs on BLAS
        w_t = weight_form(W, 'rows', lambda W: xp.ascontiguousarray(
            W.reshape(-1, t, j, d, k).transpose(0, 1, 2, 4, 3)))  # P,T,J,K,D

        def predict(lo, hi):
            xp.matmul(self.u_t[lo:hi, :, None], _positions(w_t, lo, hi),
                      out=out[lo:hi])
        split(xp, p, predict)
        return u_hat.reshape(n, j, p * t, d),

    def backward(self, inputs, grad_outputs):
        xp = backend.get_array_module(*inputs)
        u, W = inputs
        p, t, n, k = self.u_t.shape
        j, d = W.shape[1:3]
        g = grad_outputs[0].reshape(n, j, p, t, d).transpose(2, 3, 1, 4, 0)
        w_pos = W.reshape(-1, t, j, d, k)                     # P or 1, ...
        gW = xp.empty((p, t, j, d, k), dtype=W.dtype)
        gu = xp.empty((n, p, t, k), dtype=u.dtype)

        def gradients(lo, hi):
            xp.matmul(g[lo:hi], self.u_t[lo:hi, :, None],
                      out=gW[lo:hi])                           # P,T,J,D,K
            gu_p = xp.matmul(g[lo:hi].transpose(0, 1, 2, 4, 3),
                             _positions(w_pos, lo, hi))       # P,T,J,N,K
            gu[:, lo:hi] = gu_p.sum(axis=2).transpose(2, 0, 1, 3)
        split(xp, p, gradients)
        if len(w_pos) == 1:                                    # shared
            gW = gW.sum(axis=0)
        return gu.reshape(u.shape), gW.reshape(W.shape)


def _positions(W, lo, hi):
    """Grid positions lo:hi of per-capsule weights (P, ...); shared ones
    (1, ...) serve every position."""
    return W if len(W) == 1 else W[lo:hi]


def capsule_predictions(u, W):
    """u (N, ..., T, K), W (P*T or T, J, D, K) -> u_hat (N, J, P*T, D)."""
    return CapsulePredictions()(u, W)


# --- dynamic routing -------------------------------------------------------

def _squash_factors(s, eps):
    """f(q) and f'(q) at q = |s|^2, for squash(s) = f(q) s; s (..., D)."""
    q = (s * s).sum(axis=-1, keepdims=True)
    root = 1 / (1 + q) / numpy.sqrt(q + eps)     # numpy.sqrt works on CuPy
    # f = q / ((1 + q) sqrt(q + eps)); f' stays finite at q = 0
    return q * root, root * (1 - q / (1 + q) - 0.5 * q / (q + eps))


class DynamicRouting(chainer.Function):
    """Routing by agreement, all iterations in one node.

    u_hat (N, J, I, D) [, bias (J, D)] -> v (N, J, D) and the last
    couplings c (N, J, I). Same algorithm as
    capsnet.functions.dynamic_routing (b_ij = 0, then r times:
    c = softmax_J(b), v = squash(sum_i c u_hat [+ bias]), b += u_hat . v).
    Each image routes alone, so the batch splits over THREADS. Keeps every
    iteration's c (R, N, J, I), s and v (R, N, J, D) for the backward pass.
    """

    def __init__(self, iterations, eps):
        self.iterations = iterations
        self.eps = eps

    def forward(self, inputs):
        xp = backend.get_array_module(*inputs)
        u_hat, bias = inputs[0], inputs[1:]
        n, j, i, d = u_hat.shape
        last = self.iterations - 1
        self.c = xp.empty((self.iterations, n, j, i), dtype=u_hat.dtype)
        self.s = xp.empty((self.iterations, n, j, d), dtype=u_hat.dtype)
        self.v = xp.empty_like(self.s)

        def route(lo, hi):
            m = hi - lo
            rows = u_hat[lo:hi].reshape(m * j, i, d)         # one per (n, j)
            b = xp.zeros((m, j, i), dtype=u_hat.dtype)
            for r in range(self.iterations):
                c, s, v = self.c[r, lo:hi], self.s[r, lo:hi], self.v[r, lo:hi]
                xp.exp(b - b.max(axis=1, keepdims=True), out=c)
                c /= c.sum(axis=1, keepdims=True)            # softmax over J
                xp.matmul(c.reshape(m * j, 1, i), rows,
                          out=s.reshape(m * j, 1, d))
                if bias:
                    s += bias[0]
                xp.multiply(_squash_factors(s, self.eps)[0], s, out=v)
                if r < last:
                    b += xp.matmul(rows, v.reshape(m * j, d, 1)).reshape(
                        m, j, i)
        split(xp, n, route)
        return self.v[last], self.c[last]

    def backward(self, inputs, grad_outputs):
        xp = backend.get_array_module(*inputs)
        u_hat = inputs[0]
        n, j, i, d = u_hat.shape
        gv_out, gc_out = grad_outputs
        gu_hat = xp.empty_like(u_hat)

        def gradients(lo, hi):
            """Fills gu_hat[lo:hi]; returns the bias gradient of the part."""
            m = hi - lo
            rows = u_hat[lo:hi].reshape(m * j, i, d)
            # g_b: gradient of the logits b after the current iteration
            g_b = xp.zeros((m, j, i), dtype=u_hat.dtype)
            g_bias = xp.zeros((j, d), dtype=u_hat.dtype)
            lhs, rhs = [], []    # gu_hat = sum over pairs of lhs (x) rhs
            for r in reversed(range(self.iterations)):
                c, s, v = self.c[r, lo:hi], self.s[r, lo:hi], self.v[r, lo:hi]
                last = r == self.iterations - 1
                gv = (gv_out[lo:hi] if last and gv_out is not None
                      else xp.zeros_like(v))
                if not last:                                  # b += u_hat . v
                    gv = gv + xp.matmul(g_b.reshape(m * j, 1, i),
                                        rows).reshape(m, j, d)
                    lhs.append(g_b)
                    rhs.append(v)
                f, df = _squash_factors(s, self.eps)
                gs = gv * f + 2 * s * (s * gv).sum(axis=-1, keepdims=True) * df
                g_bias += gs.sum(axis=0)
                gc = xp.matmul(rows, gs.reshape(m * j, d, 1)).reshape(m, j, i)
                if last and gc_out is not None:
                    gc += gc_out[lo:hi]
                lhs.append(c)
                rhs.append(gs)
                # softmax over J, and b_r reaches b_{r+1} unchanged
                g_b = g_b + c * (gc - (c * gc).sum(axis=1, keepdims=True))
            a = xp.stack(lhs, axis=-1).reshape(m * j, i, len(lhs))
            bb = xp.stack(rhs, axis=-2).reshape(m * j, len(rhs), d)
            xp.matmul(a, bb, out=gu_hat[lo:hi].reshape(m * j, i, d))
            return g_bias
        g_bias = sum(split(xp, n, gradients))
        return (gu_hat, g_bias)[:len(inputs)]


def dynamic_routing(u_hat, iterations, eps=EPS, bias=None):
    """u_hat (N, J, I, D) [, bias (J, D)] -> v (N, J, D), couplings
    (N, J, I)."""
    inputs = (u_hat,) if bias is None else (u_hat, bias)
    return DynamicRouting(iterations, eps)(*inputs)


# --- the small steps, fused ------------------------------------------------
#
# Chainer runs each function of a composition as its own node, with its own
# Python overhead and, in the backward pass, more functions (a Linear's
# backward alone calls two). The chains below are one node each, with the
# backward pass written out: a training step makes 38 function calls instead
# of 155, which is what counts at small batches and on a GPU.

class Squash(chainer.Function):
    """v = |s|^2 / (1 + |s|^2) * s / |s| along the last axis: s (..., D)."""

    def __init__(self, eps):
        self.eps = eps

    def forward(self, inputs):
        s, = inputs
        self.f, self.df = _squash_factors(s, self.eps)
        return self.f * s,

    def backward(self, inputs, grad_outputs):
        s, = inputs
        gv, = grad_outputs
        return gv * self.f + 2 * s * (s * gv).sum(
            axis=-1, keepdims=True) * self.df,


def squash(s, axis=-1, eps=EPS):
    """Same as functions.squash, along the last axis only."""
    if axis not in (-1, s.ndim - 1):
        raise ValueError('the fused squash acts along the last axis')
    return Squash(eps)(s)


class Length(chainer.Function):
    """|v| = sqrt(|v|^2 + EPS) along the last axis: (..., D) -> (...)."""

    def forward(self, inputs):
        v, = inputs
        self.retain_outputs((0,))
        return numpy.sqrt((v * v).sum(axis=-1) + v.dtype.type(EPS)),

    def backward(self, inputs, grad_outputs):
        v, = inputs
        length, = self.output_data
        return (grad_outputs[0] / length)[..., None] * v,


def length(v, axis=-1):
    """Same as functions.length, along the last axis only."""
    if axis not in (-1, v.ndim - 1):
        raise ValueError('the fused length acts along the last axis')
    return Length()(v)


class MarginLoss(chainer.Function):
    """The margin loss of lengths (N, J) for labels (N,) or (N, K):
    summed over classes, averaged over the batch, times ``scale``."""

    def __init__(self, m_pos, m_neg, lam, scale):
        self.m_pos, self.m_neg, self.lam = m_pos, m_neg, lam
        self.scale = scale

    def forward(self, inputs):
        xp = backend.get_array_module(*inputs)
        lengths, labels = inputs
        present = functions.presence(labels, lengths.shape[1],
                                     lengths.dtype)
        # d loss / d lengths, up to the batch mean: the loss is
        # present * below^2 + lam * absent * above^2
        below = present * xp.maximum(self.m_pos - lengths, 0)
        above = (1 - present) * xp.maximum(lengths - self.m_neg, 0)
        mean = self.scale / len(lengths)
        self.retain_inputs(())          # the slope is all backward needs
        self.slope = (2 * self.lam * above - 2 * below) * mean
        loss = ((below * below).sum() + self.lam * (above * above).sum())
        return xp.asarray(loss * mean, dtype=lengths.dtype),

    def backward(self, inputs, grad_outputs):
        return self.slope * grad_outputs[0], None


def margin_loss(lengths, labels, m_pos=0.9, m_neg=0.1, lam=0.5, scale=1.0):
    """Same as functions.margin_loss."""
    return MarginLoss(m_pos, m_neg, lam, scale)(lengths, labels)


class MaskedCapsules(chainer.Function):
    """v (N, J, D), labels (N,) -> (N, J * D): capsule labels[n] of image n,
    every other capsule zero."""

    def forward(self, inputs):
        xp = backend.get_array_module(*inputs)
        v, labels = inputs
        self.rows = xp.arange(len(v)), labels
        out = xp.zeros_like(v)
        out[self.rows] = v[self.rows]
        return out.reshape(len(v), -1),

    def backward(self, inputs, grad_outputs):
        xp = backend.get_array_module(*inputs)
        v, _ = inputs
        gv = xp.zeros_like(v)
        gv[self.rows] = grad_outputs[0].reshape(v.shape)[self.rows]
        return gv, None


def masked_capsules(v, labels):
    """Same as functions.masked_capsules."""
    return MaskedCapsules()(v, labels)


class Decoder(chainer.Function):
    """x (N, J*D) -> ReLU(W1 x + b1) -> ... -> sigmoid(WL . + bL)
    (N, C*H*W), any number of layers; each W (out, in) as in Chainer's
    Linear. Keeps every layer's input and the output for the backward
    pass."""

    def forward(self, inputs):
        xp = backend.get_array_module(*inputs)
        x, Ws, bs = inputs[0], inputs[1::2], inputs[2::2]
        self.h = [x]                                # each layer's input
        for W, b in zip(Ws[:-1], bs[:-1]):
            self.h.append(xp.maximum(self.h[-1].dot(W.T) + b, 0))
        z = self.h[-1].dot(Ws[-1].T) + bs[-1]
        self.retain_outputs((0,))
        return xp.tanh(z * z.dtype.type(0.5)) * 0.5 + 0.5,  # sigmoid(z)

    def backward(self, inputs, grad_outputs):
        Ws = inputs[1::2]
        y, = self.output_data
        g = grad_outputs[0] * y * (1 - y)           # at the last layer
        grads = []
        for k in reversed(range(len(Ws))):
            grads[:0] = [g.T.dot(self.h[k]), g.sum(axis=0)]
            g = g.dot(Ws[k])
            if k:
                g = g * (self.h[k] > 0)             # through its ReLU
        return (g, *grads)


def decoder(x, *layers):
    """Same as functions.decoder."""
    return Decoder()(x, *layers)


class ReconstructionLoss(chainer.Function):
    """Sum of squared errors per image, averaged over the batch:
    reconstruction (N, P), x with N * P elements."""

    def forward(self, inputs):
        xp = backend.get_array_module(*inputs)
        reconstruction, x = inputs
        self.difference = reconstruction - x.reshape(
            reconstruction.shape).astype(reconstruction.dtype, copy=False)
        n = len(reconstruction)
        return xp.asarray((self.difference ** 2).sum() / n,
                          dtype=reconstruction.dtype),

    def backward(self, inputs, grad_outputs):
        _, x = inputs
        g = self.difference * (2 * grad_outputs[0] / len(self.difference))
        return g, -g.reshape(x.shape).astype(x.dtype, copy=False)


def reconstruction_loss(reconstruction, x):
    """Same as functions.reconstruction_loss."""
    return ReconstructionLoss()(reconstruction, x)
