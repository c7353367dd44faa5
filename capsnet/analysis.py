"""Looking inside a trained CapsNet: accuracy, reconstructions, masks,
interpolations, routing.

The functions take a model already on its device; the image functions return
NumPy arrays of images (values in [0, 1]), which ``capsnet.figures`` draws.
"""
import numpy

import chainer
from chainer import backend
from chainer.datasets import TupleDataset

from capsnet.data import BatchConverter
from capsnet.data import place_on_canvas
from capsnet.errors import UserError
from capsnet.functions import multi_correct
from capsnet.multimnist import FixedPairConverter

# Figure 4 of the paper: each dimension tweaked over [-0.25, 0.25] by 0.05.
DELTAS = numpy.arange(-5, 6) * 0.05


def pictures(x):
    """Images (N, C, S, S) -> what figures draw: (N, S, S) grey, or
    (N, S, S, 3) colour."""
    x = backend.CpuDevice().send(x)
    return x[:, 0] if x.shape[1] == 1 else x.transpose(0, 2, 3, 1)


def class_names(model):
    """The model's class names: its data's, or the class numbers."""
    return model.options['class_names'] or [
        str(j) for j in range(model.options['n_classes'])]


def digit_capsules(model, x):
    """v (N, J, 16) and the predicted classes (N,) for images x on device."""
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        v, _ = model.capsules(x)
    lengths = model.xp.sqrt((v.array ** 2).sum(axis=2))
    return v.array, lengths.argmax(axis=1)


def model_input(model, images):
    """Images (N, 1, H, W) in [0, 255] as the model's input: float32 in
    [0, 1], centred on its canvas if it takes larger images (--canvas)."""
    images = place_on_canvas(images, model.options['in_size']) \
        if images.shape[-1] != model.options['in_size'] else images
    return images.astype(numpy.float32) / 255


def _scores(model, dataset, converter, device, batchsize):
    """Yield (class scores (B, J), labels) batch by batch, on the device."""
    for start in range(0, len(dataset), batchsize):
        x, t, *_ = converter(dataset[start:start + batchsize], device)
        with chainer.using_config('train', False), \
                chainer.no_backprop_mode():
            yield model.predict(x).array, t


def accuracy(model, images, labels, device, batchsize=256):
    """Fraction of ``images`` (N, 1, H, W) in [0, 255] whose highest class
    score (a CapsNet's longest capsule) is their label."""
    dataset = TupleDataset(images, labels)
    converter = BatchConverter(canvas=model.options['in_size'])
    correct = sum(int((scores.argmax(axis=1) == t).sum()) for scores, t in
                  _scores(model, dataset, converter, device, batchsize))
    return correct / len(images)


def pair_correct(model, pairs, device, batchsize=256):
    """For MultiMNIST ``pairs`` (multimnist.fixed_pairs) -> (N,) bool:
    whether the two highest class scores are the pair's two digits. The
    images are cropped or padded to the model's input size."""
    converter = FixedPairConverter(model.options['in_size'])
    return numpy.concatenate([
        backend.CpuDevice().send(multi_correct(scores, t)) for scores, t in
        _scores(model, pairs, converter, device, batchsize)])


def routing_maps(model, x):
    """The couplings c_ij of the last routing iteration, on the primary grid.

    x (N, 1, H, W) -> (per_type (N, J, T, G, G), mean (N, J, G, G)): for each
    digit capsule j, the coupling of the primary capsule of each type t at
    each grid position; ``mean`` averages the T types, so it sums to 1 over
    the J digit capsules at every position (1/J everywhere without routing).
    """
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        _, c = model.capsules(x)                           # (N, J, I)
    if c is None:
        raise UserError('the {} router keeps no couplings to draw'.format(
            model.options['router']))
    c = backend.CpuDevice().send(c)
    n, j, _ = c.shape
    g, t = model.grid, c.shape[2] // model.grid ** 2
    # capsule i = (y * G + x) * T + t
    per_type = c.reshape(n, j, g, g, t).transpose(0, 1, 4, 2, 3)
    return per_type, per_type.mean(axis=2)


def decode(model, v, labels):
    """Images (N, H, W) (or (N, H, W, 3) in colour) decoded from capsule
    labels[n] of v (N, J, 16)."""
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        recon = model.decode(v, model.xp.asarray(labels))
    side = model.options['in_size']
    return pictures(backend.CpuDevice().send(recon.array).reshape(
        len(v), -1, side, side))


def mask_grid(model, x):
    """(J, N, H, W): row j decodes every image from digit capsule j alone."""
    v, _ = digit_capsules(model, x)
    j = v.shape[1]
    return numpy.stack([decode(model, v, numpy.full(len(v), k)) for k in
                        range(j)])


def interpolation_grid(model, x, digit, deltas=DELTAS):
    """(16, len(deltas), H, W): row k adds each delta to dimension k of the
    ``digit`` capsule of the single image x (1, 1, H, W), then decodes it."""
    v, _ = digit_capsules(model, x)                        # (1, J, D)
    d = v.shape[2]
    xp = model.xp
    tweaked = xp.repeat(v, d * len(deltas), axis=0)        # (D*K, J, D)
    offsets = xp.asarray(deltas, dtype=v.dtype)
    for k in range(d):
        tweaked[k * len(deltas):(k + 1) * len(deltas), digit, k] += offsets
    images = decode(model, tweaked, numpy.full(len(tweaked), digit))
    return images.reshape(d, len(deltas), *images.shape[1:])


def pair_figure(model, x, labels):
    """The paper's Figure 5 for MultiMNIST pairs x (N, 1, S, S) on the
    device with labels (N, 2).

    -> rows (3, N, S, S, 3) RGB in [0, 1]: the inputs; the reconstructions
    from the two longest capsules, red and green; from the first digit's
    capsule (red) and from the longest capsule of a digit not present
    (green). Also returns longest (N, 2) and absent (N,): those capsules.
    """
    v, _ = digit_capsules(model, x)
    lengths = backend.CpuDevice().send(model.xp.sqrt((v ** 2).sum(axis=2)))
    order = numpy.argsort(-lengths, axis=1)                     # (N, J)
    longest = order[:, :2]
    not_present = ~(order[:, :, None] == labels[:, None, :]).any(axis=2)
    absent = order[numpy.arange(len(order)), not_present.argmax(axis=1)]

    def overlay(red, green):
        return numpy.stack([red, green, numpy.zeros_like(red)], axis=-1)

    inputs = backend.CpuDevice().send(x)[:, 0]
    rows = [numpy.repeat(inputs[..., None], 3, axis=-1),
            overlay(decode(model, v, longest[:, 0]),
                    decode(model, v, longest[:, 1])),
            overlay(decode(model, v, labels[:, 0]), decode(model, v, absent))]
    return numpy.stack(rows), longest, absent


def check_capsules(model):
    """The figures and the explorer need capsules and a decoder."""
    if model.arch != 'capsnet':
        raise UserError('the {} has no capsules to look inside: only '
                        '--evaluate applies'.format(model.arch))
    if not model.options['reconstruct']:
        raise UserError('this model has no decoder (trained with '
                        '--no-reconstruct): only --evaluate applies')
