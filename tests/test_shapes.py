"""The shapes sets of experiments/shapes.py: what train.py --dataset takes,
balanced classes, and a ground taken to black by --subtract-ground."""

import numpy

from conftest import script_module


def test_a_set_is_balanced_uint8_images_with_names():
    shapes = script_module('experiments/shapes.py')
    x, y, names = shapes.make(30, classes=3, side=28)
    assert x.shape == (30, 28, 28) and x.dtype == numpy.uint8
    assert numpy.bincount(y).tolist() == [10, 10, 10]
    assert names == ['circle', 'square', 'triangle']
    # dark shapes on a light ground: the border is the ground
    assert numpy.median(x[:, 0]) > 150
    colour, _, _ = shapes.make(6, classes=10, side=32, colour=True)
    assert colour.shape == (6, 32, 32, 3)


def test_every_shape_is_drawn_and_differs_from_the_others():
    shapes = script_module('experiments/shapes.py')
    y, x = numpy.mgrid[-10:11, -10:11].astype(float)
    masks = [shapes.inside(name, y, x, 8).ravel() for name in shapes.SHAPES]
    assert all(mask.sum() > 20 for mask in masks)
    assert len({mask.tobytes() for mask in masks}) == len(shapes.SHAPES)


def test_subtracting_the_ground_leaves_the_shape_on_black():
    shapes = script_module('experiments/shapes.py')
    x, _, _ = shapes.make(8, seed=1, ground_to_black=True)
    assert numpy.median(x[:, 0]) < 20            # the border: black
    assert (x.reshape(8, -1).max(axis=1) == 255).all()
