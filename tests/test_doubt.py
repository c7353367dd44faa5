"""The doubt flag: reconstruction distances against a threshold calibrated
on the validation images when the model is trained (capsnet/doubt.py)."""
import json
import os

import numpy
import pytest
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

import capsnet
from capsnet import model_file
from capsnet import data
from capsnet import doubt
from conftest import DATA
from conftest import MNIST_FIXTURE
from conftest import ROOT
from conftest import TINY
from conftest import refuses
from conftest import run_here

SAVED = os.path.join(ROOT, 'saved_model')


def letter(path, text):
    """A letter drawn dark on light paper, as a user's file."""
    page = Image.new('L', (120, 120), 255)
    ImageDraw.Draw(page).text((25, 5), text, fill=0,
                              font=ImageFont.load_default(size=80))
    page.save(path)
    return str(path)


def test_distance_is_the_l2_norm_of_image_minus_reconstruction():
    model = model_file.load(os.path.join(SAVED, 'model.npz'))
    images, _ = data.load('mnist', MNIST_FIXTURE, ('test',))['test']
    x = images[:3].astype(numpy.float32) / 255
    _, reconstruction = model(x)
    want = numpy.linalg.norm(x.reshape(3, -1) - reconstruction.array, axis=1)
    numpy.testing.assert_allclose(doubt.distances(model, x), want,
                                  rtol=1e-5)


def test_the_shipped_model_flags_a_letter_and_passes_a_digit(tmp_path):
    images, labels = data.load('mnist', MNIST_FIXTURE, ('test',))['test']
    seven = tmp_path / 'seven.png'
    Image.fromarray(255 - images[0, 0]).save(seven)          # a 7
    files = [str(seven), letter(tmp_path / 'A.png', 'A')]
    reports = [json.loads(line) for line in run_here(
        'analyze.py', '--load', SAVED, '--predict', *files).stdout.split(
            '\n') if line]
    assert [r['doubtful'] for r in reports] == [False, True]
    assert reports[0]['predicted'] == 7
    threshold = doubt.read(os.path.join(SAVED, 'model.npz'))
    assert reports[0]['distance'] < threshold < reports[1]['distance']
    # the API says the same
    distances, doubtful = capsnet.load(SAVED).doubt(files)
    assert doubtful.tolist() == [False, True]
    numpy.testing.assert_allclose(distances, [r['distance'] for r in reports],
                                  atol=1e-4)


def test_training_calibrates_the_threshold_beside_the_model(tmp_path):
    out = tmp_path / 'run'
    run_here('train.py', *TINY, '-e', '1', '--save', str(out))
    calibration = json.loads((out / doubt.FILE).read_text())
    assert calibration['percentile'] == doubt.PERCENTILE
    assert calibration['images'] == 200 and calibration['threshold'] > 0
    # recalibrating the same model on the same images gives the same
    again = json.loads(run_here('capsnet/doubt.py', str(out), *DATA)
                       .stdout)
    assert again['threshold'] == pytest.approx(calibration['threshold'],
                                               rel=1e-5)
    # no decoder, no validation images: no threshold, and the CLI says why
    for flags, name in ((['--no-reconstruct'], 'plain'),
                        (['--val-size', '0'], 'noval')):
        run_here('train.py', *TINY, '-e', '1', '--save', str(tmp_path / name),
                 *flags)
        assert not (tmp_path / name / doubt.FILE).exists()
    refuses('has no decoder', 'capsnet/doubt.py', str(tmp_path / 'plain'),
            *DATA)
    # a damaged file is one line, not a silent flag
    (out / doubt.FILE).write_text('{"threshold": -1}')
    refuses('holds no positive threshold', 'analyze.py', '--load', str(out),
            '--predict', letter(tmp_path / 'B.png', 'B'))
