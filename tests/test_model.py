"""CapsNet: parameter counts, shapes, masking and the shared-weights variant."""
import numpy
import pytest

import chainer
import chainer.functions as F

from capsnet.model import CapsNet
from capsnet.model import CapsNetLoss


def n_params(model):
    return sum(p.size for p in model.params())


@pytest.mark.parametrize('options,count', [
    ({}, 8215568),                                  # the paper's, as stated
    ({'reconstruct': False}, 6804224),
    # the seed's: one W (10 x 16 x 8) per capsule type, 32 of them
    ({'shared_weights': True}, 8215568 - (1152 - 32) * 10 * 16 * 8),
    ({'capsule_bias': True}, 8215568 + 10 * 16),     # the official code's
])
def test_parameter_counts(options, count):
    assert n_params(CapsNet(**options)) == count


@pytest.fixture(scope='module')
def model():
    numpy.random.seed(0)
    return CapsNet()


@pytest.fixture(scope='module')
def images():
    return numpy.random.RandomState(0).rand(3, 1, 28, 28).astype('f')


def test_shapes(model, images):
    u = model.primary_capsules(images)
    assert u.shape == (3, 6, 6, 32, 8)
    # squashed: every primary capsule is shorter than 1
    assert (numpy.linalg.norm(u.array, axis=-1) < 1).all()
    u_hat = model.predictions(u)
    assert u_hat.shape == (3, 10, 1152, 16)
    v, c = model.capsules(images)
    assert v.shape == (3, 10, 16) and c.shape == (3, 10, 1152)
    lengths, recon = model(images)
    assert lengths.shape == (3, 10) and recon.shape == (3, 784)
    assert 0 <= recon.array.min() and recon.array.max() <= 1


def test_predictions_use_W_ij(model, images):
    # capsule i = (y * 6 + x) * 32 + type; u_hat_{j|i} = W_ij u_i
    u = model.primary_capsules(images).array
    u_hat = model.predictions(u).array
    n, y, x, kind, j = 1, 2, 5, 7, 4
    i = (y * 6 + x) * 32 + kind
    numpy.testing.assert_allclose(
        u_hat[n, j, i], model.digit_W.array[i, j] @ u[n, y, x, kind], rtol=1e-5)


def test_shared_weights_equal_unshared_weights_tiled(images):
    shared = CapsNet(shared_weights=True)
    unshared = CapsNet()
    unshared.digit_W.array[...] = numpy.tile(shared.digit_W.array, (36, 1, 1, 1))
    u = shared.primary_capsules(images).array
    numpy.testing.assert_allclose(shared.predictions(u).array,
                                  unshared.predictions(u).array, rtol=1e-6)


def test_only_the_masked_capsule_changes_the_reconstruction(model):
    rng = numpy.random.RandomState(1)
    v = rng.rand(2, 10, 16).astype('f')
    labels = numpy.array([3, 7])
    before = model.decode(v, labels).array
    other = v.copy()
    other[0, 5] += 1                 # capsule 5 is masked out for image 0
    other[1, 3] += 1
    numpy.testing.assert_array_equal(model.decode(other, labels).array,
                                     before)
    other[0, 3] += 1                 # the masked capsule itself
    assert not numpy.allclose(model.decode(other, labels).array[0],
                              before[0])


def test_mask_is_true_label_in_training_and_longest_capsule_in_test(
        model, images):
    v, _ = model.capsules(images)
    longest = (v.array ** 2).sum(-1).argmax(1)
    other = (longest + 1) % 10
    with chainer.using_config('train', True):
        _, recon_train = model(images, other)
    with chainer.using_config('train', False):
        _, recon_test = model(images, other)
    numpy.testing.assert_allclose(recon_train.array,
                                  model.decode(v, other).array, rtol=1e-6)
    numpy.testing.assert_allclose(recon_test.array,
                                  model.decode(v, longest).array, rtol=1e-6)


def test_loss_reports_and_reconstruction_switch(images):
    t = numpy.array([1, 2, 3], dtype=numpy.int32)
    for reconstruct in (True, False):
        loss = CapsNetLoss(CapsNet(reconstruct=reconstruct))
        reporter = chainer.Reporter()
        reporter.add_observer('main', loss)
        observation = {}
        with reporter.scope(observation):
            value = loss(images, t)
        keys = {k.split('/')[-1] for k in observation}
        assert {'loss', 'margin_loss', 'accuracy'} <= keys
        assert ('recon_loss' in keys) == reconstruct
        assert float(value.array) > 0


@pytest.mark.parametrize('routing', [1, 2])
def test_routing_iterations_option(images, routing):
    _, c = CapsNet(routing=routing, reconstruct=False).capsules(images[:1])
    assert numpy.allclose(c, 0.1) == (routing == 1)


def test_capsule_bias_starts_at_the_official_0_1_and_learns(images):
    numpy.random.seed(0)
    model = CapsNet(capsule_bias=True)
    numpy.testing.assert_array_equal(model.router.bias.array, numpy.float32(0.1))
    loss = CapsNetLoss(model)
    loss.cleargrads()
    loss(images, numpy.array([0, 1, 2], numpy.int32)).backward()
    assert model.router.bias.grad.shape == (10, 16)
    assert numpy.abs(model.router.bias.grad).min() > 0


@pytest.mark.parametrize('placement,dropouts', [('last', 1), ('both', 2)])
def test_baseline_dropout_placement(placement, dropouts):
    """The paper: dropout only between the last hidden layer and the
    softmax layer."""
    from capsnet.model import BaselineCNN
    model = BaselineCNN(dropout_after=placement)
    y = model(numpy.zeros((1, 1, 28, 28), dtype=numpy.float32))
    seen, found, stack = set(), [], [y.creator_node]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        found.append(node)
        stack.extend(x.creator_node for x in node.inputs)
    names = [node.label for node in found]
    assert names.count('Dropout') == dropouts
    # the last dropout feeds the logits' layer directly
    assert y.creator_node.inputs[0].creator_node.label == 'Dropout'


def test_baseline_cnn_parameters_and_shapes():
    from capsnet.model import BaselineCNN
    model = BaselineCNN()
    # 6,656 + 1,638,656 + 819,328 + 32,915,784 + 63,168 + 1,930
    assert n_params(model) == 35445522
    x = numpy.random.RandomState(0).rand(2, 1, 28, 28).astype(numpy.float32)
    with chainer.using_config('train', False):
        scores = model.predict(x).array
    # the logits by hand from the layers' weights, Chainer's own convolution
    # and no dropout (evaluation)
    h = x
    for conv in (model.conv1, model.conv2, model.conv3):
        h = F.relu(F.convolution_2d(h, conv.W, conv.b, pad=2)).array
    h = h.reshape(len(h), -1)
    for fc in (model.fc1, model.fc2):
        h = numpy.maximum(h @ fc.W.array.T + fc.b.array, 0)
    logits = h @ model.fc3.W.array.T + model.fc3.b.array
    assert scores.shape == (2, 10)
    numpy.testing.assert_allclose(scores, logits, rtol=1e-4, atol=1e-5)


class CountCalls(chainer.FunctionHook):
    """Chainer function calls: forwards (the backward pass calls some too)
    and backwards."""

    name = 'count_calls'

    def __init__(self):
        self.calls = 0

    def forward_preprocess(self, function, in_data):
        self.calls += 1

    def backward_preprocess(self, function, in_data, out_grad):
        self.calls += 1


def test_a_training_step_makes_at_most_40_function_calls(images):
    """Each call costs Python overhead, and a kernel launch on a GPU: the
    fused kernels keep a whole step (forward, backward, update) to 38."""
    numpy.random.seed(0)
    loss = CapsNetLoss(CapsNet())
    optimizer = chainer.optimizers.Adam()
    optimizer.setup(loss)
    t = numpy.array([0, 1, 2], numpy.int32)
    optimizer.update(loss, images, t)            # Adam's state is made here
    with CountCalls() as hook:
        optimizer.update(loss, images, t)
    assert hook.calls <= 40
