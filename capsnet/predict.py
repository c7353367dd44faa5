"""A trained model on your own images: files or arrays in, classes out.

    import capsnet
    model = capsnet.load('saved_model')                  # gpu=0 for CuPy
    predicted, lengths = model.classify(['seven.png', 'two.jpg'])
    images = model.reconstruct(['seven.png'])            # (1, 28, 28)

An image is prepared as MNIST's digits were made (LeCun et al.): grey, a
light digit on a dark ground (a dark digit on a light ground is inverted),
cropped to the digit, scaled to fit 20x20 keeping its aspect, and placed in
28x28 with its centre of mass at the centre. Arrays that are already
MNIST-like (the model's side, light on dark) are taken as they are.

A model trained on your own data (``train.py --dataset PATH``) takes an
image as it is, in grey or colour as it was trained, scaled to its side.
"""
import os

import numpy

import chainer

from capsnet import analysis
from capsnet import model_file
from capsnet import cli
from capsnet import doubt
from capsnet import files
from capsnet import images
from capsnet.errors import UserError
from capsnet.images import subtract_ground

BOX = 20            # MNIST: the digit fits a 20x20 box in the 28x28 image
INK = 0.2           # a pixel this bright (of the brightest) is part of it


def read_image(path, channels=1):
    """The image file ``path`` (any format Pillow reads) as grey levels
    (H, W), or colour (H, W, 3) for ``channels`` 3, in [0, 1]; UserError
    naming the file if it cannot be read (capsnet/images.py)."""
    image, _ = images.read(path)
    pixels = numpy.asarray(image.convert('RGB' if channels == 3 else 'L'),
                           dtype=numpy.float32)
    return pixels / 255


def _border(grey):
    """The pixels on the edge of grey levels (H, W)."""
    return numpy.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])


def mnist_style(grey, side=28, name='the image'):
    """Grey levels (H, W) in [0, 1] -> the model's input (side, side)
    float32 in [0, 1], prepared as MNIST was (see the module's doc)."""
    from PIL import Image
    grey = numpy.asarray(grey, dtype=numpy.float32)
    border = _border(grey)
    if numpy.median(border) > 0.5:                  # dark ink on paper
        grey, border = 1 - grey, 1 - border
    grey = numpy.clip(grey - numpy.median(border), 0, 1)    # ground to 0
    if grey.max() <= 0:
        raise UserError('{} is blank: no digit to classify'.format(name))
    rows, cols = numpy.nonzero(grey >= INK * grey.max())
    digit = grey[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    box = BOX * side // 28
    scale = box / max(digit.shape)
    size = (max(1, round(digit.shape[1] * scale)),
            max(1, round(digit.shape[0] * scale)))        # PIL: (W, H)
    digit = numpy.asarray(Image.fromarray(digit).resize(
        size, Image.Resampling.LANCZOS), dtype=numpy.float32).clip(0, 1)
    # the centre of mass to the centre; what would leave the frame is cut
    h, w = digit.shape
    mass = digit.sum()
    cy = (digit.sum(axis=1) * numpy.arange(h)).sum() / mass
    cx = (digit.sum(axis=0) * numpy.arange(w)).sum() / mass
    top = int(round((side - 1) / 2 - cy))
    left = int(round((side - 1) / 2 - cx))
    out = numpy.zeros((side, side), dtype=numpy.float32)
    ys, xs = slice(max(top, 0), min(top + h, side)), slice(
        max(left, 0), min(left + w, side))
    out[ys, xs] = digit[ys.start - top:ys.stop - top,
                        xs.start - left:xs.stop - left]
    return out


class Model:
    """A trained model ready for inference on images (see the module's
    doc): ``classify`` and ``reconstruct`` take a batch of any size as an
    array (N, H, W), (N, H, W, 3) or (N, C, H, W), uint8 in [0, 255] or
    float in [0, 1], a single image, or image file paths."""

    def __init__(self, model, device, threshold=None):
        self.model = model
        self.device = device
        # capsnet/doubt.py: distances beyond it are doubtful (None: unknown)
        self.threshold = threshold
        self.side = model.options['in_size']
        self.channels = model.options['in_channels']
        # a model of one's own data takes its images as they are, scaled to
        # its side; an MNIST model takes them made as MNIST's were
        self.as_mnist = model.options['class_names'] is None and \
            self.channels == 1
        self.names = analysis.class_names(model)

    def prepare(self, image, name='the image'):
        """One image (H, W) or (H, W, 3) in [0, 1] -> (C, S, S)."""
        if self.as_mnist:
            if image.ndim == 3:
                image = image.mean(axis=2)
            return mnist_style(image, self.side, name)[None]
        from PIL import Image
        picture = Image.fromarray(numpy.uint8(numpy.round(image * 255)))
        picture = picture.convert('RGB' if self.channels == 3 else 'L')
        if picture.size != (self.side, self.side):
            picture = picture.resize((self.side, self.side),
                                     Image.Resampling.LANCZOS)
        x = numpy.asarray(picture, dtype=numpy.float32) / 255
        return x[None] if x.ndim == 2 else x.transpose(2, 0, 1)

    def inputs(self, images):
        """The model's input (N, C, S, S) float32 for ``images``, made as
        its training images were: their ground taken to black where the
        model's options say so."""
        x = self._sized(images)
        return subtract_ground(x) if self.model.options[
            'subtract_ground'] else x

    def _sized(self, images):
        """(N, C, S, S) float32 in [0, 1] of the model's side for
        ``images``."""
        if isinstance(images, (str, os.PathLike)):
            images = [images]
        if isinstance(images, (list, tuple)) and images and isinstance(
                images[0], (str, os.PathLike)):
            return numpy.stack([self.prepare(read_image(p, self.channels),
                                              p) for p in images])
        if chainer.backend.get_array_module(images) is not numpy:
            images = chainer.backend.CpuDevice().send(images)   # CuPy
        x = numpy.asarray(images)
        x = x.astype(numpy.float32) / 255 if x.dtype == numpy.uint8 else \
            x.astype(numpy.float32)
        if x.ndim == 2 or (x.ndim == 3 and x.shape[-1] == 3 and
                           self.channels == 3):
            x = x[None]                                 # one image
        if x.ndim == 4 and x.shape[1] in (1, 3):        # (N, C, H, W)
            if x.shape[1:] == (self.channels, self.side, self.side):
                return self._on_dark_ground(x)
            x = x.transpose(0, 2, 3, 1)
        if x.ndim == 4 and x.shape[-1] == 1:
            x = x[..., 0]
        if x.ndim not in (3, 4):
            raise UserError('images must be (N, H, W), (N, H, W, 3), (N, C, '
                            'H, W) or one image; got shape {}'.format(
                                x.shape))
        if x.shape[1:3] == (self.side, self.side) and (
                x.ndim == 3) == (self.channels == 1):    # ready as they are
            return self._on_dark_ground(
                x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2))
        return numpy.stack([self.prepare(image) for image in x])

    def _on_dark_ground(self, x):
        """Images (N, C, S, S) of the model's side as they are, except, for
        an MNIST model, those of dark ink on light paper, which are prepared
        as a file is (inverted, cropped, centred)."""
        if self.as_mnist:
            for k, image in enumerate(x):
                if numpy.median(_border(image[0])) > 0.5:
                    x[k] = self.prepare(image[0], 'image {}'.format(k))
        return x

    def classify(self, images):
        """-> predicted (N,) classes and capsule lengths (N, J)."""
        x = self.device.send(self.inputs(images))
        with chainer.using_config('train', False), \
                chainer.no_backprop_mode():
            scores = self.model.predict(x).array
        scores = chainer.backend.CpuDevice().send(scores)
        return scores.argmax(axis=1), scores

    def doubt(self, images):
        """-> reconstruction distances (N,) and whether each is doubtful
        (N,) bool, beyond the threshold calibrated on the validation images
        (capsnet/doubt.py); doubtful is None for a model without one."""
        if not self.model.options.get('reconstruct'):
            raise UserError('this model has no decoder (trained with '
                            '--no-reconstruct, or not a CapsNet)')
        found = doubt.distances(self.model,
                                self.device.send(self.inputs(images)))
        return found, (None if self.threshold is None
                       else found > self.threshold)

    def reconstruct(self, images):
        """-> (N, S, S) in [0, 1]: each image decoded from its longest
        capsule."""
        if not self.model.options.get('reconstruct'):
            raise UserError('this model has no decoder (trained with '
                            '--no-reconstruct, or not a CapsNet)')
        x = self.device.send(self.inputs(images))
        v, predicted = analysis.digit_capsules(self.model, x)
        return analysis.decode(self.model, v, chainer.backend.CpuDevice()
                               .send(predicted))


def load(path, gpu=-1):
    """The model in ``path`` (a save folder of train.py, or a model .npz)
    ready for inference, on the CPU (gpu=-1) or on GPU ``gpu``."""
    device = cli.get_device(gpu)
    path = model_file.path_for(path)
    model = model_file.load(path)
    model.to_device(device)
    return Model(model, device, doubt.read(path))


def predict_files(model, paths, out=None):
    """``--predict``: for each image file, (its report, None) or (None, the
    error's line), in order; with ``out`` a folder, also its figure
    ``predict_<k>_<name>.png`` there. A report: {"file", "predicted",
    "label" (the class's name), "lengths"}."""
    for k, path in enumerate(paths):
        try:
            original = read_image(path, model.channels)
            x = model.prepare(original, path)[None]
        except UserError as e:
            yield None, str(e)
            continue
        predicted, lengths = model.classify(x)
        report = {'file': path, 'predicted': int(predicted[0]),
                  'label': model.names[int(predicted[0])],
                  'lengths': [round(float(v), 6) for v in lengths[0]]}
        if model.model.options.get('reconstruct'):
            distance, doubtful = model.doubt(x)
            report['distance'] = round(float(distance[0]), 4)
            if doubtful is not None:
                report['doubtful'] = bool(doubtful[0])
        if out is not None:
            stem = os.path.splitext(os.path.basename(path))[0]
            recon = (model.reconstruct(x)[0] if
                     model.model.options.get('reconstruct') else None)
            save_prediction(os.path.join(out, 'predict_{}_{}.png'.format(
                k, stem)), original, analysis.pictures(x)[0], recon,
                lengths[0], path, model.names)
        yield report, None


def save_prediction(path, original, x, recon, lengths, name, names):
    """One figure: the image as read, the model's input made from it, its
    reconstruction (if the model has a decoder) and the capsule lengths."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    panels = [('image', original), ('model input', x)] + (
        [('reconstruction', recon)] if recon is not None else [])
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(
        2.2 * (len(panels) + 1.5), 2.4),
        gridspec_kw={'width_ratios': [1] * len(panels) + [1.5]})
    for ax, (title, image) in zip(axes, panels):
        ax.imshow(image, cmap='gray', vmin=0, vmax=1)
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    best = int(numpy.argmax(lengths))
    axes[-1].bar(range(len(lengths)), lengths, color=[
        'tab:red' if j == best else 'tab:gray' for j in range(len(lengths))])
    axes[-1].set_xticks(range(len(lengths)), names,
                        rotation=90 if max(map(len, names)) > 2 else 0,
                        fontsize=7)
    axes[-1].set_ylim(0, 1)
    axes[-1].set_title('capsule lengths', fontsize=8)
    fig.suptitle('{}: predicted {}'.format(os.path.basename(name),
                                           names[best]), fontsize=9)
    files.atomic_write(path, lambda f: fig.savefig(
        f, format='png', dpi=100, bbox_inches='tight'))
    plt.close(fig)
