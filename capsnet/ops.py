"""The capsule functions a model calls, by name: the fast kernel where
capsnet/kernels.py has one of that name, else the readable composition in
capsnet/functions.py. A new op needs only its readable version; a kernel of
the same name later overrides it wherever it is called."""
from capsnet import functions
from capsnet import kernels


class Ops:
    """``Ops(fast=True).squash`` is kernels.squash; ``Ops(fast=False)``
    (train.py --plain) gives every op's readable composition, so that an
    edit to capsnet/functions.py reaches a run."""

    def __init__(self, fast=True):
        self.fast = fast

    def __getattr__(self, name):
        readable = getattr(functions, name)
        return getattr(kernels, name, readable) if self.fast else readable
