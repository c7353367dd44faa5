"""CapsNet for Chainer: "Dynamic Routing Between Capsules" (Sabour et al. 2017)."""
from capsnet import compat  # noqa: F401  (must precede every chainer import)
from capsnet.model import CapsNet  # noqa: F401
from capsnet.model import CapsNetLoss  # noqa: F401


def load(path, gpu=-1):
    """A trained model ready for inference on images: see capsnet.predict."""
    from capsnet import predict
    return predict.load(path, gpu)
