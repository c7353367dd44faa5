"""The convolutions, fast: PrimaryCaps' stride-2 convolution through the
DFT (or, for a few images, one GEMM over the patches), conv1 with its ReLU
as one GEMM, and the baseline's padded convolutions through the FFT.

Axis names: N batch, C channels, O output channels, K kernel side, F
frequencies.
"""
import functools

import numpy
import scipy.fft

import chainer
from chainer import backend

from capsnet.kernels import frozen
from capsnet.kernels.frozen import weight_form


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
        self.w_f = weight_form(W, 'spectrum', spectrum)
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
    is_frozen = frozen.active()
    method = (DirectConvolution2DNHWC if len(x) < (
        SPECTRAL_FROM_FROZEN if is_frozen else SPECTRAL_FROM)
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
        self.w_fc = weight_form(W, 'conjugate spectrum', conjugate_spectrum)
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
