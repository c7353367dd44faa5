"""Routers: how the child capsules' predictions become the parent capsules.

A router is a Chainer Link registered under a name; ``train.py --router
NAME`` builds the model with it, and a model file names its router, so it
loads wherever that router is registered. A router written anywhere plugs
in the same way as the four here::

    from capsnet import routing

    @routing.register('mean')               # or routing.ROUTERS['mean'] = Mean
    class Mean(routing.Router):
        def forward(self, u_hat, u):
            return self.ops.squash(F.mean(u_hat, axis=2))

The contract:

- Constructed with keyword arguments: ``n_in`` (I child capsules),
  ``n_out`` (J parents), ``dim`` (D, a parent's dimensions), ``child_dim``
  (K), ``ops`` (capsnet.ops: the fast or readable capsule functions) and
  the model's options (``routing``: the iterations, ``capsule_bias``,
  ``leaky_routing``, ``n_classes``, ...). A router takes what it needs and
  accepts the rest (``**options``); it creates its own parameters.
- Called with the predictions ``u_hat`` (N, J, I, D), a Variable, u_hat[n,
  j, i] = W_ij u_i, and the child capsules ``u`` (N, I, K) that made them
  (self-routing reads them; most routers ignore them). Parents first: the
  layout the prediction kernel writes and routing reads row by row.
- Returns the parent capsules v (N, J, D). Their lengths are the class
  scores, so they lie in [0, 1) for the margin loss.
- Sets ``self.couplings`` to the couplings c (N, J, I) of that call, as an
  array, for the routing figures; a router without couplings leaves None.

Axis names as in capsnet/functions.py: N batch, I children, J parents, K a
child's dimensions, D a parent's.
"""
import chainer
import chainer.functions as F
import chainer.links as L
from chainer import backend

from capsnet import functions

ROUTERS = {}


def register(name):
    """Class decorator: ``ROUTERS[name] = cls``."""
    def add(cls):
        ROUTERS[name] = cls
        return cls
    return add


class Router(chainer.Chain):
    """What every router shares: ``ops``, and ``couplings`` after a call."""

    couplings = None

    def __init__(self, ops=functions, **options):
        super().__init__()
        self.ops = ops


def weighted_sum(c, u_hat):
    """s_j = sum_i c_ij u_hat_{j|i}: c (N, J, I), u_hat (N, J, I, D) ->
    (N, J, D), as one batched product."""
    n, j, i, d = u_hat.shape
    s = F.matmul(F.reshape(c, (n * j, 1, i)),
                 F.reshape(u_hat, (n * j, i, d)))
    return F.reshape(s, (n, j, d))


@register('dynamic')
class Dynamic(Router):
    """Routing by agreement, the paper's Procedure 1, with ``routing``
    iterations (1: the uniform coupling 1/J).

    ``capsule_bias``: the official code's learned (J, D) bias on every s_j,
    in every iteration, starting at 0.1. ``leaky_routing``: the official
    code's extra zero logit beside the J parents' in each softmax (its
    ``leaky=true``), a "none of the above" route that lets a child send
    less than all of itself to the digits; the paper uses it on CIFAR-10.
    Runs on the fast kernel, except with leaky routing, which only the
    readable composition has.
    """

    def __init__(self, n_out, dim, routing=3, capsule_bias=False,
                 leaky_routing=False, **options):
        super().__init__(**options)
        self.iterations, self.leaky = routing, leaky_routing
        self.bias = None
        if capsule_bias:
            with self.init_scope():
                self.bias = chainer.Parameter(0.1, (n_out, dim))

    def forward(self, u_hat, u):
        if self.leaky:
            v, c = functions.dynamic_routing(u_hat, self.iterations,
                                             bias=self.bias, leaky=True)
        else:
            v, c = self.ops.dynamic_routing(u_hat, self.iterations,
                                            bias=self.bias)
        self.couplings = c.array
        return v


@register('uniform')
class Uniform(Router):
    """No routing: every child sends 1/J of itself to each parent, v_j =
    squash(sum_i u_hat_{j|i} / J), the paper's r = 1 without a bias. The
    baseline that Paik et al. (2019) found several routers no better than."""

    def forward(self, u_hat, u):
        n, j, i, _ = u_hat.shape
        xp = backend.get_array_module(u_hat)
        self.couplings = xp.full((n, j, i), 1 / j, dtype=u_hat.dtype)
        return self.ops.squash(F.sum(u_hat, axis=2) / j)


@register('self-routing')
class SelfRouting(Router):
    """Self-routing (Hahn, Pyeon and Kim, NeurIPS 2019; SR-CapsNet): each
    child routes by weights of its own, without iterations or agreement.

        c_ij  = softmax_j(W^r_i u_i + b^r_i)       W^r (I, J, K), b^r (I, J)
        a_j   = sum_i c_ij a_i / sum_i a_i         the parent's activation
        pose_j = sum_i c_ij a_i u_hat_{j|i} / sum_i c_ij a_i
        v_j   = a_j pose_j / |pose_j|

    Adapted to this model: a child's activation a_i is its length |u_i|
    (the primary capsules are squashed vectors here, where SR-CapsNet gives
    them a separate sigmoid unit), and v_j carries a_j as its length, so
    that lengths stay class scores in [0, 1) for the margin loss while the
    decoder reads the pose's direction. W^r and b^r start at zero, as the
    authors' code starts them: uniform routing.
    """

    def __init__(self, n_in, n_out, child_dim, **options):
        super().__init__(**options)
        with self.init_scope():
            self.W = chainer.Parameter(0.0, (n_in, n_out, child_dim))
            self.b = chainer.Parameter(0.0, (n_in, n_out))

    def forward(self, u_hat, u):
        n, j, i, d = u_hat.shape
        # logits[n, i] = W_i u_i + b_i: (I, J, K) @ (I, K, N) -> (I, J, N)
        logits = F.matmul(self.W, F.transpose(u, (1, 2, 0)))
        logits = F.transpose(logits, (2, 1, 0)) + F.broadcast_to(
            F.transpose(self.b)[None], (n, j, i))                # (N, J, I)
        c = F.softmax(logits, axis=1)
        a = functions.length(u)                                  # (N, I)
        ca = c * F.broadcast_to(a[:, None], c.shape)             # (N, J, I)
        mass = F.sum(ca, axis=2)                                 # (N, J)
        activation = mass / F.broadcast_to(F.sum(a, axis=1, keepdims=True),
                                           mass.shape)
        pose = weighted_sum(ca, u_hat) / F.broadcast_to(
            mass[:, :, None] + functions.EPS, (n, j, d))
        self.couplings = c.array
        scale = activation / functions.length(pose)
        return pose * F.broadcast_to(scale[:, :, None], pose.shape)


@register('attention')
class Attention(Router):
    """Inverted dot-product attention routing (Tsai, Srivastava, Goh and
    Salakhutdinov, ICLR 2020), ``routing`` iterations (1: uniform).

    The parents' poses come from the votes: first with uniform couplings,
    then ``routing - 1`` times from the agreement of each vote with its
    parent's layer-normalised pose, scaled by 1/sqrt(D), with a softmax
    over the parents (not over the children: "inverted"):

        c_ij = softmax_j(<LN(s_j), u_hat_{j|i}> / sqrt(D)),  s_j = sum_i c_ij u_hat_{j|i}

    Unlike dynamic routing, each iteration's couplings come from its own
    agreement, not from a running sum of logits. Adapted to this model:
    the authors' layer normalisation (with its gain and bias, learned)
    normalises the poses that the next iteration attends with, while the
    output is v_j = squash(s_j), whose length is the class score (the
    authors classify the normalised poses with a linear layer instead).
    """

    def __init__(self, dim, routing=3, **options):
        super().__init__(**options)
        self.iterations = routing
        with self.init_scope():
            self.norm = L.LayerNormalization(dim)

    def forward(self, u_hat, u):
        n, j, i, d = u_hat.shape
        xp = backend.get_array_module(u_hat)
        c = xp.full((n, j, i), 1 / j, dtype=u_hat.dtype)
        s = weighted_sum(c, u_hat)                               # (N, J, D)
        for _ in range(self.iterations - 1):
            pose = F.reshape(self.norm(F.reshape(s, (n * j, d))), (n * j, d, 1))
            agreement = F.matmul(F.reshape(u_hat, (n * j, i, d)), pose)
            c = F.softmax(F.reshape(agreement, (n, j, i)) * d ** -0.5, axis=1)
            s = weighted_sum(c, u_hat)
        self.couplings = chainer.as_array(c)
        return self.ops.squash(s)
