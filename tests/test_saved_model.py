"""The trained model shipped in saved_model/ loads on a fresh clone and
classifies the real MNIST test images of the fixture."""
import json
import os

import chainer

from capsnet import analysis
from capsnet import checkpoint
from capsnet import data
from capsnet.model import CapsNet

from conftest import MNIST_FIXTURE
from conftest import ROOT

SAVED = os.path.join(ROOT, 'saved_model')


def test_saved_model_is_the_papers_architecture():
    model = checkpoint.load_model(checkpoint.model_path(SAVED))
    assert model.options == dict(n_classes=10, routing=3, reconstruct=True,
                                 shared_weights=False, leaky_slope=0.0,
                                 capsule_bias=False, in_size=28,
                                 in_channels=1, class_names=None)
    # saved before --capsule-bias and your own data existed: it reads as
    # without the bias, on grey MNIST digits
    with open(os.path.join(SAVED, 'options.json')) as f:
        assert dict(CapsNet.IMPLICIT_OPTIONS,
                    **json.load(f)['model']) == model.options
    assert os.path.getsize(os.path.join(SAVED, 'model.npz')) < 35e6


def test_saved_model_options_name_no_path_of_the_training_machine():
    with open(os.path.join(SAVED, 'options.json')) as f:
        train = json.load(f)['train']
    for key in ('save', 'data_dir', 'resume'):
        assert train[key] is None or not os.path.isabs(train[key]), key


def test_saved_model_accuracy_on_the_fixture():
    model = checkpoint.load_model(checkpoint.model_path(SAVED))
    images, labels = data.load('mnist', MNIST_FIXTURE, ('test',))['test']
    accuracy = analysis.accuracy(model, images, labels,
                                 chainer.get_device('@numpy'))
    # the first 500 MNIST test images, of which the shipped model gets 498
    # right; the full test set is in README.md
    assert round(accuracy * len(labels)) >= 498, accuracy
