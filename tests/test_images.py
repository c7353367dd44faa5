"""capsnet/images.py's subtract_ground, by hand: the ground (the median of
each image's border, per channel) to black, the brightest pixel to white."""
import numpy

from capsnet.images import subtract_ground


def test_a_dark_shape_on_light_paper_becomes_light_on_black():
    x = numpy.full((1, 1, 5, 5), 0.8, dtype=numpy.float32)
    x[0, 0, 2, 2] = 0.2                     # ink
    x[0, 0, 0, 0] = 0.9                     # a speck on the border
    out = subtract_ground(x)
    assert out.dtype == numpy.float32 and out.shape == x.shape
    assert out[0, 0, 2, 2] == 1             # |0.2 - 0.8| / 0.6
    assert out[0, 0, 1, 1] == 0
    numpy.testing.assert_allclose(out[0, 0, 0, 0], 0.1 / 0.6, rtol=1e-6)
    # the same shape light on black is already what it becomes
    inverse = 1 - x
    numpy.testing.assert_allclose(subtract_ground(inverse), out, atol=1e-6)


def test_each_image_and_channel_has_its_own_ground():
    x = numpy.zeros((2, 3, 4, 4), dtype=numpy.float32)
    x[0] = numpy.array([0.1, 0.5, 0.9])[:, None, None]    # a coloured ground
    x[0, :, 1:3, 1:3] = numpy.array([0.6, 0.5, 0.4])[:, None, None]
    x[1, :, 1:3, 1:3] = 0.25                # grey on black, faint
    out = subtract_ground(x)
    numpy.testing.assert_allclose(out[0, :, 1, 1], [1, 0, 1])
    assert (out[0, :, 0] == 0).all()
    assert (out[1, :, 1:3, 1:3] == 1).all() and out[1].sum() == 12


def test_a_blank_image_stays_black():
    assert not subtract_ground(numpy.full((1, 1, 4, 4), 0.7)).any()


def test_bytes_stay_bytes():
    """Your own data's arrays are uint8 until a batch is made of them."""
    x = numpy.full((1, 1, 4, 4), 200, dtype=numpy.uint8)
    x[0, 0, 1, 1] = 50
    out = subtract_ground(x)
    assert out.dtype == numpy.uint8
    assert out[0, 0, 1, 1] == 255 and out.sum() == 255
