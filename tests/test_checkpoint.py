"""What a killed run leaves half-written is cleared, and nothing else; a
model file in half precision loads as the model's float32."""
import os

import numpy
import pytest

from capsnet import checkpoint
from capsnet.errors import UserError
from capsnet.model import CapsNet


def test_partial_files_go_and_finished_ones_stay(tmp_path):
    finished = ['model.npz', 'options.json', 'log', 'loss.png',
                'snapshot_iter_4', '.lock', 'log_notes.txt']
    partial_files = ['.model.npz.4242.partial', '.options.json.7.partial',
                     'loss.png.partial.png']
    # Chainer's snapshot and log writers write inside temporary folders
    partial_folders = ['tmpsnapshot_iter_8abc', 'logk2j3x']
    for name in finished + partial_files:
        (tmp_path / name).write_bytes(b'x')
    for name in partial_folders:
        (tmp_path / name).mkdir()
        (tmp_path / name / 'inside').write_bytes(b'x')
    checkpoint.remove_partial_files(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == sorted(finished)


def test_a_half_precision_model_file_loads_rounded_into_float32(tmp_path):
    model = CapsNet(n_classes=3, in_size=20)
    full, half = str(tmp_path / 'full.npz'), str(tmp_path / 'half.npz')
    checkpoint.save_model(full, model)
    checkpoint.save_model(half, model, numpy.float16)
    assert os.path.getsize(half) < 0.51 * os.path.getsize(full)
    loaded = dict(checkpoint.load_model(half).namedparams())
    assert loaded.keys() == dict(model.namedparams()).keys()
    for name, param in model.namedparams():
        assert loaded[name].dtype == numpy.float32
        numpy.testing.assert_array_equal(
            loaded[name].array, param.array.astype(numpy.float16), name)
    model.conv1.b.array[0] = 1e5            # beyond float16's 65,504
    with pytest.raises(UserError, match='conv1/b holds values beyond'):
        checkpoint.save_model(half, model, numpy.float16)


def test_a_file_from_before_the_routers_loads_as_dynamic_with_its_bias(
        tmp_path):
    """Written before the routers: no router or leaky_routing option, and
    the capsule bias as the model's digit_b."""
    import json
    numpy.random.seed(0)
    model = CapsNet(n_classes=3, in_size=20, capsule_bias=True)
    model.router.bias.array[...] = numpy.arange(48).reshape(3, 16)
    new = str(tmp_path / 'new.npz')
    checkpoint.save_model(new, model)
    with numpy.load(new) as npz:
        arrays = {('digit_b' if key == 'router/bias' else key): npz[key]
                  for key in npz.files}
    options = json.loads(str(arrays[checkpoint.OPTIONS_KEY]))
    del options['router'], options['leaky_routing']
    arrays[checkpoint.OPTIONS_KEY] = numpy.array(json.dumps(options))
    old = str(tmp_path / 'old.npz')
    numpy.savez(old, **arrays)
    loaded = checkpoint.load_model(old)
    assert loaded.options == model.options
    numpy.testing.assert_array_equal(loaded.router.bias.array,
                                     model.router.bias.array)
