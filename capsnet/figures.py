"""The figures of ``analyze.py``: compositions of what ``capsnet.analysis``
computes, drawn to PNG files.

    reconstructions.png    test inputs over their reconstructions
    mask_grid.png          two test images per digit, then one row per mask
    interpolation_<d>.png  16 dimensions x 11 tweaks (the paper's Figure 4)
    routing_<k>.png        test image k's couplings over the primary grid
    multimnist.png         pairs and their reconstructions (Figure 5)
"""
import os

import numpy

import chainer

from capsnet import analysis
from capsnet import multimnist
from capsnet.files import write_png
from capsnet.errors import UserError


def render(model, images, labels, device, out):
    """The reconstruction, mask and interpolation figures; returns paths."""
    n_classes = model.options['n_classes']
    paths = []

    def path(name):
        paths.append(os.path.join(out, name))
        return paths[-1]

    # two test images per class, in class order
    picks = numpy.concatenate(
        [numpy.flatnonzero(labels == d)[:2] for d in range(n_classes)])
    if len(picks) < 2 * n_classes:
        raise UserError('the test images hold fewer than two of each class')
    inputs = analysis.model_input(model, images[picks])
    x = device.send(inputs)
    inputs = analysis.pictures(inputs)
    names = analysis.class_names(model)
    v, predicted = analysis.digit_capsules(model, x)
    predicted = chainer.backend.CpuDevice().send(predicted)
    reconstructed = analysis.decode(model, v, predicted)
    truth = [names[t] for t in labels[picks]]
    save_grid(
        path('reconstructions.png'), [inputs, reconstructed],
        ['input', 'recon.'], ['{}->{}'.format(names[t], names[p])
                              for t, p in zip(labels[picks], predicted)],
        title='Inputs and their reconstructions from the longest capsule '
        '(true->predicted)')
    masks = analysis.mask_grid(model, x)
    save_grid(
        path('mask_grid.png'), [inputs, *masks],
        ['input'] + ['mask {}'.format(name) for name in names], truth,
        title='Reconstruction from each digit capsule alone')
    deltas = analysis.DELTAS
    for d in range(n_classes):
        # the first test image of class d
        grid = analysis.interpolation_grid(model, x[2 * d:2 * d + 1], d)
        save_grid(
            path('interpolation_{}.png'.format(d)), grid,
            ['dim {}'.format(k) for k in range(len(grid))],
            ['{:+.2f}'.format(t) for t in deltas],
            title='Class {}: each capsule dimension tweaked '
            '(red: untweaked)'.format(names[d]),
            marked_col=int(numpy.flatnonzero(deltas == 0)[0]))
    return paths


def render_routing(model, images, labels, device, out, indices, per_type):
    """routing_<k>.png (and routing_types_<k>.png) for test images k;
    returns their paths."""
    paths = []
    names = analysis.class_names(model)
    for k in indices:
        image = analysis.model_input(model, images[k:k + 1])
        x = device.send(image)
        types, mean = analysis.routing_maps(model, x)
        predicted = int(chainer.backend.CpuDevice().send(
            analysis.digit_capsules(model, x)[1])[0])
        paths.append(os.path.join(out, 'routing_{}.png'.format(k)))
        save_routing(paths[-1], analysis.pictures(image)[0], mean[0],
                     names[int(labels[k])], predicted, names)
        if per_type:
            paths.append(os.path.join(out, 'routing_types_{}.png'.format(k)))
            # rows: capsule types; columns: digit capsules
            save_grid(
                paths[-1], types[0].transpose(1, 0, 2, 3) / types[0].max(),
                ['type {}'.format(t) for t in range(types.shape[2])],
                ['capsule {}'.format(name) for name in names],
                title='Image {}: coupling of each capsule type (scaled to '
                'its maximum, {:.3f})'.format(k, float(types[0].max())))
    return paths


def render_pairs(model, images, labels, device, out, batchsize, shown=6,
                 wrong=2):
    """multimnist.png, the paper's Figure 5: the first ``shown`` test
    pairs, then the next ``wrong`` ones the model gets wrong (within the
    first 1,000), each over its reconstructions; returns its path."""
    pairs = multimnist.evaluation_pairs((images[:1000], labels[:1000]),
                                        multimnist.TEST_SEED)
    correct = analysis.pair_correct(model, pairs, device, batchsize)
    shown = min(shown, len(pairs))
    picks = numpy.concatenate([numpy.arange(shown), shown + numpy.flatnonzero(
        ~correct[shown:])[:wrong]])
    converter = multimnist.FixedPairConverter(model.options['in_size'])
    x, t, _ = converter([pairs[k] for k in picks], device)
    t = chainer.backend.CpuDevice().send(t)
    rows, longest, absent = analysis.pair_figure(model, x, t)
    path = os.path.join(out, 'multimnist.png')
    save_grid(
        path, rows, ['input', 'R: 2 longest', 'R: 1st, absent*'],
        ['L {},{}\nR {},{}\n* {},{}'.format(*t[n], *longest[n], t[n][0],
                                            absent[n])
         for n in range(len(picks))],
        title='MultiMNIST test pairs (L: labels) and reconstructions (R: '
        'from which capsules) in red and green; *: from a digit not present')
    return path


def save_routing(path, image, maps, truth, predicted, names):
    """One image beside its J coupling heatmaps (J, G, G), each named by
    its class (``names``); the predicted class's map (``predicted``, an
    index) is framed in red. ``truth``: the true class's name."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    j = len(maps)
    fig, axes = plt.subplots(1, j + 1, figsize=(1.1 * (j + 1) + 0.8, 1.7))
    axes[0].imshow(image, cmap='gray', vmin=0, vmax=1)
    axes[0].set_title('label {}\npredicted {}'.format(truth,
                                                     names[predicted]),
                      fontsize=7)
    for k, ax in enumerate(axes[1:]):
        shown = ax.imshow(maps[k], cmap='viridis', vmin=0,
                          vmax=max(float(maps.max()), 1e-6))
        ax.set_title(names[k], fontsize=7,
                     color='red' if k == predicted else 'black')
        for spine in ax.spines.values():
            spine.set_color('red' if k == predicted else 'black')
            spine.set_linewidth(2 if k == predicted else 0.5)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=list(axes), fraction=0.02, pad=0.01)
    # above the image's two-line title, not over it
    fig.suptitle('Coupling c_ij after the last routing iteration, averaged '
                 'over the capsule types at each grid position', fontsize=8,
                 y=1.12)
    write_png(path, fig, dpi=110, bbox_inches='tight')


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
    ax.set_xticks([c * (w + gap) + w / 2 - 0.5
                   for c in range(len(col_labels))])
    ax.set_xticklabels(col_labels, fontsize=7)
    ax.xaxis.tick_top()
    ax.set_yticks([r * (h + gap) + h / 2 - 0.5
                   for r in range(len(row_labels))])
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
    write_png(path, fig, dpi=110, bbox_inches='tight')
