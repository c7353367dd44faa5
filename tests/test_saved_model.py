"""The trained models shipped in saved_model/ (MNIST) and
saved_model/multimnist/ load on a fresh clone and classify the real MNIST
test images of the fixture."""
import json
import os

import chainer
import pytest

from capsnet import analysis
from capsnet import model_file
from capsnet import data
from capsnet import evaluation
from capsnet.model import CapsNet

from conftest import MNIST_FIXTURE
from conftest import ROOT

SAVED = os.path.join(ROOT, 'saved_model')
MULTI = os.path.join(SAVED, 'multimnist')


@pytest.mark.parametrize('folder, in_size, max_bytes', [
    (SAVED, 28, 35e6),
    (MULTI, 36, 25e6),     # stored in half precision
])
def test_saved_model_is_the_papers_architecture(folder, in_size, max_bytes):
    model = model_file.load(model_file.path_for(folder))
    assert model.options == dict(n_classes=10, router='dynamic', routing=3,
                                 reconstruct=True, shared_weights=False,
                                 leaky_slope=0.0, capsule_bias=False,
                                 leaky_routing=False, in_size=in_size,
                                 in_channels=1, class_names=None,
                                 subtract_ground=False)
    # the MNIST model was saved before --capsule-bias, your own data, the
    # routers and the ground's subtraction existed: it reads as without
    # the bias, on grey MNIST digits as they are, with dynamic routing
    with open(os.path.join(folder, 'options.json')) as f:
        assert dict(CapsNet.IMPLICIT_OPTIONS,
                    **json.load(f)['model']) == model.options
    assert os.path.getsize(os.path.join(folder, 'model.npz')) < max_bytes


@pytest.mark.parametrize('folder', [SAVED, MULTI])
def test_saved_model_options_name_no_path_of_the_training_machine(folder):
    with open(os.path.join(folder, 'options.json')) as f:
        train = json.load(f)['train']
    for key in ('save', 'data_dir', 'resume'):
        assert train[key] is None or not os.path.isabs(train[key]), key


def test_saved_model_accuracy_on_the_fixture():
    model = model_file.load(model_file.path_for(SAVED))
    images, labels = data.load('mnist', MNIST_FIXTURE, ('test',))['test']
    accuracy = analysis.accuracy(model, images, labels,
                                 chainer.get_device('@numpy'))
    # the first 500 MNIST test images, of which the shipped model gets 498
    # right; the full test set is in README.md
    assert round(accuracy * len(labels)) >= 498, accuracy


def test_saved_multimnist_model_names_both_digits_of_the_fixture_pairs():
    model = model_file.load(model_file.path_for(MULTI))
    images, labels = data.load('mnist', MNIST_FIXTURE, ('test',))['test']
    result = evaluation.report(model, images, labels,
                               chainer.get_device('@numpy'), 256, multi=True)
    # 500 test pairs from the fixture's digits, of which the shipped model
    # names both digits of 439 (87.8%); all 10,000 pairs are in README.md
    assert round(result['accuracy'] * result['n']) >= 439, result
