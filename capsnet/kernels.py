"""The fast kernels: one place for every hand-written forward and backward.

Each has a plain composition of Chainer functions with the same signature in
``capsnet/functions.py``; the tests check that both give the same values and
gradients, and ``CapsNet(fused=False)`` runs the model on those instead.

- ``convolution_2d_nhwc``: PrimaryCaps' convolution through the DFT,
  a third of the arithmetic of im2col (94% of the model's FLOPs are here),
  or, for a few images, as one GEMM over the patches.
- ``convolution_relu_nhwc``: conv1 and its ReLU as one GEMM over the
  patches, written channels-last for PrimaryCaps.
- ``convolution_2d``: the baseline CNN's padded stride-1 convolutions
  through the FFT, a ninth of the arithmetic of one GEMM over the patches.
- ``capsule_predictions``: u_hat_{j|i} = W_ij u_i written straight into the
  routing layout, without a transpose of the 23.6M-float u_hat at batch 128.
- ``dynamic_routing``: all iterations in one node, with the backward pass
  accumulating the gradient of u_hat in one batched GEMM instead of one
  outer product per iteration.
- ``squash``, ``length``, ``margin_loss``, ``masked_capsules``, ``decoder``
  and ``reconstruction_loss``: each a chain of small Chainer functions in
  ``functions.py``, here one node with its backward pass written out.

Axis names: N batch, P grid positions, T capsule types, I = P*T child
capsules, J parent capsules, K child dimensions, D parent dimensions.
"""
import concurrent.futures
import contextlib
import functools
import os

import numpy
import scipy.fft

import chainer
from chainer import backend

from capsnet import functions
from capsnet.functions import EPS


# --- weights that stay put --------------------------------------------------
#
# Each kernel below reads its weights in a form of its own (a spectrum, a
# transpose). While frozen_weights() is active, _frozen holds those forms:
# {(id(W), form): (W, the form of W)}; holding W keeps another array from
# taking its id.
_frozen = None


@contextlib.contextmanager
def frozen_weights():
    """Promise that no weight changes inside this block (an evaluation pass):
    each kernel then makes its form of a weight once for the whole block
    instead of once per batch. Leaving the block drops them."""
    global _frozen
    outer = _frozen
    if outer is None:
        _frozen = {}
    try:
        yield
    finally:
        _frozen = outer


def _weight_form(W, form, make):
    """make(W), reused inside a frozen_weights() block."""
    if _frozen is None:
        return make(W)
    cached = _frozen.get((id(W), form))
    if cached is None or cached[0] is not W:
        cached = _frozen[id(W), form] = W, make(W)
    return cached[1]


# --- both cores for the memory-bound kernels -------------------------------
#
# Routing, the capsule predictions and Adam's update are many small products
# and element-wise passes (over u_hat: 94 MB at batch 128) that BLAS would
# run on one thread. Split over the batch (or the grid, or the elements),
# NumPy runs the parts at once, releasing the GIL inside each large
# operation. As many parts as BLAS has threads, so that a process told to
# use one core (OPENBLAS_NUM_THREADS=1, as under mpiexec) does.

def _thread_count():
    for name in ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS'):
        if os.environ.get(name, '').isdigit():
            return max(1, int(os.environ[name]))
    if hasattr(os, 'sched_getaffinity'):                # not on macOS
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


THREADS = _thread_count()
_pool = None, None                                      # (size, executor)


def split(xp, n, work, grain=1):
    """[work(lo, hi) for each of up to THREADS slices of range(n), none
    shorter than ``grain``], run at once on NumPy, as one call on CuPy."""
    global _pool
    parts = min(THREADS, n // grain) if xp is numpy else 1
    if parts <= 1:
        return [work(0, n)]
    if _pool[0] != THREADS:
        _pool = THREADS, concurrent.futures.ThreadPoolExecutor(THREADS)
    bounds = [n * k // parts for k in range(parts + 1)]
    futures = [_pool[1].submit(work, lo, hi)
               for lo, hi in zip(bounds[:-1], bounds[1:])]
    return [f.result() for f in futures]


# --- convolution through the discrete Fourier transform -------------------
#
# A stride-s convolution is a stride-1 one after space-to-depth: phase (p, q)
# of the input, x[s*u + p, s*v + q], becomes channel block p*s + q, and the
# kernel is split the same way. PrimaryCaps (20x20 input, 9x9 kernel, stride 2)
# becomes a 5x5 correlation over 4 * 256 channels on a 10x10 grid, and a DFT
# of size 10 computes it without wrap-around (output 6 + kernel 5 - 1 = 10).
# Each of the 52 distinct frequencies of the 10 x 6 half spectrum is then one
# complex GEMM (N, C') @ (C', O): under a third of the direct method's
# arithmetic.
#
# All of it is real arithmetic: a spectrum is stored (F, 2, ...) with its real
# and imaginary parts stacked, which is what the transform GEMM writes, and a
# complex product A B is [Ar; Ai] @ Br and [Ar; Ai] @ Bi, recombined. The
# size-10 transforms are small real matrix products, on NumPy and CuPy alike.

@functools.lru_cache(maxsize=None)
def _dft(grid, positions, inverse, unique=False):
    """Real DFT matrix between ``positions`` (A, B) of a real signal on
    ``grid`` (L1, L2) and its half spectrum of F = L1 * (L2 // 2 + 1) points;
    with ``unique``, only the F of those that no other one mirrors: in
    columns v = 0 and L2/2, u and L1 - u hold complex conjugates, so rows
    u > L1/2 go (52 of 60 points on a 10 x 10 grid).

    Forward, (2F, A*B): rows (f, re/im) of exp(-i theta) @ x.
    Inverse, (A*B, 2F): y = Re(E @ Y) for a Hermitian Y stored (f, re/im).
    """
    (l1, l2), (a, b) = grid, positions
    u, v = numpy.meshgrid(numpy.arange(l1), numpy.arange(l2 // 2 + 1),
                          indexing='ij')
    own_mirror_column = (v == 0) | (2 * v == l2)
    if unique:
        keep = ~own_mirror_column | (2 * u <= l1)
        u, v, own_mirror_column = u[keep], v[keep], own_mirror_column[keep]
    u, v = u.reshape(-1, 1, 1), v.reshape(-1, 1, 1)
    theta = 2 * numpy.pi * (u * numpy.arange(a)[:, None] / l1 +
                            v * numpy.arange(b) / l2)
    theta = theta.reshape(-1, a * b)                         # (F, A*B)
    if not inverse:
        m = numpy.stack([numpy.cos(theta), -numpy.sin(theta)], axis=1)
        return m.reshape(-1, a * b).astype(numpy.float32)
    # each point stands for its mirror image too, except the points that
    # are their own: all of columns v = 0, L2/2, or with unique only their
    # rows u = 0, L1/2
    alone = own_mirror_column.reshape(-1)
    if unique:
        alone = alone & ((u == 0) | (2 * u == l1)).reshape(-1)
    weight = numpy.where(alone, 1.0, 2.0)[:, None] / (l1 * l2)
    # Re((Er + i Ei)(Yr + i Yi)) = Er Yr - Ei Yi
    m = numpy.stack([weight * numpy.cos(theta), -weight * numpy.sin(theta)],
                    axis=1)                                  # (F, 2, A*B)
    return m.reshape(-1, a * b).T.astype(numpy.float32)


@functools.lru_cache(maxsize=None)
def _copied(device_name, matrix, *args):
    """``matrix(*args)``, a host array, copied to the device named
    ``device_name`` once, so that no call copies it again."""
    return chainer.get_device(device_name).send(matrix(*args))


def _beside(a, matrix, *args):
    """``matrix(*args)`` (_dft or _complex_dft) on the device of ``a``."""
    return _copied(backend.get_device_from_array(a).name, matrix, *args)


def _space_to_depth(x, s):
    """(N, H, W, C) -> (H/s * W/s, N * s*s*C): grid positions first."""
    n, h, w, c = x.shape
    x = x.reshape(n, h // s, s, w // s, s, c).transpose(1, 3, 0, 2, 4, 5)
    return x.reshape(h // s * (w // s), n * s * s * c)


def _depth_to_space(y, n, h, w, c, s):
    """Inverse of _space_to_depth."""
    y = y.reshape(h // s, w // s, n, s, s, c).transpose(2, 0, 3, 1, 4, 5)
    return y.reshape(n, h, w, c)


def _kernel_to_depth(W, s):
    """(O, K, K, C), K a multiple of s -> (O, K/s * K/s, s*s*C): output
    channel first, so the copy moves whole runs of C."""
    o, k, _, c = W.shape
    W = W.reshape(o, k // s, s, k // s, s, c).transpose(0, 1, 3, 2, 4, 5)
    return W.reshape(o, (k // s) ** 2, s * s * c)


def _depth_to_kernel(w, k, c, s):
    """Inverse of _kernel_to_depth."""
    o = len(w)
    w = w.reshape(o, k // s, k // s, s, s, c).transpose(0, 1, 3, 2, 4, 5)
    return w.reshape(o, k, k, c)


def _pad_to(a, shape):
    """Zero-pad the leading corner of ``a`` up to ``shape``."""
    if a.shape == tuple(shape):
        return a
    out = backend.get_array_module(a).zeros(shape, dtype=a.dtype)
    out[tuple(slice(0, d) for d in a.shape)] = a
    return out


def _complex_matmul(xp, a, b_re, b_im, conj_b):
    """A @ B (or A @ conj(B)) per frequency, for A stored (F, 2*M, K) as
    [Ar; Ai] and B as two (F, K, L) parts -> (F, 2, M, L) as [re, im]."""
    f, m2, _ = a.shape
    m = m2 // 2
    p = xp.matmul(a, b_re).reshape(f, 2, m, -1)       # [Ar Br; Ai Br]
    q = xp.matmul(a, b_im).reshape(f, 2, m, -1)       # [Ar Bi; Ai Bi]
    if conj_b:                                        # A conj(B)
        p[:, 0] += q[:, 1]
        p[:, 1] -= q[:, 0]
    else:
        p[:, 0] -= q[:, 1]
        p[:, 1] += q[:, 0]
    return p


class SpectralConvolution2DNHWC(chainer.Function):
    """y = conv(x, W) + b on NHWC arrays, computed through the DFT.

    x (N, H, W, C), W (O, K, K, C), b (O,) -> y (N, OH, OW, O), no padding.
    Cheaper than im2col when the kernel covers most of the input (PrimaryCaps),
    dearer when the output is large (conv1).
    After space-to-depth: grid G = (H/s, W/s), kernel Kd = K/s (both rounded
    up), C' = s*s*C channels; F frequencies in G's half spectrum. Keeps the
    spectra of x (F, 2N, C') and W (O, F, 2, C') for the backward pass.
    """

    def __init__(self, stride, need_gx):
        self.stride = stride
        self.need_gx = need_gx

    def forward(self, inputs):
        xp = backend.get_array_module(*inputs)
        x, W, b = inputs
        s = self.stride
        n, h, w, c = x.shape
        o, k = W.shape[:2]
        self.grid = (-(-h // s), -(-w // s))
        self.k_pad = -(-k // s) * s
        self.out_hw = ((h - k) // s + 1, (w - k) // s + 1)
        kd = self.k_pad // s
        gh, gw = self.grid
        x_d = _space_to_depth(_pad_to(x, (n, gh * s, gw * s, c)), s)
        dft_x = _beside(x, _dft, self.grid, self.grid, False, True)
        self.x_f = dft_x.dot(x_d).reshape(-1, 2 * n, s * s * c)
        del x_d

        def spectrum(W):                                     # (O, F, 2, C')
            w_d = _kernel_to_depth(
                _pad_to(W, (o, self.k_pad, self.k_pad, c)), s)
            dft_w = _beside(W, _dft, self.grid, (kd, kd), False, True)
            return xp.matmul(dft_w, w_d).reshape(o, -1, 2, s * s * c)
        self.w_f = _weight_form(W, 'spectrum', spectrum)
        # correlation: Y = X conj(W), with W's parts as (F, C', O) views
        w_re, w_im = (self.w_f[:, :, part].transpose(1, 2, 0)
                      for part in (0, 1))
        y_f = _complex_matmul(xp, self.x_f, w_re, w_im,
                              conj_b=True)                   # (F, 2, N, O)
        inverse = _beside(x, _dft, self.grid, self.out_hw, True, True)
        y = inverse.dot(y_f.reshape(-1, n * o))             # (OH*OW, N*O)
        y = y.reshape(self.out_hw + (n, o)).transpose(2, 0, 1, 3)
        return xp.ascontiguousarray(y + b),

    def backward(self, inputs, grad_outputs):
        xp = backend.get_array_module(*inputs)
        x, W, _ = inputs
        gy = grad_outputs[0]
        n, h, w, c = x.shape
        o, k = W.shape[:2]
        s = self.stride
        f = len(self.x_f)
        gy_d = xp.ascontiguousarray(gy.transpose(1, 2, 0, 3))  # (OH, OW, N, O)
        dft_y = _beside(x, _dft, self.grid, self.out_hw, False, True)
        gy_f = dft_y.dot(gy_d.reshape(-1, n * o)).reshape(f, 2, n, o)
        # gW: correlation of x with gy, GW = X^T conj(GY), summed over N;
        # per frequency one product with [Xr; Xi] (2N, C'):
        # [GYr^T GYi^T; -GYi^T GYr^T] (2O, 2N) gives [Re; Im] (2O, C')
        g_re, g_im = (gy_f[:, part].transpose(0, 2, 1)
                      for part in (0, 1))                    # (F, O, N)
        gw_f = xp.matmul(xp.concatenate([
            xp.concatenate([g_re, g_im], axis=2),
            xp.concatenate([-g_im, g_re], axis=2)], axis=1),
            self.x_f)                                        # (F, 2, O, C')
        self.x_f = None                   # free it before gx's temporaries
        kd = self.k_pad // s
        # one GEMM back to the kernel's positions: (Kd*Kd, 2F) @ (2F, O*C')
        inverse_w = _beside(x, _dft, self.grid, (kd, kd), True, True)
        gw_d = inverse_w.dot(gw_f.reshape(2 * f, -1)).reshape(
            kd * kd, o, -1).transpose(1, 0, 2)               # (O, Kd*Kd, C')
        del gw_f
        gW = _depth_to_kernel(gw_d, self.k_pad, c, s)[:, :k, :k]
        gx = None
        if self.need_gx:
            # gx: full convolution of gy with W, GX = GY W
            w_re, w_im = (self.w_f[:, :, part].transpose(1, 0, 2)
                          for part in (0, 1))                # (F, O, C')
            gx_f = _complex_matmul(xp, gy_f.reshape(f, 2 * n, o), w_re,
                                   w_im, conj_b=False)       # (F, 2, N, C')
            gh, gw = self.grid
            inverse_x = _beside(x, _dft, self.grid, self.grid, True, True)
            gx_d = inverse_x.dot(gx_f.reshape(2 * f, -1))
            gx = _depth_to_space(gx_d, n, gh * s, gw * s, c, s)[:, :h, :w]
        self.w_f = None
        return gx, xp.ascontiguousarray(gW), gy.sum(axis=(0, 1, 2))


def _patches(x, k, s):
    """(N, H, W, C) -> a view (N, OH, OW, K, K, C) of each output
    position's receptive field (no copy)."""
    n, h, w, c = x.shape
    sn, sh, sw, sc = x.strides
    shape = (n, (h - k) // s + 1, (w - k) // s + 1, k, k, c)
    return backend.get_array_module(x).lib.stride_tricks.as_strided(
        x, shape, (sn, s * sh, s * sw, sh, sw, sc))


class DirectConvolution2DNHWC(chainer.Function):
    """y = conv(x, W) + b on NHWC arrays as one GEMM over the patches, then
    a ReLU with ``slope`` below zero, in place (none if slope is None).

    x (N, H, W, C), W (O, K, K, C), b (O,) -> y (N, OH, OW, O), as
    SpectralConvolution2DNHWC. The patches form cols (N*OH*OW, K*K*C), and
    y = cols @ W (O, K*K*C)^T. It reads W (21 MB for PrimaryCaps) where
    the spectral method reads W's spectrum (109 MB), at three times the
    arithmetic, so it wins for small batches; and it is conv1's method
    (one input channel: the spectral method would transform 256 outputs
    an image back). Keeps cols, and y if there is a ReLU, for the backward
    pass.
    """

    def __init__(self, stride, need_gx, slope=None):
        self.stride = stride
        self.need_gx = need_gx
        self.slope = slope

    def forward(self, inputs):
        xp = backend.get_array_module(*inputs)
        x, W, b = inputs
        o, k = W.shape[:2]
        patches = _patches(x, k, self.stride)
        self.out_shape = patches.shape[:3] + (o,)
        self.cols = patches.reshape(-1, W[0].size)       # (N*OH*OW, K*K*C)
        w_rows = W.reshape(o, -1)
        if len(self.cols) >= o:
            y = self.cols.dot(w_rows.T)
        else:
            # y^T = W cols^T: with O rows, BLAS splits the GEMM evenly over
            # its threads, which it does not for the few rows of cols W^T
            y = xp.ascontiguousarray(w_rows.dot(self.cols.T).T)
        y += b
        if self.slope is not None:                       # max(y, slope y)
            xp.maximum(y, y * self.slope if self.slope else 0, out=y)
            self.retain_outputs((0,))
        return y.reshape(self.out_shape),

    def backward(self, inputs, grad_outputs):
        xp = backend.get_array_module(*inputs)
        x, W, _ = inputs
        o, k = W.shape[:2]
        gy = grad_outputs[0].reshape(-1, o)              # (N*OH*OW, O)
        if self.slope is not None:
            above = self.output_data[0].reshape(-1, o) > 0
            slope = gy.dtype.type(self.slope)
            gy = gy * (above if not slope else slope + (1 - slope) * above)
        # the product with its longer side last runs faster (conv1: 81 x 256)
        if self.cols.shape[1] < o:
            gW = self.cols.T.dot(gy).T.reshape(W.shape)
        else:
            gW = gy.T.dot(self.cols).reshape(W.shape)
        self.cols = None
        gx = None
        if self.need_gx:
            # each patch's gradient goes back to the input positions it read
            g_patches = gy.dot(W.reshape(o, -1)).reshape(
                self.out_shape[:3] + W.shape[1:])        # (N, OH, OW, K, K, C)
            gx = xp.zeros_like(x)
            s, (oh, ow) = self.stride, self.out_shape[1:3]
            for dy in range(k):
                for dx in range(k):
                    gx[:, dy:dy + s * oh:s, dx:dx + s * ow:s] += \
                        g_patches[:, :, :, dy, dx]
        return gx, gW, gy.sum(axis=0)


def convolution_relu_nhwc(x, W, b, slope=0.0):
    """conv1, as functions.convolution_relu_nhwc: x (N, C, H, W),
    W (O, C, K, K) -> (N, OH, OW, O), the direct method at any batch size."""
    if x.shape[1] == 1:              # NCHW and NHWC are the same memory
        x = chainer.functions.reshape(x, x.shape[:1] + x.shape[2:] + (1,))
    else:
        x = chainer.functions.transpose(x, (0, 2, 3, 1))
    need_gx = x.requires_grad
    W = chainer.functions.transpose(W, (0, 2, 3, 1))
    return DirectConvolution2DNHWC(1, need_gx, slope)(x, W, b)


# Batch sizes from which the spectral method is the faster one for
# PrimaryCaps, forward and backward with the kernel transformed each step,
# and forward alone inside frozen_weights(), where the transform is made once
# (bench/convolution.py; 2 cores, NumPy; training crossed over between 16
# and 24 images on the AMD EPYC of 2026-12-01). CPU measurements: on a GPU
# they have not been measured, and the same points apply there.
SPECTRAL_FROM = 24
SPECTRAL_FROM_FROZEN = 12


def convolution_2d_nhwc(x, W, b, stride=1):
    """Convolution of NHWC ``x`` (N, H, W, C) with ``W`` (O, K, K, C)."""
    need_gx = isinstance(x, chainer.Variable) and x.requires_grad
    frozen = _frozen is not None
    method = (DirectConvolution2DNHWC if len(x) < (
        SPECTRAL_FROM_FROZEN if frozen else SPECTRAL_FROM)
        else SpectralConvolution2DNHWC)
    return method(stride, need_gx)(x, W, b)


# --- padded, stride-1 convolution through the FFT ---------------------------
#
# The baseline CNN's 5x5 'same' convolutions over 256 channels cost 82 GFLOP
# a batch of 32 as one GEMM over the patches, and im2col's copies cost more.
# On the padded L1 x L2 grid (32 x 32 for 28 + 2 * 2) each of the
# L1 * (L2 / 2 + 1) frequencies is one complex GEMM (N, C) @ (C, O): a ninth
# of the arithmetic. Images and output gradients go through the FFT; the
# 5x5 kernels, O * C of them, through the DFT matrix of their 25 positions,
# which is cheaper than O * C FFTs of the whole grid.

@functools.lru_cache(maxsize=None)
def _complex_dft(grid, positions, inverse, dtype, conjugate=False):
    """_dft as complex matrices of ``dtype``: forward (F, A*B), exp(-i
    theta), and inverse (A*B, F), with y = Re(E @ Y); or their conjugates."""
    m = _dft(grid, positions, inverse)
    m = m[:, 0::2] - 1j * m[:, 1::2] if inverse else m[0::2] + 1j * m[1::2]
    return (m.conj() if conjugate else m).astype(dtype)


def _fft(xp, name, *args, **kwargs):
    """xp.fft's ``name``; on the CPU SciPy's, on every core (NumPy's FFT
    runs on one)."""
    if xp is numpy:
        return getattr(scipy.fft, name)(*args, workers=-1, **kwargs)
    return getattr(xp.fft, name)(*args, **kwargs)


def _by_frequency(a):
    """Spectra (N, C, L1, L2h) -> (F, N, C): one GEMM operand a frequency."""
    n, c = a.shape[:2]
    return backend.get_array_module(a).ascontiguousarray(
        a.reshape(n, c, -1).transpose(2, 0, 1))


def _by_image(a, grid):
    """Inverse of _by_frequency: (F, N, C) -> (N, C, L1, L2h)."""
    return a.transpose(1, 2, 0).reshape(a.shape[1:] + (
        grid[0], grid[1] // 2 + 1))


class FourierConvolution2D(chainer.Function):
    """y = conv(x, W) + b, stride 1, ``pad`` zeros on every side, through the
    FFT; NCHW as Chainer's convolution_2d.

    x (N, C, H, W), W (O, C, K, K), b (O,) -> y (N, O, H + 2p - K + 1, ...).
    The padded input is the grid L = (H + 2p, W + 2p); the correlation of the
    grid with the kernel, and the full convolution of gy with it, fit in it
    without wrapping around. Keeps the spectrum of x (F, N, C) and the
    conjugate spectrum of W (F, C, O), complex, for the backward pass.
    """

    def __init__(self, pad, need_gx):
        self.pad = pad
        self.need_gx = need_gx

    def forward(self, inputs):
        xp = backend.get_array_module(*inputs)
        x, W, b = inputs
        p = self.pad
        o, c, kh, kw = W.shape
        self.grid = (x.shape[2] + 2 * p, x.shape[3] + 2 * p)
        padded = xp.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        complex_type = numpy.result_type(x.dtype, numpy.complex64)
        self.x_f = _by_frequency(_fft(xp, 'rfft2', padded).astype(
            complex_type, copy=False))                       # (F, N, C)

        def conjugate_spectrum(W):                           # (F, C, O)
            dft = _beside(W, _complex_dft, self.grid, (kh, kw), False,
                          complex_type, True)
            w_d = W.transpose(2, 3, 1, 0).reshape(kh * kw, c * o)
            return dft.dot(w_d.astype(complex_type)).reshape(-1, c, o)
        self.w_fc = _weight_form(W, 'conjugate spectrum', conjugate_spectrum)
        y_f = xp.matmul(self.x_f, self.w_fc)        # correlation: X conj(W)
        y = _fft(xp, 'irfft2', _by_image(y_f, self.grid), s=self.grid)
        oh, ow = self.grid[0] - kh + 1, self.grid[1] - kw + 1
        return y[:, :, :oh, :ow].astype(x.dtype) + b[:, None, None],

    def backward(self, inputs, grad_outputs):
        xp = backend.get_array_module(*inputs)
        x, W, _ = inputs
        gy = grad_outputs[0]
        o, c, kh, kw = W.shape
        gy_fc = _by_frequency(_fft(xp, 'rfft2', gy, s=self.grid).conj())
        # gW: correlation of x with gy, GW = X^T conj(GY), summed over N
        gw_f = xp.matmul(self.x_f.transpose(0, 2, 1), gy_fc)  # (F, C, O)
        self.x_f = None
        inverse = _beside(x, _complex_dft, self.grid, (kh, kw), True,
                          gw_f.dtype)
        gW = inverse.dot(gw_f.reshape(len(gw_f), -1)).real    # (K*K, C*O)
        del gw_f
        gW = gW.reshape(kh, kw, c, o).transpose(3, 2, 0, 1)
        gx = None
        if self.need_gx:
            # gx: full convolution of gy with W, GX = GY W = conj(conj(GY)
            # conj(W)), (F, N, C)
            gx_f = xp.matmul(gy_fc, self.w_fc.transpose(0, 2, 1)).conj()
            gx = _fft(xp, 'irfft2', _by_image(gx_f, self.grid), s=self.grid)
            p, (h, w) = self.pad, x.shape[2:]
            gx = gx[:, :, p:p + h, p:p + w].astype(x.dtype)
        self.w_fc = None
        return gx, gW.astype(W.dtype), gy.sum(axis=(0, 2, 3))


def convolution_2d(x, W, b, pad=0):
    """Stride-1 convolution of NCHW ``x`` (N, C, H, W) with ``W``
    (O, C, K, K) and ``pad`` zeros on every side, through the FFT."""
    need_gx = isinstance(x, chainer.Variable) and x.requires_grad
    return FourierConvolution2D(pad, need_gx)(x, W, b)


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
        w_t = _weight_form(W, 'rows', lambda W: xp.ascontiguousarray(
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
        self.length = numpy.sqrt((v * v).sum(axis=-1) + v.dtype.type(EPS))
        return self.length,

    def backward(self, inputs, grad_outputs):
        v, = inputs
        return (grad_outputs[0] / self.length)[..., None] * v,


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
    """x (N, J*D) -> ReLU(W1 x + b1) -> ReLU(W2 . + b2) ->
    sigmoid(W3 . + b3) (N, H*W); each W (out, in) as in Chainer's Linear.
    Keeps both hidden layers and the output for the backward pass."""

    def forward(self, inputs):
        xp = backend.get_array_module(*inputs)
        x, W1, b1, W2, b2, W3, b3 = inputs
        self.h1 = xp.maximum(x.dot(W1.T) + b1, 0)
        self.h2 = xp.maximum(self.h1.dot(W2.T) + b2, 0)
        z = self.h2.dot(W3.T) + b3
        self.y = xp.tanh(z * z.dtype.type(0.5)) * 0.5 + 0.5  # sigmoid(z)
        return self.y,

    def backward(self, inputs, grad_outputs):
        x, W1, _, W2, _, W3, _ = inputs
        g3 = grad_outputs[0] * self.y * (1 - self.y)
        g2 = g3.dot(W3) * (self.h2 > 0)
        g1 = g2.dot(W2) * (self.h1 > 0)
        return (g1.dot(W1), g1.T.dot(x), g1.sum(axis=0),
                g2.T.dot(self.h1), g2.sum(axis=0),
                g3.T.dot(self.h2), g3.sum(axis=0))


def decoder(x, W1, b1, W2, b2, W3, b3):
    """Same as functions.decoder."""
    return Decoder()(x, W1, b1, W2, b2, W3, b3)


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
