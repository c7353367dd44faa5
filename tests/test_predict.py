"""The shipped model on image files as a user has them: dark digits on
light paper, larger than MNIST's and off centre, PNG and JPEG."""
import json
import os

import numpy
import pytest
from PIL import Image

import capsnet
from capsnet import data
from capsnet import predict
from conftest import MNIST_FIXTURE
from conftest import ROOT
from conftest import run_here

N = 100
MODEL = os.path.join(ROOT, 'saved_model')


@pytest.fixture(scope='module')
def digits():
    images, labels = data.load('mnist', MNIST_FIXTURE, ('test',))['test']
    return images[:N, 0], labels[:N]


@pytest.fixture(scope='module')
def files(digits, tmp_path_factory):
    """The first N fixture test digits as files: dark on light, three
    times larger, somewhere on a 140x120 page; PNG and JPEG in turn."""
    folder = tmp_path_factory.mktemp('photos')
    rng = numpy.random.RandomState(0)
    paths = []
    for k, image in enumerate(digits[0]):
        big = Image.fromarray(255 - image).resize((84, 84),
                                                  Image.Resampling.BILINEAR)
        page = Image.new('L', (140, 120), 255)
        page.paste(big, (int(rng.randint(0, 56)), int(rng.randint(0, 36))))
        paths.append(str(folder / '{}.{}'.format(k, 'png' if k % 2 else
                                                 'jpg')))
        page.save(paths[-1])
    return paths


@pytest.fixture(scope='module')
def model():
    return capsnet.load(MODEL)


def test_predict_reads_the_files_right(files, digits):
    result = run_here('analyze.py', '--load', MODEL, '--predict', *files)
    reports = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r['file'] for r in reports] == files
    predicted = numpy.array([r['predicted'] for r in reports])
    assert (predicted == digits[1]).mean() >= 0.95
    for r in reports:
        assert r['label'] == str(r['predicted']) and len(r['lengths']) == 10
        assert numpy.argmax(r['lengths']) == r['predicted']


def test_a_file_becomes_the_mnist_digit_it_was_made_from(files, digits):
    """Inverted, cropped, scaled to 20 pixels and centred by mass, a file
    comes back close to its MNIST original (which was made the same way)."""
    x = predict.mnist_style(predict.read_image(files[1]))
    original = digits[0][1] / 255
    assert x.shape == (28, 28) and 0 <= x.min() and x.max() <= 1
    assert numpy.abs(x - original).mean() < 0.08


def test_the_api_agrees_with_predict_and_evaluate(model, files, digits):
    on_files, lengths = model.classify(files[:10])
    result = run_here('analyze.py', '--load', MODEL, '--predict',
                      *files[:10])
    reports = [json.loads(line) for line in result.stdout.splitlines()]
    assert on_files.tolist() == [r['predicted'] for r in reports]
    numpy.testing.assert_allclose(lengths, [r['lengths'] for r in reports],
                                  atol=1e-5)
    # the MNIST arrays themselves, uint8 or float, and what --evaluate counts
    images, labels = digits
    predicted, _ = model.classify(images)
    assert model.classify(images / numpy.float32(255))[0].tolist() == \
        predicted.tolist()
    report = json.loads(run_here('analyze.py', '--load', MODEL, '--data-dir',
                                 MNIST_FIXTURE, '--test-size', str(N),
                                 '--evaluate').stdout)
    assert report['accuracy'] == pytest.approx((predicted == labels).mean())
    recon = model.reconstruct(images[:3])
    assert recon.shape == (3, 28, 28)
    # dark ink on light paper, 28x28 already: prepared as a file is
    # (inverted), not taken as MNIST-ready
    on_paper, _ = model.classify(255 - images)
    assert (on_paper == labels).mean() >= 0.95
    assert model.classify(numpy.float32(1) - images[:, None] / numpy.float32(
        255))[0].tolist() == on_paper.tolist()


def test_bad_files_get_a_line_each_after_the_others(files, tmp_path):
    text = tmp_path / 'notes.png'
    text.write_text('not an image')
    blank = tmp_path / 'blank.png'
    Image.new('L', (50, 50), 255).save(blank)
    result = run_here('analyze.py', '--load', MODEL, '--predict', files[0],
                      str(text), str(tmp_path / 'missing.jpg'), str(blank),
                      files[1], check=False)
    assert result.returncode == 1
    answered = [json.loads(line)['file'] for line in
                result.stdout.splitlines()]
    assert answered == [files[0], files[1]]
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith('error: ') for e in errors)
    assert 'notes.png: cannot read it as an image' in errors[0]
    assert 'missing.jpg: cannot read it as an image' in errors[1]
    assert 'blank.png is blank' in errors[2]


def test_predict_draws_a_figure_per_file(files, tmp_path):
    run_here('analyze.py', '--load', MODEL, '--predict', *files[:2],
             '--out', str(tmp_path / 'figures'))
    assert sorted(os.listdir(tmp_path / 'figures')) == [
        'predict_0_0.png', 'predict_1_1.png']


def test_a_model_of_your_own_data_sees_each_images_ground_taken_to_black():
    """As it was trained (train.py --dataset PATH): a dark shape on light
    paper and the same shape light on black are one input."""
    import chainer
    from capsnet.images import subtract_ground
    from capsnet.model import CapsNet
    numpy.random.seed(0)
    model = predict.Model(CapsNet(n_classes=3, in_size=20, class_names=[
        'a', 'b', 'c'], subtract_ground=True), chainer.get_device('@numpy'))
    ink = numpy.full((2, 20, 20), 200, dtype=numpy.uint8)
    ink[0, 4:9, 4:12] = 30
    ink[1, 10:16, 6:9] = 60
    numpy.testing.assert_allclose(model.inputs(ink), subtract_ground(
        ink[:, None] / numpy.float32(255)), atol=1e-6)
    numpy.testing.assert_allclose(model.inputs(ink), model.inputs(
        255 - ink), atol=1e-6)
    _, as_ink = model.classify(ink)
    _, as_light = model.classify(255 - ink)
    numpy.testing.assert_allclose(as_ink, as_light, atol=1e-5)
