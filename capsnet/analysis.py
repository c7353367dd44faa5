"""Looking inside a trained CapsNet: accuracy, reconstructions, masks,
interpolations.

The functions take a model already on its device; the image functions return
NumPy arrays of images (values in [0, 1]) and ``save_grid`` draws any such
grid to a PNG.
"""
import numpy

import chainer
from chainer import backend
from chainer.datasets import TupleDataset

from capsnet.checkpoint import atomic_write
from capsnet.data import BatchConverter
from capsnet.data import place_on_canvas
from capsnet.functions import multi_correct
from capsnet.multimnist import FixedPairConverter

# Figure 4 of the paper: each dimension tweaked over [-0.25, 0.25] by 0.05.
DELTAS = numpy.arange(-5, 6) * 0.05


def _to_images(recon, side):
    return backend.CpuDevice().send(recon.array).reshape(-1, side, side)


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
    c = backend.CpuDevice().send(c.array)
    n, j, _ = c.shape
    g, t = model.grid, c.shape[2] // model.grid ** 2
    # capsule i = (y * G + x) * T + t
    per_type = c.reshape(n, j, g, g, t).transpose(0, 1, 4, 2, 3)
    return per_type, per_type.mean(axis=2)


def decode(model, v, labels):
    """Images (N, H, W) decoded from capsule labels[n] of v (N, J, 16)."""
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        recon = model.decode(v, model.xp.asarray(labels))
    return _to_images(recon, model.options['in_size'])


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


def save_routing(path, image, maps, truth, predicted):
    """One image beside its J coupling heatmaps (J, G, G); the predicted
    digit's map is framed in red."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    j = len(maps)
    fig, axes = plt.subplots(1, j + 1, figsize=(1.1 * (j + 1) + 0.8, 1.7))
    axes[0].imshow(image, cmap='gray', vmin=0, vmax=1)
    axes[0].set_title('label {}\npredicted {}'.format(truth, predicted),
                      fontsize=7)
    for k, ax in enumerate(axes[1:]):
        shown = ax.imshow(maps[k], cmap='viridis', vmin=0,
                          vmax=max(float(maps.max()), 1e-6))
        ax.set_title('capsule {}'.format(k), fontsize=7,
                     color='red' if k == predicted else 'black')
        for spine in ax.spines.values():
            spine.set_color('red' if k == predicted else 'black')
            spine.set_linewidth(2 if k == predicted else 0.5)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=list(axes), fraction=0.02, pad=0.01)
    fig.suptitle('Coupling c_ij after the last routing iteration, averaged '
                 'over the capsule types at each grid position', fontsize=8)
    atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=110,
                                             bbox_inches='tight'))
    plt.close(fig)


def save_grid(path, rows, row_labels=(), col_labels=(), title=None,
              marked_col=None):
    """Draw images (R, C, H, W), grey, or (R, C, H, W, 3), RGB, in [0, 1]
    as one mosaic PNG, rows and columns labelled; ``marked_col`` gets a red
    frame (e.g. the untweaked column of an interpolation)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    rows = numpy.asarray(rows, dtype=numpy.float32)
    n_rows, n_cols, h, w = rows.shape[:4]
    rgb = rows.shape[4:]                                    # () or (3,)
    gap = 2
    # white gaps between tiles: pad each tile's bottom and right, then tile
    tiles = numpy.pad(rows, [(0, 0), (0, 0), (0, gap), (0, gap)] +
                      [(0, 0)] * len(rgb), constant_values=1)
    mosaic = tiles.swapaxes(1, 2).reshape(
        n_rows * (h + gap), n_cols * (w + gap), *rgb)[:-gap, :-gap]
    inch = 0.42 / h                                  # a tile is 0.42 in
    fig, ax = plt.subplots(figsize=(mosaic.shape[1] * inch + 1.0,
                                    mosaic.shape[0] * inch + 0.8))
    ax.imshow(mosaic, cmap='gray', vmin=0, vmax=1, interpolation='nearest')
    ax.set_xticks([c * (w + gap) + w / 2 - 0.5 for c in range(len(col_labels))])
    ax.set_xticklabels(col_labels, fontsize=7)
    ax.xaxis.tick_top()
    ax.set_yticks([r * (h + gap) + h / 2 - 0.5 for r in range(len(row_labels))])
    ax.set_yticklabels(row_labels, fontsize=7)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if marked_col is not None:
        ax.add_patch(matplotlib.patches.Rectangle(
            (marked_col * (w + gap) - 1.5, -1.5), w + 2, mosaic.shape[0] + 2,
            fill=False, edgecolor='red', linewidth=1.5))
    if title:
        ax.set_title(title, fontsize=9, pad=14)
    atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=110,
                                             bbox_inches='tight'))
    plt.close(fig)
