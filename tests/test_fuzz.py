"""Every reader of a file meets mutated real files, as test_flags.py walks
the flags: header fields, counts, sides, values, dtypes, truncation, wrong
types, missing and extra keys, each drawn with a fixed seed. The real
command must then stop with one line, ``error: ...``, and exit status 1:
never a traceback, never a run that goes on with a wrong value. A new reader
joins by one entry in READERS. The commands run in this process (their
main(), through cli.run as their scripts do)."""
import gzip
import io
import json
import os
import shutil
import zlib

import numpy
import pytest

from capsnet import model_file
from capsnet.model import CapsNet
from conftest import MNIST_FIXTURE
from conftest import ROOT
from conftest import TINY
from conftest import explorer_server
from conftest import request
from conftest import run
from conftest import run_here

MODEL = os.path.join(ROOT, 'saved_model', 'model.npz')
CASES = 4                       # mutations per reader


def pick(rng, options):
    """One of ``options``, whatever their types."""
    return options[rng.randint(0, len(options))]


def idx_file(path):
    with gzip.open(path) as f:
        return bytearray(f.read())


def write_gz(path, raw):
    with gzip.open(path, 'wb') as f:
        f.write(bytes(raw))


def mutate_idx(stem):
    """The fixture's test split with its ``stem`` file mutated."""
    def make(rng, tmp):
        folder = tmp / 'data'
        shutil.copytree(MNIST_FIXTURE, folder)
        path = folder / (stem + '.gz')
        raw = idx_file(path)
        ndim = raw[3]
        kind = pick(rng, ['magic', 'ndim', 'dimension', 'truncate', 'extra',
                           'count', 'values' if ndim == 1 else 'side'])
        if kind == 'magic':
            raw[rng.randint(0, 3)] = pick(rng, [1, 9, 13, 255])
        elif kind == 'ndim':
            raw[3] = pick(rng, [k for k in range(6) if k != ndim])
        elif kind == 'dimension':
            k = 4 + 4 * rng.randint(0, ndim)
            raw[k:k + 4] = int(rng.randint(1, 2 ** 31)).to_bytes(4, 'big')
        elif kind == 'truncate':
            raw = raw[:rng.randint(1, len(raw) - 1)]
        elif kind == 'extra':
            raw += bytes(rng.randint(1, 1000))
        elif kind == 'count':          # a valid file with fewer entries
            size = len(raw[4 + 4 * ndim:]) // int.from_bytes(raw[4:8], 'big')
            n = rng.randint(1, 499)
            raw[4:8] = n.to_bytes(4, 'big')
            raw = raw[:4 + 4 * ndim + n * size]
        elif kind == 'values':         # labels beyond 0..9
            raw[4 + 4 * ndim + rng.randint(0, 500)] = rng.randint(10, 256)
        else:                          # 500 images of another side
            side = pick(rng, [20, 27, 29, 32])
            raw = (bytes([0, 0, 8, 3]) + (500).to_bytes(4, 'big') +
                   2 * side.to_bytes(4, 'big') + bytes(500 * side * side))
        write_gz(path, raw)
        return kind, ['analyze.py', '--load', MODEL, '--data-dir',
                      str(folder), '--evaluate']
    return make


def rewrite_npz(source, target, change):
    with numpy.load(source) as npz:
        arrays = {k: npz[k] for k in npz.files}
    change(arrays)
    numpy.savez(target, **arrays)


def mutate_model(rng, tmp):
    target = tmp / 'model.npz'
    params = [k for k in numpy.load(MODEL).files if '/' in k]
    kind = pick(rng, ['missing', 'shape', 'dtype', 'truncate', 'option type',
                       'option extra', 'options garbage'])
    key = params[rng.randint(0, len(params))]
    option = pick(rng, ['routing', 'in_size', 'n_classes', 'reconstruct',
                         'leaky_slope', 'shared_weights'])

    def change(arrays):
        options = json.loads(str(arrays[model_file.OPTIONS_KEY]))
        if kind == 'missing':
            del arrays[key]
        elif kind == 'shape':
            arrays[key] = numpy.zeros(arrays[key].size + 1, numpy.float32)
        elif kind == 'dtype':
            arrays[key] = arrays[key].astype(pick(rng, ['U3', 'S2']))
        elif kind == 'option type':
            options[option] = pick(rng, ['3', None, [1], {'a': 1}, 1e9])
        elif kind == 'option extra':
            options['unknown_{}'.format(rng.randint(100))] = 1
        if kind.startswith('option'):
            arrays[model_file.OPTIONS_KEY] = numpy.array(json.dumps(options))
        elif kind == 'options garbage':
            arrays[model_file.OPTIONS_KEY] = numpy.array(
                pick(rng, ['{', '[]', '3', 'null']))
    rewrite_npz(MODEL, target, change)
    if kind == 'truncate':
        raw = target.read_bytes()
        target.write_bytes(raw[:rng.randint(1, len(raw) - 1)])
    return kind, ['analyze.py', '--load', str(target), '--data-dir',
                  MNIST_FIXTURE, '--evaluate', '--test-size', '20']


RUN = [*TINY, '--val-size', '0', '--snapshot-interval', '3', '-e', '2']


def mutate_run_folder(name):
    """A one-epoch run folder (made once) with ``name`` mutated; train.py
    resumes there."""
    def make(rng, tmp, folder):
        out = tmp / 'run'
        shutil.copytree(folder, out)
        path = out / name
        kind = pick(rng, ['truncate', 'garbage', 'wrong types'])
        if name == 'snapshot_iter_4':
            if kind == 'wrong types':
                key = pick(rng, [k for k in numpy.load(path).files
                                  if 'model:main' in k])
                rewrite_npz(path, path.with_suffix('.npz'), lambda a: a.update(
                    {key: numpy.zeros(3, numpy.float32)}))
                os.replace(path.with_suffix('.npz'), path)
            elif kind == 'truncate':
                raw = path.read_bytes()
                path.write_bytes(raw[:rng.randint(1, len(raw) - 1)])
            else:
                path.write_bytes(bytes(rng.randint(0, 256, 100).tolist()))
        else:
            text = path.read_text()
            if kind == 'truncate':
                path.write_text(text[:rng.randint(1, len(text) - 1)])
            elif kind == 'garbage':
                path.write_text(pick(rng, ['"x"', '3', 'null', '{}']
                                           if name == 'log' else
                                           ['[]', '"x"', '3', 'null']))
            else:
                value = json.loads(text)
                if name == 'log':
                    value = pick(rng, [{'epoch': 1}, 'log', [1, 2]])
                else:
                    value['model'] = pick(rng, 
                        [[1], 'capsnet', dict(value['model'], routing='3'),
                         dict(value['model'], routing=7)])
                path.write_text(json.dumps(value))
        return kind, ['train.py', *RUN, '--save', str(out)]
    return make


def mutate_affnist(rng, tmp):
    """A valid two-image affNIST batch, then one field mutated; evaluated
    by a (random) CapsNet built for 40x40 input."""
    import scipy.io
    model = tmp / 'model40.npz'
    numpy.random.seed(0)
    model_file.save(str(model), CapsNet(in_size=40))
    image = numpy.zeros((1600, 2), numpy.uint8)
    label = numpy.array([3, 7])
    kind = pick(rng, ['rows', 'count', 'label value', 'pixel value',
                       'missing', 'garbage'])
    if kind == 'rows':
        image = image[:rng.randint(1, 1600)]
    elif kind == 'count':
        label = label[:1]
    elif kind == 'label value':
        label = numpy.array([3, pick(rng, [10, 12, -1, 255])])
    elif kind == 'pixel value':
        image = image.astype(numpy.float64)
        image[rng.randint(0, 1600), 0] = pick(rng, [256.0, -1.0, 0.5])
    record = {'image': image, 'label_int': label}
    if kind == 'missing':
        del record[pick(rng, ['image', 'label_int'])]
    path = tmp / 'batch.mat'
    scipy.io.savemat(str(path), {'affNISTdata': record})
    if kind == 'garbage':
        path.write_bytes(bytes(rng.randint(0, 256, 500).tolist()))
    return kind, ['analyze.py', '--load', str(model), '--evaluate',
                  '--affnist', str(path)]


READERS = {
    'IDX images': mutate_idx('t10k-images-idx3-ubyte'),
    'IDX labels': mutate_idx('t10k-labels-idx1-ubyte'),
    'model .npz': mutate_model,
    'affNIST .mat': mutate_affnist,
}
RUN_FOLDER_READERS = {name: mutate_run_folder(name) for name in
                      ('snapshot_iter_4', 'options.json', 'log')}


def stops_with_one_line(command):
    result = run_here(*command, check=False)
    lines = result.stderr.strip().splitlines()
    return (result.returncode == 1 and len(lines) == 1 and
            lines[0].startswith('error: ')), result.stderr[-1500:]


def fuzz(make, tmp_path, *extra):
    cases = []
    for seed in range(CASES):
        tmp = tmp_path / str(seed)
        tmp.mkdir()
        cases.append(make(numpy.random.RandomState(seed), tmp, *extra))
    outcomes = [stops_with_one_line(command) for _, command in cases]
    bad = [(kind, stderr) for (kind, _), (ok, stderr) in zip(cases, outcomes)
           if not ok]
    assert not bad, bad


@pytest.mark.parametrize('reader', list(READERS))
def test_mutated_files_stop_with_one_line(reader, tmp_path):
    fuzz(READERS[reader], tmp_path)


@pytest.fixture(scope='module')
def run_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp('fuzz_run')
    run('train.py', *RUN[:-2], '-e', '1', '--save', str(out))
    return out


@pytest.mark.parametrize('reader', list(RUN_FOLDER_READERS))
def test_mutated_run_folders_stop_with_one_line(reader, tmp_path,
                                                 run_folder):
    fuzz(RUN_FOLDER_READERS[reader], tmp_path, run_folder)


def test_mutated_request_bodies_get_a_400(tmp_path):
    """The server's JSON body: each mutation of a valid request is answered
    400 with an error, and the server goes on answering."""
    with explorer_server(model_file.load(MODEL)) as url:
        rng = numpy.random.RandomState(0)
        valid = [0.5] * 784

        for _ in range(3 * CASES):
            image = list(valid)
            kind = pick(rng, ['value', 'type', 'length', 'key', 'nest',
                               'truncate'])
            k = rng.randint(0, 784)
            if kind == 'value':
                image[k] = pick(rng, [1.5, -0.1, float('nan'), 1e300])
            elif kind == 'type':
                image[k] = pick(rng, ['x', None, [0.5], {'a': 1}, True])
            elif kind == 'length':
                image = image[:rng.randint(0, 784)]
            body = {'image': image}
            if kind == 'key':
                body = {pick(rng, ['img', 'Image', '']): image}
            elif kind == 'nest':
                body = pick(rng, [[image], image, 'image', 3])
            raw = json.dumps(body).encode()
            if kind == 'truncate':
                raw = raw[:rng.randint(0, len(raw))]
            status, answer = request(url, raw)
            assert status == 400 and answer.get('error'), (kind, answer)
        assert request(url, json.dumps({'image': valid}).encode())[0] == 200


# --- image files, through --predict, the API and train.py --dataset -------
#
# Each case is a file made from a fixture digit; it ends in one error line
# (exit 1; the API raises a UserError naming the file) or in an answer.
# docs/robustness.md lists which, case by case.

def _png_chunk(raw, kind):
    """Offset of the chunk ``kind`` (bytes) in the PNG ``raw``."""
    return raw.index(kind) - 4


def _with_ihdr_size(raw, width, height):
    """A PNG whose header claims width x height, its checksum mended."""
    start = _png_chunk(raw, b'IHDR')
    raw[start + 8:start + 16] = width.to_bytes(4, 'big') + \
        height.to_bytes(4, 'big')
    raw[start + 21:start + 25] = zlib.crc32(
        bytes(raw[start + 4:start + 21])).to_bytes(4, 'big')
    return raw


def image_cases(digit):
    """{case: (file name, bytes, 'error' or 'answer')}."""
    from PIL import Image

    def encoded(image, fmt, **kwargs):
        buffer = io.BytesIO()
        image.save(buffer, fmt, **kwargs)
        return bytearray(buffer.getvalue())
    grey = Image.fromarray(255 - digit)                 # dark on light
    png, jpeg = encoded(grey, 'PNG'), encoded(grey, 'JPEG')
    idat = _png_chunk(png, b'IDAT')
    bad_crc = bytearray(png)
    bad_crc[idat + 8] ^= 0xFF               # the data, not its checksum
    palette = grey.convert('P')
    frames = [grey, Image.fromarray(digit)]
    return {
        'PNG cut in its header': ('a.png', png[:20], 'error'),
        'PNG cut in its pixels': ('a.png', png[:idat + 20], 'error'),
        'PNG cut at three quarters': ('a.png', png[:len(png) * 3 // 4],
                                      'error'),
        # every pixel is there: Pillow reads it without the end chunk
        'PNG without its last 20 bytes': ('a.png', png[:-20], 'answer'),
        'JPEG cut at half': ('a.jpg', jpeg[:len(jpeg) // 2], 'error'),
        'PNG with a bad checksum': ('a.png', bad_crc, 'error'),
        'PNG header of 0x0': ('a.png', _with_ihdr_size(bytearray(png), 0, 0),
                              'error'),
        'PNG header of 100,000 x 100,000': (
            'a.png', _with_ihdr_size(bytearray(png), 100000, 100000),
            'error'),
        '16-bit grey PNG': ('a.png', encoded(Image.fromarray(
            (255 - digit).astype(numpy.uint16) * 257), 'PNG'), 'answer'),
        'palette PNG with transparency': ('a.png', encoded(
            palette, 'PNG', transparency=0), 'answer'),
        'CMYK JPEG': ('a.jpg', encoded(grey.convert('CMYK'), 'JPEG'),
                      'answer'),
        'animated GIF': ('a.gif', encoded(frames[0], 'GIF', save_all=True,
                                          append_images=frames[1:]),
                         'answer'),
        '1x1 PNG': ('a.png', encoded(Image.new('L', (1, 1), 0), 'PNG'),
                    'error'),           # blank: no digit in it
        'text named .png': ('a.png', bytearray(b'not an image\n' * 10),
                            'error'),
        'empty file': ('a.png', bytearray(), 'error'),
    }


@pytest.fixture(scope='module')
def digit():
    """The fixture's first test digit, a 7 that the shipped model knows."""
    from capsnet import data
    images, labels = data.load('mnist', MNIST_FIXTURE, ('test',))['test']
    assert labels[0] == 7
    return images[0, 0]


@pytest.mark.parametrize('case', list(image_cases(
    numpy.zeros((28, 28), numpy.uint8))))
def test_image_files_end_in_one_line_or_an_answer(case, digit, tmp_path):
    import capsnet
    from capsnet.errors import UserError
    from PIL import Image
    name, raw, outcome = image_cases(digit)[case]
    path = tmp_path / name
    path.write_bytes(bytes(raw))
    result = run_here('analyze.py', '--load', MODEL, '--predict', str(path),
                      check=False)
    if outcome == 'error':
        ok, stderr = stops_with_one_line(['analyze.py', '--load', MODEL,
                                          '--predict', str(path)])
        assert ok and str(path) in stderr, stderr
        with pytest.raises(UserError, match=str(path)):
            capsnet.load(MODEL).classify([str(path)])
    else:
        assert result.returncode == 0, result.stderr
        # the digit itself, read right (16-bit levels not clipped, the
        # transparent ground white, the first frame of the GIF)
        assert json.loads(result.stdout)['predicted'] == 7
        assert capsnet.load(MODEL).classify([str(path)])[0].tolist() == [7]
    # the folder reader: the file among 28x28 digits of two classes
    tree = tmp_path / 'tree'
    for label in ('a', 'b'):
        (tree / label).mkdir(parents=True)
        for k in range(4):
            Image.fromarray(digit).save(tree / label / '{}.png'.format(k))
    shutil.copy(path, tree / 'a' / name)
    command = ['train.py', '--dataset', str(tree), '-e', '1', '-b', '4',
               '--save', str(tmp_path / 'run')]
    if outcome == 'error':      # the 1x1 one: not of the others' size
        ok, stderr = stops_with_one_line(command)
        assert ok and str(tree) in stderr, stderr
    else:
        run_here(*command)


def test_a_huge_image_is_refused_before_it_is_decoded(digit, tmp_path,
                                                        monkeypatch):
    """The header's size is checked first: had the 100,000 x 100,000 file
    been decoded, Pillow would have asked for 10 GB."""
    from capsnet import images
    from capsnet.errors import UserError
    from PIL import Image
    raw = _with_ihdr_size(bytearray(image_cases(digit)['16-bit grey PNG'][1]),
                          9000, 9000)
    path = tmp_path / 'huge.png'
    path.write_bytes(bytes(raw))
    decoded = []
    monkeypatch.setattr(Image.Image, 'load', lambda self: decoded.append(1))
    with pytest.raises(UserError, match='over the 40,000,000'):
        images.read(str(path))
    assert not decoded


def test_load_names_a_missing_or_damaged_model(tmp_path):
    import capsnet
    from capsnet.errors import UserError
    with pytest.raises(UserError, match=str(tmp_path / 'none')):
        capsnet.load(str(tmp_path / 'none'))
    (tmp_path / 'bad.npz').write_bytes(b'PK\x03\x04 damaged')
    with pytest.raises(UserError, match=str(tmp_path / 'bad.npz')):
        capsnet.load(str(tmp_path / 'bad.npz'))
