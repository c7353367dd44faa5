"""CapsNet for Chainer: "Dynamic Routing Between Capsules" (Sabour et al. 2017)."""
import os

# OpenBLAS's idle threads spin for about 0.1 s after each product (2^28
# cycles) before they sleep, holding the core that the second thread of
# kernels.split needs. OpenBLAS reads this once, as NumPy loads it: the
# scripts import capsnet before NumPy.
os.environ.setdefault('OPENBLAS_THREAD_TIMEOUT', '4')

from capsnet import compat  # noqa: F401  (must precede every chainer import)
from capsnet.model import CapsNet  # noqa: F401
from capsnet.model import CapsNetLoss  # noqa: F401


def load(path, gpu=-1):
    """A trained model ready for inference on images: see capsnet.predict."""
    from capsnet import predict
    return predict.load(path, gpu)
