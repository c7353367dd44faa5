"""CapsNet (Sabour, Frosst and Hinton, NIPS 2017) as Chainer links.

    x (N, 1, 28, 28)
    conv1     256 @ 9x9 / 1, ReLU, put
              channels-last (NHWC)           -> (N, 20, 20, 256)
    primary   32 types x 8-D @ 9x9 / 2       -> (N, 6, 6, 256)
              as capsules, squashed          -> u (N, I=1152, 8)
    digitcaps u_hat_{j|i} = W_ij u_i          -> (N, J=10, I, 16)
              a router (capsnet/routing.py;
              the paper's: dynamic)           -> v (N, J, 16)
    lengths   |v_j|                           -> (N, J)
    decoder   v masked to one capsule, 160 -> 512 -> 1024 -> 784 (sigmoid)

Primary capsule i = (y * G + x) * 32 + type on the G x G grid (G = 6 for
28x28 input), which is the NHWC memory order, so no transpose is needed.
"""
import chainer
import chainer.functions as F
import chainer.links as L
from chainer import initializers

from capsnet import functions
from capsnet import options
from capsnet.functions import multi_accuracy
from capsnet.ops import Ops
from capsnet.options import MAX_SIDE
from capsnet.options import Option
from capsnet.routing import ROUTERS

PRIMARY_TYPES = 32
PRIMARY_DIM = 8
DIGIT_DIM = 16
MIN_SIDE = 17       # what CapsNet's two 9x9 convolutions need; both models'
# The decoder, defined here alone: from the masked capsules (J * D) through
# these hidden layers (ReLU) to the pixels (sigmoid); its layers are fc1,
# fc2, ... The ops (functions.decoder, kernels' Decoder) and the explorer's
# page take any number of layers.
DECODER_HIDDEN = (512, 1024)

# What the data sets (train.py takes them from it), for both models
DATA_OPTIONS = (
    Option('n_classes', int, 10, 'classes: the digit capsules J', low=2,
           high=1000),
    Option('in_size', int, 28, 'input side (28 for MNIST, 36 for '
           'MultiMNIST)', low=MIN_SIDE, high=MAX_SIDE),
    Option('in_channels', int, 1, '1 for grey images, 3 for colour', low=1,
           high=3, before=1),
    Option('class_names', list, None, "the classes' names, kept with the "
           'model (None: the class numbers)', before=None),
    Option('subtract_ground', bool, False, "each image's ground taken to "
           'black and its brightest pixel to white before the model sees '
           'it (capsnet/images.py): set for your own data, where it is '
           'seldom black', before=False),
)


def _built(model, given):
    """``model``'s full options from the ``given`` ones; ValueError for one
    it cannot be built with."""
    resolved = options.resolve(model.OPTIONS, given)
    wrong = options.check(model.OPTIONS, resolved)
    if wrong:
        raise ValueError('option {} = {!r}: it {}'.format(*wrong))
    return resolved


class CapsNet(chainer.Chain):
    """The paper's CapsNet; its OPTIONS, keyword arguments, select Table 1's
    variants and the routers.

    ``fused``: run each op's fast kernel in capsnet/kernels/ where there is
    one (default), or every op's plain Chainer composition in
    capsnet/functions.py (train.py --plain), which is easier to modify;
    same parameters, same results.
    """

    arch = 'capsnet'
    MIN_SIDE = MIN_SIDE
    OPTIONS = DATA_OPTIONS + (
        Option('router', str, 'dynamic', 'how the digit capsules are made '
               "from the primary capsules' predictions (capsnet/routing.py; "
               'a router registered there before train.main runs is a '
               'choice too); it gets every option and takes those it uses',
               source="dynamic: the paper's", flag='--router',
               choices=lambda: sorted(ROUTERS), before='dynamic'),
        Option('routing', int, 3, 'routing iterations, for the routers that '
               'iterate (1: no routing)', source="3: the paper's", low=1,
               high=100, flag='--routing'),
        Option('reconstruct', bool, True, 'decoder and reconstruction loss',
               source='the paper', flag='--reconstruct'),
        Option('shared_weights', bool, False, "the seed's variant: one W per "
               'capsule type shared across the grid (32 x 10 x 16 x 8) '
               'instead of one per capsule', flag='--shared-weights'),
        Option('leaky_slope', float, 0.0, "leaky ReLU slope for conv1; 0 is "
               "the paper's ReLU (the seed's best run used 0.05)", low=0,
               high=1, high_open=True, flag='--leaky-slope'),
        Option('capsule_bias', bool, False, "the official code's learned "
               '(J, 16) bias on every s_j, in every routing iteration, from '
               '0.1 (the paper has none); dynamic routing\'s',
               flag='--capsule-bias', before=False),
        Option('leaky_routing', bool, False, 'dynamic routing with the '
               "official code's extra 'none of the above' logit",
               flag='--leaky-routing', before=False),
    )
    # what files made before an option existed stand for
    IMPLICIT_OPTIONS = options.implicit(OPTIONS)

    def __init__(self, fused=True, **given):
        super().__init__()
        self.ops = Ops(fast=fused)
        self.options = _built(self, given)
        (n_classes, router, shared_weights, reconstruct, in_size,
         in_channels) = (self.options[name] for name in (
             'n_classes', 'router', 'shared_weights', 'reconstruct',
             'in_size', 'in_channels'))
        self.grid = ((in_size - 8) - 9) // 2 + 1                 # 6 for 28
        n_primary = self.grid ** 2 * PRIMARY_TYPES               # 1152
        n_weights = PRIMARY_TYPES if shared_weights else n_primary
        with self.init_scope():
            self.conv1 = L.Convolution2D(in_channels, 256, 9)
            # PrimaryCaps' convolution is channels-last (NHWC): grid position
            # major, so its output reshapes into capsules without a copy
            self.primary_W = chainer.Parameter(
                initializers.LeCunNormal(),
                (PRIMARY_TYPES * PRIMARY_DIM, 9, 9, 256))
            self.primary_b = chainer.Parameter(
                0, (PRIMARY_TYPES * PRIMARY_DIM,))
            # W[i, j]: the (16, 8) matrix mapping child i to parent j
            self.digit_W = chainer.Parameter(
                initializers.Normal(0.01),
                (n_weights, n_classes, DIGIT_DIM, PRIMARY_DIM))
            self.router = ROUTERS[router](
                n_in=n_primary, n_out=n_classes, dim=DIGIT_DIM,
                child_dim=PRIMARY_DIM, ops=self.ops, **self.options)
            if reconstruct:
                sizes = ((n_classes * DIGIT_DIM,) + DECODER_HIDDEN +
                         (in_channels * in_size * in_size,))
                for k, (n_in, n_out) in enumerate(zip(sizes, sizes[1:]), 1):
                    setattr(self, 'fc{}'.format(k), L.Linear(n_in, n_out))

    def decoder_layers(self):
        """The decoder's Linear layers, first to last."""
        return [getattr(self, 'fc{}'.format(k))
                for k in range(1, len(DECODER_HIDDEN) + 2)]

    def with_loss(self, recon_weight=0.0005, margin_loss='paper', **_):
        """The Trainer's target: CapsNetLoss, with the margin loss of the
        paper (Eq. 4 summed over classes) or of the official code
        ('official': halved and averaged over the classes)."""
        return CapsNetLoss(self, recon_weight, margin_scale=(
            1.0 if margin_loss == 'paper' else
            functions.OFFICIAL_MARGIN_SCALE / self.options['n_classes']))

    def primary_capsules(self, x):
        """x (N, C, H, W) -> u (N, G, G, 32, 8), squashed."""
        n = len(x)
        h = self.ops.convolution_relu_nhwc(
            x, self.conv1.W, self.conv1.b,
            self.options['leaky_slope'])                     # (N, 20, 20, 256)
        p = self.ops.convolution_2d_nhwc(
            h, self.primary_W, self.primary_b, stride=2)     # (N, G, G, 256)
        p = F.reshape(p, (n, self.grid, self.grid, PRIMARY_TYPES, PRIMARY_DIM))
        return self.ops.squash(p)

    def predictions(self, u):
        """u (N, G, G, T, 8) -> u_hat (N, J, I, 16), I = G * G * T; W_ij is
        one matrix per capsule i, or per type (shared)."""
        return self.ops.capsule_predictions(u, self.digit_W)

    def capsules(self, x):
        """x (N, C, H, W) -> digit capsules v (N, J, 16), and the router's
        couplings (N, J, I) as an array (None where it has none)."""
        u = self.primary_capsules(x)                       # (N, G, G, T, 8)
        v = self.router(self.predictions(u),
                        F.reshape(u, (len(u), -1, PRIMARY_DIM)))
        return v, self.router.couplings

    def decode(self, v, labels):
        """Reconstruct from capsule ``labels[n]`` of v (N, J, 16) alone:
        -> (N, C * H * W) in [0, 1]."""
        return self.ops.decoder(
            self.ops.masked_capsules(v, labels), *(
                p for layer in self.decoder_layers()
                for p in (layer.W, layer.b)))

    def predict(self, x):
        """Class scores (N, J): the capsule lengths."""
        v, _ = self.capsules(x)
        return self.ops.length(v)

    def forward(self, x, t=None):
        """x (N, 1, H, W) -> lengths (N, J), reconstruction (N, H*W) or None.

        The decoder sees the true label's capsule while training and the
        longest capsule otherwise (and whenever ``t`` is None).
        """
        v, _ = self.capsules(x)
        lengths = self.ops.length(v)
        if not self.options['reconstruct']:
            return lengths, None
        if t is None or not chainer.config.train:
            t = lengths.array.argmax(axis=1)
        return lengths, self.decode(v, t)


class BaselineCNN(chainer.Chain):
    """The paper's baseline: three 5x5 convolutions (256, 256, 128 channels,
    stride 1, same padding, no pooling, ReLU), fully connected layers of 328
    and 192 units, and 10 logits: 35.4M parameters, most of them in the
    first fully connected layer (128 * 28 * 28 inputs).

    ``dropout_after``: 'last', the paper's "the last fully connected layer
    is connected with dropout to a 10 class softmax layer", or 'both' fully
    connected hidden layers (capsnet's earlier default).
    """

    arch = 'baseline'
    MIN_SIDE = MIN_SIDE     # one floor for both (5x5 needs only 1)
    OPTIONS = DATA_OPTIONS + (
        Option('dropout', float, 0.5, 'dropout ratio', low=0, high=1,
               high_open=True),
        Option('dropout_after', str, 'last', "the baseline CNN's dropout: "
               "before the softmax layer only (last, the paper's) or after "
               'both hidden layers', choices=('last', 'both'),
               flag='--baseline-dropout', before='both'),
    )
    IMPLICIT_OPTIONS = options.implicit(OPTIONS)

    def __init__(self, fused=True, **given):
        super().__init__()
        self.ops = Ops(fast=fused)
        self.options = _built(self, given)
        n_classes, in_size, in_channels = (self.options[name] for name in (
            'n_classes', 'in_size', 'in_channels'))
        with self.init_scope():
            self.conv1 = L.Convolution2D(in_channels, 256, 5, pad=2)
            self.conv2 = L.Convolution2D(256, 256, 5, pad=2)
            self.conv3 = L.Convolution2D(256, 128, 5, pad=2)
            self.fc1 = L.Linear(128 * in_size * in_size, 328)
            self.fc2 = L.Linear(328, 192)
            self.fc3 = L.Linear(192, n_classes)

    def with_loss(self, **_):
        """The Trainer's target: softmax cross-entropy and accuracy."""
        return L.Classifier(self)

    def forward(self, x):
        """x (N, 1, H, W) -> logits (N, n_classes)."""
        ratio = self.options['dropout']
        h = x
        for conv in (self.conv1, self.conv2, self.conv3):
            h = F.relu(self.ops.convolution_2d(h, conv.W, conv.b, pad=2))
        h = F.relu(self.fc1(h))
        if self.options['dropout_after'] == 'both':
            h = F.dropout(h, ratio)
        h = F.dropout(F.relu(self.fc2(h)), ratio)
        return self.fc3(h)

    def predict(self, x):
        """Class scores (N, n_classes): the logits."""
        return self(x)


ARCHITECTURES = {'capsnet': CapsNet, 'baseline': BaselineCNN}


class CapsNetLoss(chainer.Chain):
    """Margin loss x margin_scale + recon_weight x reconstruction loss;
    reports loss, margin_loss (scaled), recon_loss and accuracy (the
    Trainer's optimizer target).

    One digit per image: x (N, 1, H, W), t (N,); the decoder sees the true
    class's capsule while training and the longest one otherwise.
    Several (MultiMNIST): t (N, K) and ``singles`` (N, K, 1, H, W), each
    digit alone; each digit is decoded from its own capsule and compared
    with its single image, the errors summed; accuracy asks that the K
    longest capsules be the K digits.
    """

    def __init__(self, model, recon_weight=0.0005, margin_scale=1.0):
        super().__init__()
        self.recon_weight = recon_weight
        self.margin_scale = margin_scale
        with self.init_scope():
            self.model = model

    def forward(self, x, t, singles=None):
        ops = self.model.ops
        if t.ndim == 1:
            lengths, reconstruction = self.model(x, t)
            accuracy = F.accuracy(lengths, t)
            targets = [(reconstruction, x)]
        else:
            v, _ = self.model.capsules(x)
            lengths = ops.length(v)
            accuracy = multi_accuracy(lengths, t)
            targets = [(self.model.decode(v, t[:, k]), singles[:, k])
                       for k in range(t.shape[1])]
        loss = ops.margin_loss(lengths, t, scale=self.margin_scale)
        chainer.report({'margin_loss': loss, 'accuracy': accuracy}, self)
        if self.model.options['reconstruct']:
            errors = [ops.reconstruction_loss(r, target)
                      for r, target in targets]
            recon = sum(errors[1:], errors[0])      # no node for a '0 +'
            loss = loss + self.recon_weight * recon
            chainer.report({'recon_loss': recon}, self)
        chainer.report({'loss': loss}, self)
        return loss
