"""Convolution on channels-last (NHWC) tensors, the one hand-written kernel.

Chainer's generic CPU convolution builds an im2col array laid out
(N, C, KH, KW, OH, OW), then ``tensordot`` copies it once more into GEMM
order, for the whole batch at once: for PrimaryCaps at batch 128 that is two
copies of 382 MB. Here the patches are a strided *view* of the NHWC input, laid
out (N, OH, OW, KH, KW, C), so one copy gives the GEMM its (rows, K) matrix, and
the batch is processed in chunks so that copy stays small (``CHUNK_BYTES``).
The backward pass recomputes the patches chunk by chunk instead of keeping them.

Shapes: x (N, H, W, C), W (O, KH, KW, C), b (O,), y (N, OH, OW, O); no padding,
OH = (H - KH) // stride + 1. Works on NumPy and CuPy arrays alike.
"""
import chainer
from chainer import backend
from chainer import initializers

# Largest im2col chunk, in bytes. Big enough that each GEMM runs near peak,
# small enough to keep peak memory far below one batch's full im2col array.
CHUNK_BYTES = 64 * 2 ** 20


def _patches(x, kh, kw, stride):
    """(N, OH, OW, KH, KW, C) view of a C-contiguous NHWC array, no copy."""
    xp = backend.get_array_module(x)
    n, h, w, c = x.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    sn, sh, sw, sc = x.strides
    return xp.lib.stride_tricks.as_strided(
        x, (n, oh, ow, kh, kw, c), (sn, sh * stride, sw * stride, sh, sw, sc))


def _chunks(x, kh, kw, stride):
    """Yield (batch slice, im2col matrix (rows, KH*KW*C)) chunk by chunk."""
    patches = _patches(x, kh, kw, stride)
    n, oh, ow = patches.shape[:3]
    bytes_per_image = patches[0].size * x.dtype.itemsize
    step = max(1, CHUNK_BYTES // bytes_per_image)
    for start in range(0, n, step):
        batch = slice(start, min(n, start + step))
        # reshape of the strided view is the one copy
        yield batch, patches[batch].reshape(-1, kh * kw * x.shape[3])


class Convolution2DNHWC(chainer.Function):
    """y = conv(x, W) + b on NHWC arrays (see the module docstring)."""

    def __init__(self, stride, need_gx):
        self.stride = stride
        self.need_gx = need_gx

    def forward(self, inputs):
        xp = backend.get_array_module(*inputs)
        x, W, b = inputs
        x = xp.ascontiguousarray(x)
        o, kh, kw, c = W.shape
        w_mat = W.reshape(o, -1)                          # (O, K)
        n, h, w, _ = x.shape
        oh, ow = (h - kh) // self.stride + 1, (w - kw) // self.stride + 1
        rows = oh * ow                                    # GEMM rows per image
        out = xp.empty((n * rows, o), dtype=x.dtype)
        for batch, col in _chunks(x, kh, kw, self.stride):
            out[batch.start * rows:batch.stop * rows] = col.dot(w_mat.T)
        out += b
        return out.reshape(n, oh, ow, o),

    def backward(self, inputs, grad_outputs):
        xp = backend.get_array_module(*inputs)
        x, W, _ = inputs
        x = xp.ascontiguousarray(x)
        o, kh, kw, c = W.shape
        s = self.stride
        gy = grad_outputs[0]
        n, oh, ow, _ = gy.shape
        gy_mat = xp.ascontiguousarray(gy).reshape(-1, o)   # (N*OH*OW, O)
        w_mat = W.reshape(o, -1)                          # (O, K)
        gW = xp.zeros_like(w_mat)
        gx = xp.zeros_like(x) if self.need_gx else None
        rows = oh * ow
        for batch, col in _chunks(x, kh, kw, s):
            g = gy_mat[batch.start * rows:batch.stop * rows]
            gW += g.T.dot(col)
            if gx is not None:
                # col2im: scatter-add each kernel offset's slice back
                gcol = g.dot(w_mat).reshape(-1, oh, ow, kh, kw, c)
                gxb = gx[batch]
                for i in range(kh):
                    for j in range(kw):
                        gxb[:, i:i + s * oh:s, j:j + s * ow:s] += \
                            gcol[:, :, :, i, j]
        return gx, gW.reshape(W.shape), gy_mat.sum(axis=0)


def convolution_2d_nhwc(x, W, b, stride=1):
    """Convolution of NHWC ``x`` (N, H, W, C) with ``W`` (O, KH, KW, C)."""
    need_gx = isinstance(x, chainer.Variable) and x.requires_grad
    return Convolution2DNHWC(stride, need_gx)(x, W, b)


class Convolution2DNHWCLink(chainer.Link):
    """A convolution layer on NHWC tensors; same initialisers as
    ``L.Convolution2D`` (LeCun normal weights, zero bias)."""

    def __init__(self, in_channels, out_channels, ksize, stride=1):
        super().__init__()
        self.stride = stride
        with self.init_scope():
            self.W = chainer.Parameter(
                initializers.LeCunNormal(),
                (out_channels, ksize, ksize, in_channels))
            self.b = chainer.Parameter(0, (out_channels,))

    def forward(self, x):
        return convolution_2d_nhwc(x, self.W, self.b, self.stride)
