"""Capsule functions as plain compositions of Chainer functions.

The readable reference versions of everything ``capsnet/kernels/``
implements fast with the same signatures: squash, length, the two losses,
the masked decoder input and the decoder, convolution_relu_nhwc,
convolution_2d_nhwc, convolution_2d, capsule_predictions and
dynamic_routing.

Axis names: N batch, P grid positions, T capsule types, I = P*T child
capsules, J parent capsules, K child dimensions, D parent dimensions.
"""
import chainer
import chainer.functions as F
from chainer import backend

EPS = 1e-8  # inside every square root: zero vectors give finite gradients
# The official code halves Eq. 4 and averages it over the J classes
OFFICIAL_MARGIN_SCALE = 0.5


def squash(s, axis=-1, eps=EPS):
    """v = |s|^2 / (1 + |s|^2) * s / |s|, along ``axis``; same shape as ``s``.

    The norm is sqrt(|s|^2 + EPS), so squash(0) = 0 with a finite gradient.
    """
    sq_norm = F.sum(s * s, axis=axis, keepdims=True)
    scale = sq_norm / (1 + sq_norm) / F.sqrt(sq_norm + eps)
    return s * F.broadcast_to(scale, s.shape)


def length(v, axis=-1):
    """Capsule lengths sqrt(|v|^2 + EPS): (N, J, D) -> (N, J)."""
    return F.sqrt(F.sum(v * v, axis=axis) + EPS)


def convolution_relu_nhwc(x, W, b, slope=0.0):
    """conv1: a stride-1 convolution and a ReLU (leaky with slope > 0),
    put channels last. x (N, C, H, W), W (O, C, K, K), b (O,) ->
    (N, H - K + 1, W - K + 1, O)."""
    h = F.convolution_2d(x, W, b)
    h = F.leaky_relu(h, slope) if slope else F.relu(h)
    return F.transpose(h, (0, 2, 3, 1))


def convolution_2d_nhwc(x, W, b, stride=1):
    """x (N, H, W, C), W (O, K, K, C), b (O,) -> (N, OH, OW, O), no padding,
    through Chainer's own NCHW convolution."""
    y = F.convolution_2d(F.transpose(x, (0, 3, 1, 2)),
                         F.transpose(W, (0, 3, 1, 2)), b, stride=stride)
    return F.transpose(y, (0, 2, 3, 1))


def convolution_2d(x, W, b, pad=0):
    """Stride-1 convolution: x (N, C, H, W), W (O, C, K, K), b (O,) ->
    (N, O, H + 2 pad - K + 1, W + 2 pad - K + 1)."""
    return F.convolution_2d(x, W, b, pad=pad)


def capsule_predictions(u, W):
    """u_hat[n, j, p, t] = W[p, t, j] @ u[n, p, t] (W[0, t, j] if shared).

    u (N, G, G, T, K) or any (N, ..., T, K): capsule type t at grid
    position p; W (P*T or T, J, D, K): one matrix per child capsule i =
    p * T + t, or one per type. -> u_hat (N, J, P*T, D).
    """
    n, t, k = u.shape[0], u.shape[-2], u.shape[-1]
    u = F.reshape(u, (n, -1, t, k))
    p = u.shape[1]
    j, d = W.shape[1:3]
    W = F.broadcast_to(F.reshape(W, (-1, t, j, d, k)),
                       (p, t, j, d, k))                    # share over P
    u_rows = F.broadcast_to(F.transpose(u, (1, 2, 0, 3))[:, :, None],
                            (p, t, j, n, k))
    u_hat = F.matmul(F.reshape(u_rows, (p * t * j, n, k)),
                     F.reshape(W, (p * t * j, d, k)), transb=True)
    u_hat = F.transpose(F.reshape(u_hat, (p, t, j, n, d)), (3, 2, 0, 1, 4))
    return F.reshape(u_hat, (n, j, p * t, d))


def dynamic_routing(u_hat, iterations, eps=EPS, bias=None, leaky=False):
    """Routing by agreement (the paper's Procedure 1).

    Args:
        u_hat: predictions u_hat_{j|i}, (N, J, I, D).
        iterations: r >= 1. Logits b_ij start at 0, so r = 1 gives the
            uniform coupling 1/J.
        bias: None (the paper), or a (J, D) bias added to every s_j before
            the squash, in every iteration (the official code).
        leaky: each softmax also sees a logit fixed at 0, a parent that
            absorbs what no digit explains (the official code's leaky
            routing); the couplings to the J parents then sum to under 1.

    Returns:
        v: parent capsules, (N, J, D).
        c: the coupling coefficients used for v, (N, J, I); softmax over J.

    Gradients flow through every iteration, the agreement updates included.
    """
    xp = backend.get_array_module(u_hat)
    n, j, i, d = u_hat.shape
    u_rows = F.reshape(u_hat, (n * j, i, d))              # one (I, D) per (n, j)
    b = xp.zeros((n, j, i), dtype=u_hat.dtype)
    for r in range(iterations):
        if leaky:
            none = xp.zeros((n, 1, i), dtype=u_hat.dtype)
            c = F.softmax(F.concat((b, none), axis=1), axis=1)[:, :j]
        else:
            c = F.softmax(b, axis=1)                      # (N, J, I)
        s = F.matmul(F.reshape(c, (n * j, 1, i)), u_rows)  # (N*J, 1, D)
        s = F.reshape(s, (n, j, d))
        if bias is not None:
            s = s + F.broadcast_to(bias, s.shape)
        v = squash(s, eps=eps)                            # (N, J, D)
        if r < iterations - 1:
            agreement = F.matmul(u_rows, F.reshape(v, (n * j, d, 1)))
            b = b + F.reshape(agreement, (n, j, i))       # u_hat_{j|i} . v_j
    return v, c


def presence(labels, n_classes, dtype):
    """Class ids (N,), or (N, K) of K distinct classes present in each image,
    -> 0/1 presence (N, n_classes)."""
    xp = backend.get_array_module(labels)
    one_hot = xp.eye(n_classes, dtype=dtype)[labels.reshape(len(labels), -1)]
    return one_hot.sum(axis=1)                            # (N, n_classes)


def margin_loss(lengths, labels, m_pos=0.9, m_neg=0.1, lam=0.5, scale=1.0):
    """Margin loss, summed over classes and averaged over the batch.

    Args:
        lengths: capsule lengths, (N, J).
        labels: class ids (N,), or (N, K) for images holding K distinct
            classes (MultiMNIST: K = 2).
        scale: 1 is the paper's Eq. 4; the official code's loss is
            OFFICIAL_MARGIN_SCALE / J of it.
    """
    present = presence(labels, lengths.shape[1], lengths.dtype)
    loss = (present * F.relu(m_pos - lengths) ** 2
            + lam * (1 - present) * F.relu(lengths - m_neg) ** 2)
    return F.sum(loss) * (scale / len(present))


def multi_correct(scores, labels):
    """The paper's MultiMNIST criterion: whether the K highest scores
    (capsule lengths) of each image are exactly its K classes.
    scores (N, J) array, labels (N, K) -> (N,) bool."""
    xp = backend.get_array_module(scores)
    k = labels.shape[1]
    highest = xp.argsort(scores, axis=1)[:, -k:]                 # (N, K)
    return (xp.sort(highest, axis=1) == xp.sort(labels, axis=1)).all(axis=1)


def multi_accuracy(lengths, labels):
    """``multi_correct``'s mean: lengths (N, J), labels (N, K) -> scalar."""
    correct = multi_correct(chainer.as_array(lengths), labels)
    return correct.mean(dtype=lengths.dtype)


def masked_capsules(v, labels):
    """The decoder's input: v (N, J, D) with every capsule but labels[n]
    set to zero, flattened -> (N, J * D)."""
    xp = backend.get_array_module(v)
    n, j, d = v.shape
    mask = xp.eye(j, dtype=v.dtype)[labels]                # (N, J)
    return F.reshape(v * F.broadcast_to(mask[:, :, None], v.shape),
                     (n, j * d))


def decoder(x, *layers):
    """The reconstruction network: x (N, J*D) through the Linear layers
    W1, b1, W2, b2, ... (each W (out, in) as in Chainer's Linear), a ReLU
    after each but the last and a sigmoid after it -> (N, C*H*W) in [0, 1]
    (the model's: 512 -> 1024 -> pixels)."""
    *hidden, (W, b) = zip(layers[0::2], layers[1::2])
    h = x
    for W_k, b_k in hidden:
        h = F.relu(F.linear(h, W_k, b_k))
    return F.sigmoid(F.linear(h, W, b))


def reconstruction_loss(reconstruction, x):
    """Sum of squared errors per image, averaged over the batch.

    ``reconstruction`` is (N, P); ``x`` has N * P elements (e.g. (N, 1, H, W)).
    """
    target = x.reshape(reconstruction.shape)
    return F.sum(F.squared_difference(reconstruction, target)) / len(target)
