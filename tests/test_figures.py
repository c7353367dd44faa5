"""The figures name a model's classes wherever they name a class."""
import numpy

import chainer

from capsnet import figures
from capsnet import predict
from capsnet.model import CapsNet


def test_routing_figures_name_the_classes(tmp_path, monkeypatch):
    names = ['circle', 'square', 'triangle']
    numpy.random.seed(0)
    model = CapsNet(n_classes=3, class_names=names, in_size=20,
                    reconstruct=False)
    drawn = {}
    monkeypatch.setattr(figures, 'save_routing', lambda path, image, maps,
                        truth, predicted, names: drawn.update(
                            routing=(truth, names)))
    monkeypatch.setattr(figures, 'save_grid', lambda path, rows, row_labels,
                        col_labels, **kwargs: drawn.update(types=col_labels))
    images = numpy.zeros((1, 1, 20, 20), numpy.uint8)
    figures.render_routing(model, images, numpy.array([2]),
                           chainer.get_device('@numpy'), str(tmp_path), [0],
                           per_type=True)
    assert drawn['routing'] == ('triangle', names)
    assert drawn['types'] == ['capsule circle', 'capsule square',
                              'capsule triangle']


def test_a_prediction_figure_names_its_bars(tmp_path, monkeypatch):
    import matplotlib.axes
    labels = []
    original = matplotlib.axes.Axes.set_xticks

    def set_xticks(self, ticks, tick_labels=None, **kwargs):
        labels.append(tick_labels)
        return original(self, ticks, tick_labels, **kwargs)
    monkeypatch.setattr(matplotlib.axes.Axes, 'set_xticks', set_xticks)
    colour = numpy.random.RandomState(0).rand(20, 20, 3)
    predict.save_prediction(str(tmp_path / 'p.png'), colour, colour, None,
                            numpy.array([0.2, 0.9]), 'p.png', ['cat', 'dog'])
    assert ['cat', 'dog'] in labels and (tmp_path / 'p.png').exists()
