"""Affine change of test digits, for robustness in the spirit of affNIST.

``random_affine`` warps each image by its own random rotation, scaling, shear
and translation about the image centre (deterministic given a seed);
``read_affnist`` reads the real affNIST test batches (MATLAB .mat files).
"""
import numpy

from capsnet.errors import UserError


def affine_matrices(n, rng, rotation, scale, shear):
    """(N, 2, 2) maps in (y, x) coordinates: rotation (degrees), uniform in
    +-rotation; scaling in [1 - scale, 1 + scale]; shear (degrees) of x
    along y, in +-shear."""
    angle = numpy.radians(rng.uniform(-rotation, rotation, n))
    factor = rng.uniform(1 - scale, 1 + scale, n)
    slant = numpy.tan(numpy.radians(rng.uniform(-shear, shear, n)))
    cos, sin = numpy.cos(angle), numpy.sin(angle)
    rotate = numpy.stack([numpy.stack([cos, -sin], -1),
                          numpy.stack([sin, cos], -1)], -2)
    sheared = numpy.zeros((n, 2, 2))
    sheared[:, 0, 0] = sheared[:, 1, 1] = 1
    sheared[:, 1, 0] = slant                      # x += slant * y
    return factor[:, None, None] * rotate @ sheared


def random_affine(images, seed=0, rotation=15.0, scale=0.1, shear=10.0,
                  translation=2.0):
    """Warp each image (N, C, H, W) by its own random affine map about the
    centre, translated by up to ``translation`` pixels in y and in x
    (deterministic given ``seed``); float32 in the input's value range."""
    rng = numpy.random.default_rng(seed)
    n = len(images)
    forward = affine_matrices(n, rng, rotation, scale, shear)
    return warp(images, forward,
                rng.uniform(-translation, translation, (n, 2)))


def warp(images, forward, shift):
    """images (N, C, H, W) mapped by forward (N, 2, 2) about the centre,
    then moved by shift (N, 2), both in (y, x); bilinear, zero outside."""
    n, c, h, w = images.shape
    centre = numpy.array([(h - 1) / 2, (w - 1) / 2])
    ys, xs = numpy.meshgrid(numpy.arange(h), numpy.arange(w), indexing='ij')
    target = numpy.stack([ys.ravel(), xs.ravel()], -1)          # (H*W, 2)
    # each output pixel reads the input at A^-1 (p - centre - shift) + centre
    source = numpy.einsum('nij,npj->npi', numpy.linalg.inv(forward),
                          target[None] - centre - shift[:, None]) + centre
    y0 = numpy.floor(source[..., 0]).astype(numpy.int64)
    x0 = numpy.floor(source[..., 1]).astype(numpy.int64)
    fy, fx = source[..., 0] - y0, source[..., 1] - x0
    flat = images.reshape(n, c, h * w).astype(numpy.float32)
    out = numpy.zeros((n, c, h * w), dtype=numpy.float32)
    rows = numpy.arange(n)[:, None]
    for dy, dx, weight in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                           (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        y, x = y0 + dy, x0 + dx
        inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
        index = numpy.where(inside, y * w + x, 0)
        out += (flat[rows, :, index].transpose(0, 2, 1) *
                (weight * inside)[:, None, :].astype(numpy.float32))
    return out.reshape(n, c, h, w)


def read_affnist(path):
    """Images uint8 (N, 1, 40, 40) and labels int32 (N,) of an affNIST .mat
    batch: a struct ``affNISTdata`` with ``image`` (1600, N), one column per
    40x40 image in row order, and ``label_int`` (N,)."""
    try:
        import scipy.io
    except ImportError:
        raise UserError('reading affNIST needs SciPy: pip install scipy')
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
        record = mat['affNISTdata']
        images = numpy.asarray(record.image)
        labels = numpy.asarray(record.label_int).ravel()
    except (OSError, ValueError, KeyError, AttributeError, TypeError,
            scipy.io.matlab.MatReadError) as e:
        raise UserError('cannot read affNIST file {}: {} ({})'.format(
            path, type(e).__name__, e))
    for name, values, high in (('image', images, 255), ('label_int', labels,
                                                       9)):
        if values.dtype.kind not in 'iuf' or values.size and not (
                (values == numpy.round(values)).all() and
                0 <= values.min() and values.max() <= high):
            raise UserError('{}: affNISTdata.{} must hold whole numbers 0 to '
                            '{}'.format(path, name, high))
    images, labels = images.astype(numpy.uint8), labels.astype(numpy.int32)
    if images.ndim == 1:                               # a single image
        images = images[:, None]
    if images.shape[0] != 1600 or images.shape[1] != len(labels):
        raise UserError('{}: expected 1600 x N images and N labels, got {} '
                        'and {}'.format(path, images.shape, labels.shape))
    return images.T.reshape(-1, 1, 40, 40).copy(), labels
