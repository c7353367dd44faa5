"""The capsule functions a model calls, by name: the fast kernel where
capsnet/kernels/ has one of that name, else the readable composition in
capsnet/functions.py. A new op needs only its readable version; a kernel of
the same name later overrides it wherever it is called."""
from capsnet import functions
from capsnet import kernels


def fast_ops():
    """The names of the ops that have a fast kernel."""
    return sorted(name for name in vars(functions)
                  if not name.startswith('_') and callable(getattr(
                      functions, name)) and hasattr(kernels, name))


class Ops:
    """``Ops(fast=True).squash`` is kernels.squash; ``Ops(fast=False)``
    (train.py --plain) gives every op's readable composition, so that an
    edit to capsnet/functions.py reaches a run. ``readable``: names of ops
    that run readable all the same (bench/benchmark.py --readable measures
    what each kernel buys)."""

    def __init__(self, fast=True, readable=()):
        self.fast, self.readable = fast, frozenset(readable)

    def __getattr__(self, name):
        readable = getattr(functions, name)
        if not self.fast or name in self.readable:
            return readable
        return getattr(kernels, name, readable)
