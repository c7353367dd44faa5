"""An op by name: the fast kernel where there is one, else the readable
composition; --plain and --readable choose the readable one."""
import pytest

from capsnet import functions
from capsnet import kernels
from capsnet.ops import Ops
from capsnet.ops import fast_ops


def test_each_op_is_the_kernel_where_there_is_one(monkeypatch):
    assert Ops().squash is kernels.squash
    assert Ops().dynamic_routing is kernels.dynamic_routing
    # an op with only a readable version falls back to it
    monkeypatch.setattr(functions, 'new_op', lambda x: x, raising=False)
    assert Ops().new_op is functions.new_op
    with pytest.raises(AttributeError):
        Ops().no_such_op


def test_plain_and_readable_choose_the_compositions():
    assert Ops(fast=False).squash is functions.squash
    ops = Ops(readable=['squash'])
    assert ops.squash is functions.squash and ops.length is kernels.length
    # kernels' helpers are no ops
    assert 'split' not in fast_ops() and 'squash' in fast_ops()
