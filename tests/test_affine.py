"""Affine change of test digits and the affNIST reader."""
import numpy
import pytest
import scipy.io

from capsnet import affine
from capsnet.errors import UserError


def one_pixel(y, x, size=5):
    image = numpy.zeros((1, 1, size, size), dtype=numpy.uint8)
    image[0, 0, y, x] = 200
    return image


def test_warp_by_hand():
    # a quarter turn about the centre (2, 2): (y, x) -> (x, -y) around it,
    # so (0, 2) goes to (2, 4); then a shift of one row down
    quarter = numpy.array([[[0.0, 1.0], [-1.0, 0.0]]])
    out = affine.warp(one_pixel(0, 2), quarter, numpy.array([[1.0, 0.0]]))
    assert out[0, 0, 3, 4] == pytest.approx(200)
    assert out.sum() == pytest.approx(200)
    # half a pixel to the right: shared equally by two pixels
    half = affine.warp(one_pixel(2, 2), numpy.eye(2)[None],
                       numpy.array([[0.0, 0.5]]))
    assert half[0, 0, 2, 2] == half[0, 0, 2, 3] == pytest.approx(100)


def test_zero_strength_is_the_identity():
    images = numpy.random.RandomState(0).randint(
        0, 256, (3, 1, 28, 28)).astype(numpy.uint8)
    out = affine.random_affine(images, 0, rotation=0, scale=0, shear=0,
                               translation=0)
    numpy.testing.assert_allclose(out, images, atol=1e-3)


def test_random_maps_stay_within_their_strengths_and_follow_the_seed():
    rng = numpy.random.default_rng(0)
    rotations = affine.affine_matrices(1000, rng, 30, 0, 0)
    numpy.testing.assert_allclose(numpy.linalg.det(rotations), 1, rtol=1e-9)
    angles = numpy.degrees(numpy.arctan2(rotations[:, 1, 0],
                                         rotations[:, 0, 0]))
    assert angles.min() >= -30 and angles.max() <= 30
    assert angles.max() - angles.min() > 50
    scales = affine.affine_matrices(1000, rng, 0, 0.2, 0)[:, 0, 0]
    assert 0.8 <= scales.min() and scales.max() <= 1.2
    images = numpy.random.RandomState(1).rand(4, 1, 28, 28)
    numpy.testing.assert_array_equal(affine.random_affine(images, 5),
                                     affine.random_affine(images, 5))
    assert not numpy.allclose(affine.random_affine(images, 5),
                              affine.random_affine(images, 6))


def test_read_affnist(tmp_path):
    images = numpy.random.RandomState(2).randint(
        0, 256, (3, 40, 40)).astype(numpy.uint8)
    labels = numpy.array([7, 0, 3])
    path = tmp_path / 'batch.mat'
    # affNIST's layout: one column of 1600 row-ordered pixels per image
    scipy.io.savemat(path, {'affNISTdata': {
        'image': images.reshape(3, 1600).T, 'label_int': labels}})
    read_images, read_labels = affine.read_affnist(str(path))
    numpy.testing.assert_array_equal(read_images[:, 0], images)
    numpy.testing.assert_array_equal(read_labels, labels)
    (tmp_path / 'bad.mat').write_bytes(b'not a mat file')
    with pytest.raises(UserError, match='cannot read affNIST'):
        affine.read_affnist(str(tmp_path / 'bad.mat'))
