"""Training on your own data: a folder of class folders, or an .npz; the
model takes its side, channels and classes from it."""
import json
import os
import re
import shutil

import numpy
import pytest
from PIL import Image

import capsnet
from capsnet import custom_data
from capsnet import data
from capsnet.errors import UserError
from conftest import MNIST_FIXTURE
from conftest import refuses
from conftest import run_here

CLASSES = ['zero', 'one', 'two']
NAMES = sorted(CLASSES)             # the classes, in their folders' order


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
    """The fixture's first 30 training digits of 0, 1 and 2 as PNG files
    in class folders named zero, one, two."""
    root = tmp_path_factory.mktemp('tree')
    images, labels = data.load('mnist', MNIST_FIXTURE, ('train',))['train']
    for digit, name in enumerate(CLASSES):
        (root / name).mkdir()
        for k in numpy.flatnonzero(labels == digit)[:30]:
            Image.fromarray(images[k, 0]).save(root / name / '{}.png'.format(
                k))
    return root


def test_a_class_folder_tree_reads_as_a_dataset(tree):
    arrays, names = custom_data.load(str(tree))
    assert names == NAMES == ['one', 'two', 'zero']
    (x, y), (x_test, y_test) = arrays['train'], arrays['test']
    assert x.shape == (81, 1, 28, 28) and x.dtype == numpy.uint8
    assert len(x_test) == 9 and set(y) | set(y_test) == {0, 1, 2}
    # the images are the files' pixels, under their folder's class
    fixture, labels = data.load('mnist', MNIST_FIXTURE, ('train',))['train']
    first_zero = fixture[numpy.flatnonzero(labels == 0)[0]]
    assert any((image == first_zero).all() for image in
               numpy.concatenate([x, x_test])[
                   numpy.concatenate([y, y_test]) == NAMES.index('zero')])


def test_a_class_folder_tree_trains_and_evaluates(tree, tmp_path):
    out = tmp_path / 'run'
    run_here('train.py', '--dataset', str(tree), '-b', '16', '-e', '1',
             '--save', str(out))
    options = json.loads((out / 'options.json').read_text())
    assert options['model'] == dict(options['model'], n_classes=3, in_size=28,
                                    in_channels=1, class_names=NAMES,
                                    subtract_ground=True)
    assert options['train']['val_size'] == 8          # a tenth of 81
    assert options['train']['lr_warmup'] == 100       # own data's default
    report = json.loads(run_here('analyze.py', '--load', str(out),
                                 '--dataset', str(tree),
                                 '--evaluate').stdout)
    assert report['n'] == 9
    # a grey model of one's own opens in the explorer too
    run_here('analyze.py', '--load', str(out), '--dataset', str(tree),
             '--explorer', '--explorer-images', '9', '--out',
             str(tmp_path / 'page'))
    assert (tmp_path / 'page' / 'explorer.html').stat().st_size > 10000


@pytest.fixture(scope='module')
def colour_npz(tmp_path_factory):
    """60 colour 32x32 images of 3 classes, each class its own hue."""
    rng = numpy.random.RandomState(0)
    y = numpy.arange(60) % 3
    x = rng.randint(0, 60, (60, 32, 32, 3)).astype(numpy.uint8)
    x[numpy.arange(60), 8:24, 8:24, y] = 250
    path = tmp_path_factory.mktemp('npz') / 'colour.npz'
    numpy.savez(path, x_train=x[:48], y_train=y[:48], x_test=x[48:],
                y_test=y[48:], class_names=numpy.array(['red', 'green',
                                                        'blue']))
    return path


def test_a_colour_npz_trains_and_evaluates(colour_npz, tmp_path):
    out = tmp_path / 'run'
    run_here('train.py', '--dataset', str(colour_npz), '-b', '8', '-e', '1',
             '--save', str(out))
    options = json.loads((out / 'options.json').read_text())['model']
    assert (options['in_size'], options['in_channels'], options['n_classes'],
            options['class_names']) == (32, 3, 3, ['red', 'green', 'blue'])
    report = json.loads(run_here('analyze.py', '--load', str(out),
                                 '--dataset', str(colour_npz),
                                 '--evaluate').stdout)
    assert report['n'] == 12
    # without --dataset, the model's own data, from its options.json (no
    # MNIST download for a colour model)
    assert json.loads(run_here('analyze.py', '--load', str(out),
                               '--evaluate').stdout) == report


def test_an_npz_without_test_images_gets_a_seeded_tenth(tmp_path):
    x = numpy.random.RandomState(1).rand(50, 20, 20).astype(numpy.float32)
    numpy.savez(tmp_path / 'd.npz', x_train=x, y_train=numpy.arange(50) % 4)
    arrays, names = custom_data.load(str(tmp_path / 'd.npz'))
    assert names == ['0', '1', '2', '3']
    assert [len(arrays[p][0]) for p in ('train', 'test')] == [45, 5]
    assert arrays['train'][0].shape[1:] == (1, 20, 20)
    again, _ = custom_data.load(str(tmp_path / 'd.npz'))
    numpy.testing.assert_array_equal(again['test'][0], arrays['test'][0])


def test_bad_data_gets_one_line_each(tree, tmp_path):
    def fails(message, path):
        with pytest.raises(UserError, match=message):
            custom_data.load(str(path))

    bad = tmp_path / 'bad'
    shutil.copytree(tree, bad)
    (bad / 'one' / 'notes.png').write_text('not an image')
    fails(r'one/notes.png: cannot read it as an image \(no format', bad)
    (bad / 'one' / 'notes.png').unlink()
    Image.new('L', (30, 28)).save(bad / 'two' / 'wide.png')
    fails(r'wide.png is 28x30, but .* is 28x28: the images must be of one '
          'size', bad)
    (bad / 'two' / 'wide.png').unlink()
    Image.new('L', (100, 100)).save(bad / 'two' / 'photo.png')
    fails('photo.png is 100x100; the model takes images of at most 64 '
          'pixels a side', bad)
    (bad / 'two' / 'photo.png').unlink()
    (bad / 'three').mkdir()
    fails('the class folder .*three is empty', bad)
    single = tmp_path / 'single'
    shutil.copytree(tree / 'zero', single / 'zero')
    fails('holds 1 class folder', single)
    x = numpy.zeros((10, 20, 20), numpy.uint8)
    for y, message in ((numpy.arange(10) - 1, 'whole numbers in'),
                       (numpy.full(10, 0.5), 'whole numbers in'),
                       (numpy.zeros(10), 'has 1 class')):
        numpy.savez(tmp_path / 'bad.npz', x_train=x, y_train=y)
        fails(message, tmp_path / 'bad.npz')
    numpy.savez(tmp_path / 'bad.npz', x_train=x, y_train=numpy.arange(10) % 3,
                class_names=numpy.array(['a', 'b']))
    fails(r'y_train of .* must be 10 whole numbers in \[0, 2\)',
          tmp_path / 'bad.npz')
    numpy.savez(tmp_path / 'bad.npz', images=x)
    fails('needs x_train and y_train', tmp_path / 'bad.npz')


def test_images_too_small_for_the_model_get_one_line(tmp_path):
    x = numpy.zeros((40, 12, 12), numpy.uint8)
    numpy.savez(tmp_path / 'small.npz', x_train=x,
                y_train=numpy.arange(40) % 2)
    refuses('the images are 12x12; the model takes square images of 17 to '
            '64 pixels a side', 'train.py', '--dataset',
            str(tmp_path / 'small.npz'), '--save', str(tmp_path / 'run'))


def test_every_analysis_of_a_colour_model(colour_npz, tmp_path):
    """Figures with the class names, --predict on image files, the API and
    the explorer's page, in colour."""
    out = tmp_path / 'run'
    run_here('train.py', '--dataset', str(colour_npz), '-b', '8', '-e', '1',
             '--save', str(out))
    figures = tmp_path / 'figures'
    run_here('analyze.py', '--load', str(out), '--dataset', str(colour_npz),
             '--out', str(figures))
    assert {'mask_grid.png', 'interpolation_0.png', 'routing_0.png'} <= \
        set(os.listdir(figures))
    with numpy.load(colour_npz) as npz:
        x, names = npz['x_test'][:4], list(npz['class_names'])
    files = []
    for k, image in enumerate(x):
        files.append(str(tmp_path / '{}.png'.format(k)))
        Image.fromarray(image).resize((64, 64)).save(files[-1])
    result = run_here('analyze.py', '--load', str(out), '--predict', *files,
                      '--out', str(figures))
    reports = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r['label'] for r in reports] == [names[r['predicted']]
                                             for r in reports]
    model = capsnet.load(str(out))
    predicted, lengths = model.classify(x)                 # (N, 32, 32, 3)
    assert lengths.shape == (4, 3)
    assert model.reconstruct(x).shape == (4, 32, 32, 3)
    run_here('analyze.py', '--load', str(out), '--dataset', str(colour_npz),
             '--explorer', '--explorer-images', '12', '--out', str(figures))
    page = (figures / 'explorer.html').read_text()
    inlined = json.loads(re.search(r'window\.CAPSNET = (.*?);</script>',
                                   page, flags=re.S).group(1))
    assert inlined['channels'] == 3
    assert inlined['images']['shape'] == [len(inlined['indices']),
                                          3 * 32 * 32]
    assert inlined['decoder'][4]['shape'] == [3 * 32 * 32, 1024]


def test_digits_on_black_are_what_the_grounds_subtraction_leaves(tree):
    """The arrays train.py batches stay uint8 in [0, 255]; MNIST's digits,
    already light on black, come through unchanged, and the same digits as
    ink on paper become them."""
    from capsnet import datasets
    as_made = datasets.get(str(tree)).load()['train'][0]
    as_they_are = datasets.get(str(tree), subtract_ground=False).load()[
        'train'][0]
    assert as_made.dtype == as_they_are.dtype == numpy.uint8
    # (a digit whose brightest pixel is under 255 is brightened to it)
    numpy.testing.assert_allclose(as_made, as_they_are, atol=3)
    from capsnet.images import subtract_ground
    numpy.testing.assert_array_equal(subtract_ground(255 - as_they_are),
                                     as_made)
