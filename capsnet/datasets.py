"""The datasets, one description each: where the images come from, what
the model takes from them, how a batch is made and how an image is scored.

    mnist, fashion-mnist   IDX files: --data-dir, or downloaded once
    multimnist             MNIST digits paired on a 36x36 canvas (the paper's
                           section 6): two labels an image, both to be named
    PATH                   your own: a folder of class folders, or an .npz
                           (capsnet/custom_data.py)

``get(name, data_dir)`` gives the description; train.py and analyze.py ask
it instead of testing names.
"""
from chainer.datasets import TupleDataset

from capsnet import custom_data
from capsnet import data
from capsnet import images
from capsnet import multimnist
from capsnet.errors import UserError
from capsnet.options import MAX_SIDE


class Dataset:
    """One label an image; images (N, C, S, S) uint8 as stored, shifted by
    up to ``max_shift`` pixels in training and placed on a ``canvas`` if
    one is asked for."""

    pairs = False               # two labels an image, both to be named
    # train.py's --lr-warmup unless given: none, the paper's, for the
    # datasets of tens of thousands of images
    warmup = 0

    def __init__(self, name, data_dir=None):
        self.name = name
        self.data_dir = data_dir

    def load(self, parts=('train', 'test')):
        """{part: (images, labels)} for each of ``parts``."""
        return data.load(self.name, self.data_dir, parts)

    def model_options(self, arrays, architecture, canvas=None):
        """What the model takes from this data: input side, channels and
        classes, where they are not MNIST's."""
        return {'in_size': canvas} if canvas else {}

    def batches(self, splits, max_shift, shift_rng, canvas=None):
        """(train converter, validation and test datasets or None, their
        converter) for the (images, labels) splits of ``split_arrays``."""
        val, test = (TupleDataset(*split) if split and len(split[0]) else
                     None for split in splits[1:])
        return (data.BatchConverter(max_shift, shift_rng, canvas), val, test,
                data.BatchConverter(canvas=canvas))


class MultiMNIST(Dataset):
    """MNIST's digits, each with a partner of another class, both shifted
    by up to 4 pixels on a 36x36 canvas: fresh pairs every training batch,
    fixed seeded ones for validation and test. ``shift``: how far training
    pairs shift each digit (validation and test pairs keep the paper's 4,
    so that every model is measured on the same pairs)."""

    pairs = True

    def __init__(self, name, data_dir=None, shift=multimnist.MAX_SHIFT):
        super().__init__(name, data_dir)
        self.shift = shift

    def load(self, parts=('train', 'test')):
        return data.load('mnist', self.data_dir, parts)

    def model_options(self, arrays, architecture, canvas=None):
        if canvas or architecture.arch != 'capsnet':
            raise UserError('MultiMNIST trains CapsNet on 36x36 images: '
                            '--model baseline and --canvas do not apply')
        return {'in_size': multimnist.CANVAS}

    def batches(self, splits, max_shift, shift_rng, canvas=None):
        val, test = (multimnist.evaluation_pairs(split, seed) for split, seed
                     in zip(splits[1:], (multimnist.VAL_SEED,
                                         multimnist.TEST_SEED)))
        return (multimnist.PairConverter(*splits[0], shift_rng, self.shift),
                val, test,
                multimnist.FixedPairConverter())


class OwnData(Dataset):
    """The user's labelled images, of any side the model takes, grey or
    colour, with their class names (``classes``, known once loaded); with
    ``subtract_ground`` (a new model's default, and what a model file
    records), each image's ground taken to black. A small set leaves
    chance sooner with Adam's steps warmed up (docs/training.md)."""

    warmup = 100

    def __init__(self, name, data_dir=None, subtract_ground=True):
        super().__init__(name, data_dir)
        self.subtract_ground = subtract_ground

    def load(self, parts=('train', 'test')):
        arrays, self.classes = custom_data.load(self.name)
        if self.subtract_ground:
            arrays = {part: (images.subtract_ground(x), y)
                      for part, (x, y) in arrays.items()}
        return {part: arrays[part] for part in parts}

    def model_options(self, arrays, architecture, canvas=None):
        if canvas:
            raise UserError('--canvas applies to MNIST digits only')
        _, channels, height, width = arrays['train'][0].shape
        low, high = architecture.MIN_SIDE, MAX_SIDE
        if height != width or not low <= height <= high:
            raise UserError('the images are {}x{}; the model takes square '
                            'images of {} to {} pixels a side: pad or scale '
                            'them'.format(height, width, low, high))
        return dict(in_size=height, in_channels=channels,
                    n_classes=len(self.classes), class_names=self.classes,
                    subtract_ground=self.subtract_ground)


def get(name, data_dir=None, multimnist_shift=None, subtract_ground=True):
    """The description of --dataset ``name`` (with --data-dir, and
    train.py's --multimnist-shift); ``subtract_ground``: your own images'
    ground taken to black (a model's option of that name says whether it
    was)."""
    if multimnist_shift is not None and name != 'multimnist':
        raise UserError('--multimnist-shift applies to --dataset multimnist '
                        'only')
    if name in data.DATASETS:
        return Dataset(name, data_dir)
    if name == 'multimnist':
        return MultiMNIST(name, data_dir, multimnist.MAX_SHIFT
                          if multimnist_shift is None else multimnist_shift)
    if custom_data.is_custom(name):
        return OwnData(name, subtract_ground=subtract_ground)
    raise UserError('unknown dataset {!r}; choose from {}, multimnist, or '
                    'name a folder or .npz of your own'.format(
                        name, ', '.join(data.DATASETS)))
