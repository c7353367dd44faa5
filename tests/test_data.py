"""IDX files, downloads from a local HTTP server, splits and shifts."""
import functools
import gzip
import hashlib
import http.server
import os
import shutil
import threading

import numpy
import pytest

import chainer
from chainer.datasets import TupleDataset

from capsnet import data
from capsnet.errors import UserError

from conftest import MNIST_FIXTURE


def idx_bytes(array):
    """An IDX file of unsigned bytes holding ``array``."""
    header = bytes([0, 0, 0x08, array.ndim]) + b''.join(
        d.to_bytes(4, 'big') for d in array.shape)
    return header + array.astype(numpy.uint8).tobytes()


def test_parse_idx_round_trip():
    a = numpy.arange(24, dtype=numpy.uint8).reshape(2, 3, 4)
    numpy.testing.assert_array_equal(data.parse_idx(idx_bytes(a), 'f'), a)


@pytest.mark.parametrize('raw,message', [
    (b'\x00\x00\x0d\x01', 'not an IDX file'),          # float32 type code
    (b'PK\x03\x04', 'not an IDX file'),
    (b'\x00\x00\x08\x03\x00\x00', 'incomplete header'),
    (idx_bytes(numpy.zeros((2, 3)))[:-1], 'truncated or corrupt'),
])
def test_parse_idx_errors(raw, message):
    with pytest.raises(UserError, match=message):
        data.parse_idx(raw, 'f')


def test_fixture_is_real_mnist():
    arrays = data.load('mnist', MNIST_FIXTURE)
    images, labels = arrays['train']
    assert images.shape == (2000, 1, 28, 28) and images.dtype == numpy.uint8
    assert labels.dtype == numpy.int32 and set(labels) == set(range(10))
    # the first training image of MNIST is a 5, the first test image a 7
    assert labels[0] == 5 and arrays['test'][1][0] == 7


def test_reads_uncompressed_files_too(tmp_path):
    for name in os.listdir(MNIST_FIXTURE):
        with gzip.open(os.path.join(MNIST_FIXTURE, name)) as f:
            (tmp_path / name[:-3]).write_bytes(f.read())
    plain = data.load('mnist', str(tmp_path), ('test',))['test']
    gz = data.load('mnist', MNIST_FIXTURE, ('test',))['test']
    numpy.testing.assert_array_equal(plain[0], gz[0])


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(UserError, match='is not a folder'):
        data.load('mnist', str(tmp_path / 'nowhere'))
    with pytest.raises(UserError, match=r'has no t10k-images-idx3-ubyte'):
        data.load('mnist', str(tmp_path), ('test',))
    shutil.copytree(MNIST_FIXTURE, tmp_path / 'm')
    path = tmp_path / 'm' / 't10k-images-idx3-ubyte.gz'
    path.write_bytes(path.read_bytes()[:5000])             # cut short
    with pytest.raises(UserError, match='cannot read'):
        data.load('mnist', str(tmp_path / 'm'), ('test',))


def test_images_and_labels_must_agree(tmp_path):
    shutil.copytree(MNIST_FIXTURE, tmp_path / 'm')
    labels = numpy.zeros(3, dtype=numpy.uint8)
    with gzip.open(tmp_path / 'm' / 't10k-labels-idx1-ubyte.gz', 'wb') as f:
        f.write(idx_bytes(labels))
    with pytest.raises(UserError, match='do not match'):
        data.load('mnist', str(tmp_path / 'm'), ('test',))


@pytest.mark.parametrize('stem,array,message', [
    ('t10k-labels-idx1-ubyte', numpy.full(500, 12), 'labels-idx1-ubyte.gz: '
     'the labels hold 12; MNIST-format labels are 0 to 9'),
    ('t10k-images-idx3-ubyte', numpy.zeros((500, 32, 32)), 'images-idx3-'
     'ubyte.gz: the images are 32x32; MNIST-format images are 28x28'),
])
def test_label_values_and_image_sides_are_checked(tmp_path, stem, array,
                                                   message):
    shutil.copytree(MNIST_FIXTURE, tmp_path / 'm')
    with gzip.open(tmp_path / 'm' / (stem + '.gz'), 'wb') as f:
        f.write(idx_bytes(array))
    with pytest.raises(UserError, match=message):
        data.load('mnist', str(tmp_path / 'm'), ('test',))


def test_a_huge_idx_header_is_refused_without_allocating():
    raw = bytes([0, 0, 0x08, 3]) + b''.join(
        (2 ** 31).to_bytes(4, 'big') for _ in range(3)) + b'\0' * 10
    with pytest.raises(UserError, match='truncated or corrupt'):
        data.parse_idx(raw, 'f')


def test_splits():
    arrays = data.load('mnist', MNIST_FIXTURE)
    train, val, test = data.split_arrays(arrays, 500, 300, 100)
    assert [len(images) for images, _ in (train, val, test)] == [300, 500, 100]
    # validation is the last 500 training images, apart from training
    numpy.testing.assert_array_equal(val[0][0], arrays['train'][0][1500])
    train, val, _ = data.split_arrays(arrays, 0)
    assert len(train[0]) == len(train[1]) == 2000 and val is None
    with pytest.raises(UserError, match='--val-size'):
        data.split_arrays(arrays, 2000)


def test_random_shift_moves_each_image_by_its_own_offset():
    images = numpy.zeros((200, 1, 28, 28), dtype=numpy.uint8)
    images[:, 0, 14, 14] = 255
    shifted = data.random_shift(images, 2, numpy.random.default_rng(0))
    assert shifted.shape == images.shape
    ys, xs = numpy.nonzero(shifted[:, 0].reshape(200, -1) == 255)[1] \
        .__divmod__(28)
    assert len(ys) == 200                       # nothing lost at 2 px
    assert set(ys - 14) == set(xs - 14) == set(range(-2, 3))
    assert len(set(zip(ys, xs))) == 25          # every (dy, dx) occurs


def test_random_shift_fills_with_zeros():
    images = numpy.full((50, 1, 4, 4), 9, dtype=numpy.uint8)
    shifted = data.random_shift(images, 1, numpy.random.default_rng(1))
    moved = shifted.reshape(50, -1).min(axis=1) == 0
    assert moved.any() and set(numpy.unique(shifted)) <= {0, 9}


def test_batch_converter():
    arrays = data.load('mnist', MNIST_FIXTURE, ('test',))
    test = TupleDataset(*arrays['test'])
    x, t = data.BatchConverter()(test[:4], chainer.get_device('@numpy'))
    assert x.dtype == numpy.float32 and x.shape == (4, 1, 28, 28)
    assert 0 <= x.min() and x.max() == 1
    numpy.testing.assert_array_equal(t, arrays['test'][1][:4])


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def mirrors(tmp_path):
    """Two mirrors on 127.0.0.1: 'good/' serves the fixture, 'bad/' serves
    corrupt copies; anything else is a 404."""
    root = tmp_path / 'www'
    shutil.copytree(MNIST_FIXTURE, root / 'good')
    (root / 'bad').mkdir()
    for name in os.listdir(MNIST_FIXTURE):
        (root / 'bad' / name).write_bytes(gzip.compress(b'not mnist'))
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield 'http://127.0.0.1:{}/'.format(server.server_address[1])
    server.shutdown()


def fixture_md5s():
    md5s = {}
    for name in os.listdir(MNIST_FIXTURE):
        with gzip.open(os.path.join(MNIST_FIXTURE, name)) as f:
            md5s[name[:-3]] = hashlib.md5(f.read()).hexdigest()
    return md5s


def test_download_tries_the_next_mirror(mirrors, tmp_path):
    dest = str(tmp_path / 'cache')
    data.download(dest, fixture_md5s(),
                  [mirrors + 'missing/', mirrors + 'bad/', mirrors + 'good/'])
    assert sorted(os.listdir(dest)) == sorted(os.listdir(MNIST_FIXTURE))
    numpy.testing.assert_array_equal(
        data.load('mnist', dest)['train'][0],
        data.load('mnist', MNIST_FIXTURE)['train'][0])


def test_download_fails_with_every_reason(mirrors, tmp_path):
    dest = tmp_path / 'cache'
    with pytest.raises(UserError) as e:
        data.download(str(dest), fixture_md5s(),
                      [mirrors + 'missing/', mirrors + 'bad/'])
    message = str(e.value)
    assert '404' in message and 'checksum' in message
    assert '--data-dir' in message and '\n' not in message
    assert os.listdir(dest) == []              # nothing half-written


@pytest.fixture
def dataset_root(tmp_path):
    """Chainer's dataset cache, moved into tmp_path for one test."""
    old = chainer.dataset.get_dataset_root()
    chainer.dataset.set_dataset_root(str(tmp_path / 'root'))
    yield tmp_path / 'root'
    chainer.dataset.set_dataset_root(old)


def test_load_downloads_once_into_chainers_cache(mirrors, dataset_root,
                                                 monkeypatch):
    monkeypatch.setitem(data.DATASETS, 'mnist', {
        'mirrors': [mirrors + 'good/'], 'md5': fixture_md5s()})
    first = data.load('mnist')
    cache = dataset_root / 'capsnet' / 'mnist'
    assert len(os.listdir(cache)) == 4
    monkeypatch.setitem(data.DATASETS['mnist'], 'mirrors', [])   # offline
    numpy.testing.assert_array_equal(data.load('mnist')['test'][0],
                                     first['test'][0])


def test_offline_without_files_says_how_to_supply_them(dataset_root,
                                                        monkeypatch):
    monkeypatch.setitem(data.DATASETS['mnist'], 'mirrors',
                        ['http://127.0.0.1:9/'])          # nothing listens
    with pytest.raises(UserError, match='--data-dir'):
        data.load('mnist')


def test_place_on_canvas():
    images = numpy.arange(2 * 28 * 28, dtype=numpy.uint8).reshape(2, 1, 28, 28)
    centred = data.place_on_canvas(images, 40)
    numpy.testing.assert_array_equal(centred[:, :, 6:34, 6:34], images)
    assert centred.sum() == images.sum()
    placed = data.place_on_canvas(numpy.ones((300, 1, 28, 28)), 40,
                                  numpy.random.default_rng(0))
    tops = placed[:, 0].any(axis=2).argmax(axis=1)
    lefts = placed[:, 0].any(axis=1).argmax(axis=1)
    assert set(tops) == set(lefts) == set(range(13))   # every position
    assert (placed.sum(axis=(1, 2, 3)) == 28 * 28).all()


def test_a_gzipped_idx_file_is_unpacked_no_further_than_its_header_says(
        tmp_path):
    """A 1 GB run of zeros behind a header that claims 10 bytes is refused
    after at most 11 bytes of data are unpacked."""
    shutil.copytree(MNIST_FIXTURE, tmp_path / 'm')
    path = tmp_path / 'm' / 't10k-labels-idx1-ubyte.gz'
    with gzip.open(path, 'wb') as f:
        f.write(idx_bytes(numpy.zeros(10)))
        for _ in range(1024):
            f.write(bytes(1 << 20))
    with pytest.raises(UserError, match='more data than its header says'):
        data.load('mnist', str(tmp_path / 'm'), ('test',))
