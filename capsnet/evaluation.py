"""``analyze.py --evaluate``: a model's test accuracy as one report."""
from capsnet import affine
from capsnet import analysis
from capsnet import multimnist


def report(model, images, labels, device, batchsize, multi=False,
           warp=None):
    """{"accuracy", "error_percent", "n", ...}: on the test images (N, 1,
    S, S) uint8 and labels (N,), warped first by ``affine.random_affine``
    with ``warp`` (its strengths and "seed") if given, or with ``multi`` on
    their MultiMNIST test pairs (both digits named right)."""
    extra = {}
    if multi:
        pairs = multimnist.evaluation_pairs((images, labels),
                                            multimnist.TEST_SEED)
        accuracy = analysis.pair_correct(model, pairs, device,
                                         batchsize).mean()
        extra['dataset'] = 'multimnist'
    else:
        if warp:
            strength = {k: v for k, v in warp.items() if k != 'seed'}
            images = affine.random_affine(images, warp['seed'], **strength)
            extra['affine'] = warp
        accuracy = analysis.accuracy(model, images, labels, device,
                                     batchsize)
    return dict({'accuracy': round(float(accuracy), 6),
                 'error_percent': round(100 * (1 - float(accuracy)), 4),
                 'n': len(images)}, **extra)
