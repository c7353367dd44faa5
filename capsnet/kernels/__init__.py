"""The fast kernels: every hand-written forward and backward, by op name.

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

The ops are those names below; capsnet/ops.py takes an op from here where
it is one of them. ``convolution.py`` holds the convolution methods,
``capsules.py`` the capsule kernels, ``frozen.py`` the weight forms kept
through an evaluation pass; the parallel map they share with Adam is
capsnet/parallel.py.
"""
from capsnet.kernels.capsules import capsule_predictions  # noqa: F401
from capsnet.kernels.capsules import decoder  # noqa: F401
from capsnet.kernels.capsules import dynamic_routing  # noqa: F401
from capsnet.kernels.capsules import length  # noqa: F401
from capsnet.kernels.capsules import margin_loss  # noqa: F401
from capsnet.kernels.capsules import masked_capsules  # noqa: F401
from capsnet.kernels.capsules import reconstruction_loss  # noqa: F401
from capsnet.kernels.capsules import squash  # noqa: F401
from capsnet.kernels.convolution import convolution_2d  # noqa: F401
from capsnet.kernels.convolution import convolution_2d_nhwc  # noqa: F401
from capsnet.kernels.convolution import convolution_relu_nhwc  # noqa: F401
from capsnet.kernels.frozen import frozen_weights  # noqa: F401
