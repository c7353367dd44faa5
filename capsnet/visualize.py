"""Looking inside a trained CapsNet: reconstructions, masks, interpolations.

Every function takes a model already on its device and returns NumPy arrays of
images (values in [0, 1]); ``save_grid`` draws any such grid to a PNG.
"""
import numpy

import chainer
from chainer import backend

from capsnet.checkpoint import atomic_write

# Figure 4 of the paper: each dimension tweaked over [-0.25, 0.25] by 0.05.
DELTAS = numpy.round(numpy.arange(-0.25, 0.2501, 0.05), 2)


def _to_images(recon, side):
    return backend.CpuDevice().send(recon.array).reshape(-1, side, side)


def digit_capsules(model, x):
    """v (N, J, 16) and the predicted classes (N,) for images x on device."""
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        v, _ = model.capsules(x)
    lengths = model.xp.sqrt((v.array ** 2).sum(axis=2))
    return v.array, lengths.argmax(axis=1)


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


def save_grid(path, rows, row_labels=(), col_labels=(), title=None,
              marked_col=None):
    """Draw a grid of grey images (R, C, H, W) to a PNG; ``marked_col`` gets
    a red frame (e.g. the untweaked column of an interpolation)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    rows = numpy.asarray(rows)
    n_rows, n_cols = rows.shape[:2]
    fig, axes = plt.subplots(n_rows, n_cols, squeeze=False,
                             figsize=(0.6 * n_cols + 0.8, 0.6 * n_rows + 0.6))
    for r in range(n_rows):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.imshow(rows[r, c], cmap='gray', vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            marked = c == marked_col
            for spine in ax.spines.values():
                spine.set_visible(marked)
                spine.set_color('red')
                spine.set_linewidth(2)
        if r < len(row_labels):
            axes[r, 0].set_ylabel(row_labels[r], rotation=0, ha='right',
                                  va='center', fontsize=7)
    for c, label in enumerate(col_labels):
        axes[0, c].set_title(label, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=100,
                                             bbox_inches='tight'))
    plt.close(fig)
