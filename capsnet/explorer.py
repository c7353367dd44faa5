"""The capsule explorer: one self-contained web page, and a local server.

``render_page`` inlines the page in ``capsnet/web/`` (HTML, JS, CSS), the
decoder's weights (float16, base64) and the gallery's data into one HTML file
that opens from disk. The page runs the decoder (160 -> 512 -> 1024 -> 784)
itself, so every slider move redraws at once without a server.

``serve`` (``make_server``) serves the same page and answers ``POST
/capsules`` with the digit capsules of a drawn image, from the real Chainer
model.

Page data (``window.CAPSNET``), for N gallery images of C channels (1 grey,
3 colour), J digit capsules of D dimensions on a G x G primary grid:
    channels  C                                   side, grid          S, G
    images    N x (C * S * S) uint8, row-major    labels, predicted   N ints
    capsules  N x J x D                       couplings           N x J x G*G
    decoder   [W1 (512, J*D), b1, W2, b2, W3 (C*S*S, 1024), b3], float16:
              the model's layers, however many (the page runs them all)
The drawing panel (served pages) draws grey digits: grey models only.
"""
import base64
import http.server
import json
import os
import re
import signal
import sys
import threading

import numpy

import chainer

from capsnet import analysis
from capsnet import data
from capsnet.files import atomic_write
from capsnet.errors import UserError

WEB = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'web')
PAGE = 'explorer.html'
MAX_BODY = 1 << 20              # a drawn image is 784 numbers: a few kB
READ_TIMEOUT = 5                # seconds a client may stay silent mid-request


def _array(a, dtype):
    """A JSON-ready record of an array: base64 bytes, dtype and shape."""
    a = numpy.ascontiguousarray(chainer.backend.CpuDevice().send(a), dtype)
    return {'data': base64.b64encode(a.tobytes()).decode('ascii'),
            'dtype': numpy.dtype(dtype).name, 'shape': list(a.shape)}


def decoder_weights(model):
    """The decoder's layers as [W1, b1, W2, b2, ...] records, float16; the
    page runs as many as there are (ReLU, and a sigmoid after the last)."""
    return [_array(p.array, numpy.float16) for layer in
            model.decoder_layers() for p in (layer.W, layer.b)]


def capsule_report(model, x):
    """For images x (N, 1, S, S) on the model's device: their capsules
    (N, J, D), lengths (N, J), predictions (N,) and the last routing
    iteration's couplings averaged over capsule types (N, J, G*G)."""
    v, predicted = analysis.digit_capsules(model, x)
    cpu = chainer.backend.CpuDevice()
    v, predicted = cpu.send(v), cpu.send(predicted)
    _, couplings = analysis.routing_maps(model, x)
    return {'capsules': v, 'lengths': numpy.sqrt((v ** 2).sum(axis=2)),
            'predicted': predicted,
            'couplings': couplings.reshape(len(v), v.shape[1], -1)}


def gallery(model, images, labels, device, size, batchsize):
    """Indices of ``size`` test images in order: up to a tenth of them ones
    the model gets wrong, the rest the first ones it gets right."""
    predicted = numpy.concatenate([
        chainer.backend.CpuDevice().send(analysis.digit_capsules(
            model, device.send(analysis.model_input(
                model, images[k:k + batchsize])))[1])
        for k in range(0, len(images), batchsize)])
    wrong = numpy.flatnonzero(predicted != labels)[:max(1, size // 10)]
    right = numpy.flatnonzero(predicted == labels)[:size - len(wrong)]
    return numpy.sort(numpy.concatenate([wrong, right]))


def page_data(model, images, labels, indices, device):
    """The page's ``window.CAPSNET`` for the test images at ``indices``."""
    x = analysis.model_input(model, images[indices])
    report = capsule_report(model, device.send(x))
    return {
        'side': model.options['in_size'], 'grid': model.grid,
        'channels': x.shape[1],
        'indices': indices.tolist(), 'labels': labels[indices].tolist(),
        'predicted': report['predicted'].tolist(),
        'images': _array(numpy.round(x.reshape(len(x), -1) * 255),
                         numpy.uint8),
        'capsules': report['capsules'].tolist(),
        'couplings': numpy.round(report['couplings'], 5).tolist(),
        'decoder': decoder_weights(model),
    }


def render_page(data, served=False):
    """explorer.html with its CSS, script and ``data`` inlined."""
    def read(name):
        with open(os.path.join(WEB, name)) as f:
            return f.read()

    data = dict(data, served=served)
    # '<' escaped: nothing in the data can close the script element
    inline = {'explorer.css': '<style>\n{}</style>'.format(
                  read('explorer.css')),
              'explorer.js': '<script>\n{}</script>'.format(
                  read('explorer.js')),
              'data.js': '<script>window.CAPSNET = {};</script>'.format(
                  json.dumps(data, separators=(',', ':')).replace(
                      '<', '\\u003c'))}
    page = read(PAGE)
    for name, element in inline.items():
        page, count = re.subn(
            r'<(link rel="stylesheet" href|script src)="{}">(</script>)?'
            .format(re.escape(name)), lambda m: element, page)
        assert count == 1, name
    return page


class CapsuleHandler(http.server.BaseHTTPRequestHandler):
    """GET / serves the page; POST /capsules takes {"image": C*S*S numbers
    in [0, 1]} and answers {"capsules", "lengths", "predicted",
    "couplings"}; anything malformed gets a 400 with {"error": ...}, a body
    over MAX_BODY a 413 before any of it is read.

    Each connection has a thread of its own, and a client silent for
    READ_TIMEOUT seconds in the middle of a request loses its connection:
    an idle or short-bodied connection holds up nobody. The model answers
    one request at a time (``lock``)."""

    page = None             # set by serve(): bytes of the rendered page
    model = None
    device = None
    lock = None
    timeout = READ_TIMEOUT  # socket timeout of every read

    def log_message(self, format, *args):      # keep the terminal quiet
        pass

    def _send(self, status, body, content_type):
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status, obj):
        self._send(status, json.dumps(obj).encode(), 'application/json')

    def do_GET(self):
        if self.path in ('/', '/' + PAGE):
            self._send(200, self.page, 'text/html; charset=utf-8')
        else:
            self._json(404, {'error': 'no such page: {}'.format(self.path)})

    def do_POST(self):
        if self.path != '/capsules':
            return self._json(404, {'error': 'POST /capsules only'})
        length = int(self.headers.get('Content-Length') or 0)
        if not 0 < length <= MAX_BODY:
            return self._json(413 if length > MAX_BODY else 400, {
                'error': 'the body must be 1 byte to {} bytes of JSON'
                .format(MAX_BODY)})
        try:
            image = self._read_image(length)
        except TimeoutError:        # a body shorter than it said: drop it
            self.close_connection = True
            return
        except (ValueError, TypeError, KeyError) as e:
            return self._json(400, {'error': str(e)})
        side = self.model.options['in_size']
        # each request has a thread of its own, whose current GPU would be
        # GPU 0 whatever -g says
        with self.lock, chainer.using_device(self.device):
            x = self.device.send(image.reshape(1, -1, side, side))
            report = capsule_report(self.model, x)
        self._json(200, {'capsules': report['capsules'][0].tolist(),
                         'lengths': report['lengths'][0].tolist(),
                         'predicted': int(report['predicted'][0]),
                         'couplings': report['couplings'][0].tolist()})

    def _read_image(self, length):
        """The posted image as float32 (C*S*S,) in [0, 1], or ValueError."""
        body = json.loads(self.rfile.read(length))
        side = self.model.options['in_size']
        size = self.model.options['in_channels'] * side * side
        # checked as float64: 1e300 is out of range, not float32's inf
        image = numpy.asarray(body['image'], dtype=numpy.float64)
        if image.size != size or not numpy.all((image >= 0) & (image <= 1)):
            raise ValueError('"image" must be {} numbers in [0, 1]'.format(
                size))
        return image.astype(numpy.float32)


class _Server(http.server.ThreadingHTTPServer):
    """A thread per connection; a client that went away (a closed or
    timed-out socket) is no error to print."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


def make_server(model, device, data, port):
    """The page and the model on 127.0.0.1:``port`` (0: any free port),
    bound and ready to ``serve_forever``."""
    handler = type('Handler', (CapsuleHandler,), dict(
        page=render_page(data, served=True).encode(), model=model,
        device=device, lock=threading.Lock()))
    try:
        return _Server(('127.0.0.1', port), handler)
    except OSError as e:
        raise UserError('cannot serve on port {}: {}'.format(
            port, e.strerror or e))


def serve(model, device, data, port):
    """Serve the page and the model on 127.0.0.1:``port`` (0: any free
    port) until Ctrl-C; prints the address first."""
    server = make_server(model, device, data, port)
    # Ctrl-C stops it, also where SIGINT came ignored (a shell's background
    # job), which leaves Python without its KeyboardInterrupt
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print('serving the explorer at http://127.0.0.1:{}/ (Ctrl-C stops '
          'it)'.format(server.server_address[1]), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print('stopped', flush=True)
    finally:
        server.server_close()


def explore(model, images, labels, device, size, batchsize, out=None,
            port=None):
    """``--explorer``: write the page for ``size`` test images into the
    folder ``out``; ``--serve``: serve it on ``port`` instead."""
    analysis.check_capsules(model)
    data.check_size('--explorer-images', size, len(images))
    indices = gallery(model, images, labels, device, size, batchsize)
    page = page_data(model, images, labels, indices, device)
    if port is not None:
        return serve(model, device, page, port)
    path = os.path.join(out, PAGE)
    atomic_write(path, lambda f: f.write(render_page(page).encode()))
    print('wrote {} ({:.1f} MB): open it in a browser'.format(
        path, os.path.getsize(path) / 1e6))
