"""Weights that stay put: each kernel reads its weights in a form of its
own (a spectrum, a transpose). Inside ``frozen_weights()`` (an evaluation
pass) each form is made once for the whole block instead of once per batch.
"""
import contextlib

# While frozen_weights() is active, the forms: {(id(W), form): (W, the form
# of W)}; holding W keeps another array from taking its id.
_frozen = None


@contextlib.contextmanager
def frozen_weights():
    """Promise that no weight changes inside this block (an evaluation pass):
    each kernel then makes its form of a weight once for the whole block
    instead of once per batch. Leaving the block drops them."""
    global _frozen
    outer = _frozen
    if outer is None:
        _frozen = {}
    try:
        yield
    finally:
        _frozen = outer


def weight_form(W, form, make):
    """make(W), reused inside a frozen_weights() block."""
    if _frozen is None:
        return make(W)
    cached = _frozen.get((id(W), form))
    if cached is None or cached[0] is not W:
        cached = _frozen[id(W), form] = W, make(W)
    return cached[1]


def active():
    """Whether a frozen_weights() block is open."""
    return _frozen is not None
