"""A router written outside capsnet/, registered through the registry
alone, as a researcher would add one: the parents are the squashed mean of
their predictions, with one learned gain per parent."""
import chainer
import chainer.functions as F

from capsnet import routing


@routing.register('mean')
class Mean(routing.Router):

    def __init__(self, n_out, **options):
        super().__init__(**options)
        with self.init_scope():
            self.gain = chainer.Parameter(1.0, (n_out,))

    def forward(self, u_hat, u):
        s = F.mean(u_hat, axis=2)                               # (N, J, D)
        return self.ops.squash(s * F.broadcast_to(self.gain[:, None],
                                                  s.shape[1:]))
