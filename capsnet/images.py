"""Image files, read one way for the whole package: ``--predict``,
``capsnet.load(...).classify(paths)`` and ``train.py --dataset FOLDER``.

Pillow raises many classes of exception on a damaged file (OSError,
SyntaxError, ValueError, struct.error, its DecompressionBombError, ...);
every one becomes a UserError naming the file. The size a file's header
claims is checked before a pixel is decoded.
"""
import numpy

from capsnet.errors import UserError

# 40 million pixels: more than a phone camera's 12- to 24-megapixel photo,
# 160 MB decoded as RGBA. Pillow's own guard warns above 89 million and
# refuses only above 179 million (716 MB), too late for a laptop beside a
# training run.
MAX_PIXELS = 40_000_000
GREY_MODES = ('1', 'L', 'LA', 'La', 'I', 'F')


def read(path, max_side=None):
    """The image file ``path`` as a Pillow image in mode 'L' (grey) or
    'RGB' (colour), decoded in full, and whether it has colour.

    A transparent ground counts as white paper; 16-bit grey is scaled to 8
    bits; an animated image gives its first frame. ``max_side``: refuse
    (from the header alone) an image wider or taller than this.
    """
    from PIL import Image
    try:
        with Image.open(path) as image:         # reads the header only
            width, height = image.size
            if width < 1 or height < 1:
                raise UserError('{}: its header says it is {}x{} '
                                'pixels'.format(path, width, height))
            if width * height > MAX_PIXELS:
                raise UserError('{}: its header says it is {}x{} pixels, '
                                'over the {:,} that capsnet reads; scale it '
                                'down'.format(path, width, height,
                                              MAX_PIXELS))
            if max_side and max(width, height) > max_side:
                raise UserError('{} is {}x{}; the model takes images of at '
                                'most {} pixels a side: scale them'.format(
                                    path, width, height, max_side))
            image.load()
            return _normalised(image)
    except UserError:
        raise
    except Exception as e:      # whatever Pillow's decoders raise
        raise UserError('{}: cannot read it as an image ({})'.format(
            path, _reason(e, path)))


def _reason(error, path):
    """Why Pillow could not read ``path``, without the path again."""
    from PIL import Image
    from PIL import UnidentifiedImageError
    if isinstance(error, UnidentifiedImageError):
        return 'no format that Pillow knows'
    if isinstance(error, Image.DecompressionBombError):   # at open, before us
        return 'its header says it is over the {:,} pixels that capsnet ' \
            'reads; {}'.format(MAX_PIXELS, error)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = ' '.join(str(error).replace(repr(str(path)), 'it').split())
    return '{}: {}'.format(type(error).__name__, text or 'no detail')


def _normalised(image):
    """(image in 'L' or 'RGB', colour) of a loaded Pillow image."""
    from PIL import Image
    colour = not (image.mode in GREY_MODES or image.mode.startswith('I;16'))
    if image.mode == 'I' or image.mode.startswith('I;16'):
        # 16-bit grey: Pillow's convert('L') would clip it at 255
        levels = numpy.asarray(image, dtype=numpy.float64)
        image = Image.fromarray(numpy.uint8(numpy.round(
            levels.clip(0, 65535) / 257)))
    if image.mode in ('RGBA', 'LA', 'La', 'RGBa', 'PA') or \
            'transparency' in image.info:
        ground = Image.new('RGBA', image.size, 'white')
        image = Image.alpha_composite(ground, image.convert('RGBA'))
    return image.convert('RGB' if colour else 'L'), colour


def subtract_ground(x):
    """Images (N, C, H, W) in [0, 1] -> the same with each image's ground
    taken to black and its brightest pixel to white: |x - ground|, the
    ground the median of the image's border, per channel, then scaled to a
    maximum of 1. What stands out of the ground is all that is left, as on
    MNIST's black ground, whatever the paper or the colour (an option of a
    model of your own data: capsnet/model.py's DATA_OPTIONS). uint8 images
    in [0, 255] come back as uint8, others as float32 in [0, 1]."""
    as_bytes = numpy.asarray(x).dtype == numpy.uint8
    x = numpy.asarray(x, dtype=numpy.float32) / (255 if as_bytes else 1)
    border = numpy.concatenate([x[:, :, 0], x[:, :, -1], x[:, :, :, 0],
                                x[:, :, :, -1]], axis=2)        # N, C, 4S
    ground = numpy.median(border, axis=2)[:, :, None, None]
    out = abs(x - ground)
    out /= numpy.maximum(out.max(axis=(1, 2, 3), keepdims=True),
                         numpy.float32(1e-6))
    return numpy.round(out * 255).astype(numpy.uint8) if as_bytes else out
