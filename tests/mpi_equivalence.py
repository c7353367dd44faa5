"""A few SGD steps of CapsNet on fixed batches, data-parallel over the
processes mpiexec started: each takes its slice of every batch. Rank 0
writes the parameters to OUT (.npz).

    mpiexec -n N python tests/mpi_equivalence.py OUT [--sum]

--sum multiplies the averaged gradients by N, as a communicator that summed
them instead would: the test shows that this breaks the equivalence.
"""
import os
import sys

import numpy

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
import capsnet  # noqa: E402,F401  (patches chainer before its first import)
import chainer  # noqa: E402

from capsnet import data  # noqa: E402
from capsnet import distributed  # noqa: E402
from capsnet.model import CapsNet  # noqa: E402
from capsnet.model import CapsNetLoss  # noqa: E402

BATCH, STEPS = 8, 3


def main(out, summed):
    cluster = distributed.create('naive')
    numpy.random.seed(0)
    model = CapsNet()
    loss = CapsNetLoss(model)
    optimizer = cluster.optimizer(chainer.optimizers.SGD(lr=0.05), loss)
    if summed:
        def sum_instead_of_mean(opt):
            for param in opt.target.params():
                param.grad *= cluster.size
        optimizer.add_hook(sum_instead_of_mean)
    images, labels = data.load('mnist', os.path.join(
        os.path.dirname(__file__), 'data', 'mnist'), ('train',))['train']
    share = BATCH // cluster.size
    mine = slice(cluster.rank * share, (cluster.rank + 1) * share)
    for step in range(STEPS):
        batch = slice(step * BATCH, (step + 1) * BATCH)
        x = images[batch][mine].astype(numpy.float32) / 255
        optimizer.update(loss, x, labels[batch][mine])
    if cluster.is_root:
        numpy.savez(out, **{name: p.array for name, p in
                            model.namedparams()})


if __name__ == '__main__':
    main(sys.argv[1], '--sum' in sys.argv[2:])
