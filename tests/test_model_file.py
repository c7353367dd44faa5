"""A model file in half precision loads as the model's float32; a file
written before the routers loads as today's model."""
import os

import numpy
import pytest

from capsnet import model_file
from capsnet.errors import UserError
from capsnet.model import CapsNet


def test_a_half_precision_model_file_loads_rounded_into_float32(tmp_path):
    model = CapsNet(n_classes=3, in_size=20)
    full, half = str(tmp_path / 'full.npz'), str(tmp_path / 'half.npz')
    model_file.save(full, model)
    model_file.save(half, model, numpy.float16)
    assert os.path.getsize(half) < 0.51 * os.path.getsize(full)
    loaded = dict(model_file.load(half).namedparams())
    assert loaded.keys() == dict(model.namedparams()).keys()
    for name, param in model.namedparams():
        assert loaded[name].dtype == numpy.float32
        numpy.testing.assert_array_equal(
            loaded[name].array, param.array.astype(numpy.float16), name)
    model.conv1.b.array[0] = 1e5            # beyond float16's 65,504
    with pytest.raises(UserError, match='conv1/b holds values beyond'):
        model_file.save(half, model, numpy.float16)


def test_a_file_from_before_the_routers_loads_as_dynamic_with_its_bias(
        tmp_path):
    """Written before the routers: no router or leaky_routing option, and
    the capsule bias as the model's digit_b."""
    import json
    numpy.random.seed(0)
    model = CapsNet(n_classes=3, in_size=20, capsule_bias=True)
    model.router.bias.array[...] = numpy.arange(48).reshape(3, 16)
    new = str(tmp_path / 'new.npz')
    model_file.save(new, model)
    with numpy.load(new) as npz:
        arrays = {('digit_b' if key == 'router/bias' else key): npz[key]
                  for key in npz.files}
    options = json.loads(str(arrays[model_file.OPTIONS_KEY]))
    del options['router'], options['leaky_routing']
    arrays[model_file.OPTIONS_KEY] = numpy.array(json.dumps(options))
    old = str(tmp_path / 'old.npz')
    numpy.savez(old, **arrays)
    loaded = model_file.load(old)
    assert loaded.options == model.options
    numpy.testing.assert_array_equal(loaded.router.bias.array,
                                     model.router.bias.array)
