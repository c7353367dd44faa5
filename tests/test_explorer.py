"""The capsule explorer: its page data, page and HTTP API in this process,
then in a real browser (headless Chromium via Selenium): the page from disk,
its in-page decoder against Chainer's, its sliders and gallery, and the
local server with a real model behind it."""
import base64
import json
import os
import re
import shutil
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy
import pytest

import chainer
from capsnet import analysis
from capsnet import model_file
from capsnet import data
from capsnet import explorer
from conftest import DATA
from conftest import MNIST_FIXTURE
from conftest import ROOT
from conftest import explorer_server
from conftest import request
from conftest import run_here
from conftest import start_explorer_server

MODEL = os.path.join(ROOT, 'saved_model')
DRIVER = '/usr/bin/chromedriver'
HOW = ('apt-get install chromium chromium-driver (Debian) and pip install '
       'selenium')


@pytest.fixture(scope='module')
def model():
    return model_file.load(os.path.join(MODEL, 'model.npz'))


@pytest.fixture(scope='module')
def test_images():
    return data.load('mnist', MNIST_FIXTURE, ('test',))['test']


def model_capsules(model, images):
    """Capsules v (N, J, D) and couplings (N, J, I) of uint8 images
    (N, 1, 28, 28), straight from the model."""
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        v, c = model.capsules(images.astype(numpy.float32) / 255)
    return v.array, c


def from_record(record):
    return numpy.frombuffer(base64.b64decode(record['data']),
                            dtype=record['dtype']).reshape(record['shape'])


def test_page_data_is_what_the_model_computed(model, test_images):
    images, labels = test_images
    indices = numpy.array([3, 0, 7])
    page = explorer.page_data(model, images, labels, indices,
                              chainer.get_device('@numpy'))
    assert (page['side'], page['grid']) == (28, 6)
    assert page['indices'] == [3, 0, 7]
    assert page['labels'] == labels[indices].tolist()
    assert page['channels'] == 1
    numpy.testing.assert_array_equal(
        from_record(page['images']).reshape(3, 1, 28, 28), images[indices])
    v, c = model_capsules(model, images[indices])
    numpy.testing.assert_allclose(page['capsules'], v, atol=1e-6)
    assert page['predicted'] == numpy.linalg.norm(v, axis=2).argmax(
        axis=1).tolist()
    # the couplings averaged over the 32 types at each of the 6x6 places
    couplings = numpy.array(page['couplings'])
    assert couplings.shape == (3, 10, 36)
    numpy.testing.assert_allclose(
        couplings, c.reshape(3, 10, 36, 32).mean(axis=3), atol=1e-5)
    numpy.testing.assert_allclose(couplings.sum(axis=1), 1, atol=1e-4)
    # the decoder in float16, layer by layer
    layers = [p.array for fc in (model.fc1, model.fc2, model.fc3)
              for p in (fc.W, fc.b)]
    assert len(page['decoder']) == len(layers)
    for record, want in zip(page['decoder'], layers):
        assert record['dtype'] == 'float16'
        numpy.testing.assert_allclose(from_record(record), want, rtol=1e-3,
                                      atol=1e-4)


def inlined_data(page):
    """The page's ``window.CAPSNET``, read back."""
    found = re.findall(r'<script>window\.CAPSNET = (.*?);</script>', page,
                       flags=re.S)
    assert len(found) == 1
    return json.loads(found[0])


def test_the_page_inlines_its_parts_and_data_nothing_can_break_out_of():
    hostile = {'note': '</script><script>alert(1)</script>', 'labels': [1]}
    page = explorer.render_page(hostile)
    assert inlined_data(page) == dict(hostile, served=False)
    assert '<script>alert(1)' not in page
    # the style and script are in the page, not fetched beside it
    assert 'href="explorer.css"' not in page
    assert 'src="explorer.js"' not in page
    with open(os.path.join(explorer.WEB, 'explorer.js')) as f:
        assert f.read() in page
    assert inlined_data(explorer.render_page(hostile, served=True))[
        'served'] is True


def image_body(image):
    return json.dumps({'image': (image / 255).ravel().tolist()}).encode()


def test_the_server_answers_with_the_models_capsules(model, test_images):
    images, _ = test_images
    with explorer_server(model) as url:
        status, page = request(url, path='')
        assert status == 200 and inlined_data(page)['served'] is True
        assert request(url, path='nothing.html')[0] == 404
        assert request(url, b'{}', path='other')[0] == 404
        status, answer = request(url, image_body(images[7, 0]))
        assert status == 200
        v, c = model_capsules(model, images[7:8])
        numpy.testing.assert_allclose(answer['capsules'], v[0], atol=1e-5)
        numpy.testing.assert_allclose(answer['lengths'],
                                      numpy.linalg.norm(v[0], axis=1),
                                      atol=1e-5)
        assert answer['predicted'] == int(numpy.linalg.norm(
            v[0], axis=1).argmax())
        numpy.testing.assert_allclose(
            answer['couplings'], c[0].reshape(10, 36, 32).mean(axis=2),
            atol=1e-5)
        for bad in (b'not json', b'{}', b'{"image": [1, 2]}',
                    json.dumps({'image': [2.0] * 784}).encode(),
                    json.dumps({'image': 'x' * 784}).encode()):
            status, answer = request(url, bad)
            assert status == 400 and answer['error'], bad
        assert request(url, image_body(images[7, 0]))[0] == 200


def test_many_clients_are_answered_and_no_silent_one_stalls_them(
        model, test_images):
    """An idle connection and a short body hold up no one, 20 clients x 10
    requests are all answered right, and a 100 MB body is refused before
    it is sent."""
    images, _ = test_images
    v, _ = model_capsules(model, images[:20])
    want = numpy.linalg.norm(v, axis=2).argmax(axis=1).tolist()
    with explorer_server(model) as url:
        port = int(url.rsplit(':', 1)[1].strip('/'))
        idle = socket.create_connection(('127.0.0.1', port))
        short = socket.create_connection(('127.0.0.1', port))
        short.sendall(b'POST /capsules HTTP/1.1\r\nContent-Length: 1000\r\n'
                      b'\r\n{"image": [')
        start = time.monotonic()
        status, answer = request(url, image_body(images[0, 0]))
        assert status == 200 and answer['predicted'] == want[0]
        assert time.monotonic() - start < 2

        def client(k):
            return [request(url, image_body(images[k, 0]))[1]['predicted']
                    for _ in range(10)]
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(client, range(20)))
        assert answers == [[w] * 10 for w in want]

        huge = socket.create_connection(('127.0.0.1', port))
        start = time.monotonic()
        huge.sendall(b'POST /capsules HTTP/1.1\r\nContent-Length: '
                     b'100000000\r\n\r\n')
        huge.settimeout(10)
        assert huge.recv(100).startswith(b'HTTP/1.0 413')
        assert time.monotonic() - start < 2
        for connection in (idle, short, huge):
            connection.close()


def test_serve_prints_its_address_and_ctrl_c_stops_it_quietly():
    server, url = start_explorer_server()
    try:
        assert request(url, path='')[0] == 200
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=30)
    finally:
        server.kill()
    assert server.returncode == 0, err
    assert out.strip().endswith('stopped') and not err.strip()


def skip_or_fail(reason):
    """Skip on a user's machine; fail in CI, which installs the browser."""
    (pytest.fail if os.environ.get('CI') == 'true' else pytest.skip)(reason)


@pytest.fixture(scope='module')
def browser():
    try:
        from selenium import webdriver
    except ImportError:
        skip_or_fail('needs Selenium: ' + HOW)
    if not (os.path.exists(DRIVER) and shutil.which('chromium')):
        skip_or_fail('needs Chromium and its driver at {}: {}'.format(
            DRIVER, HOW))
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    for argument in ('--headless=new', '--no-sandbox',
                     '--window-size=1400,1000'):
        options.add_argument(argument)
    options.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope='module')
def page(tmp_path_factory):
    out = tmp_path_factory.mktemp('explorer')
    result = run_here('analyze.py', '--load', MODEL, *DATA, '--explorer',
                      '--explorer-images', '24', '--out', str(out))
    assert 'explorer.html' in result.stdout
    return out / 'explorer.html'


@pytest.fixture
def opened(browser, page):
    browser.get(page.as_uri())
    browser.get_log('browser')           # drop what earlier pages logged
    browser.refresh()
    return browser


def errors(browser):
    return [entry for entry in browser.get_log('browser')
            if entry['level'] == 'SEVERE']


def chainer_decode(model, capsules, digit):
    """The decoder's S*S outputs for ``capsules`` (J, D), capsule ``digit``
    alone, by Chainer."""
    v = numpy.asarray(capsules, dtype=numpy.float32)[None]
    return analysis.decode(model, v, numpy.array([digit])).ravel()


def test_the_page_opens_from_disk_alone_and_is_small(opened, page, tmp_path):
    assert page.stat().st_size < 10e6
    assert not errors(opened)
    assert opened.title == 'CapsNet explorer'
    # no server: the drawing panel stays hidden
    assert not opened.find_element('id', 'draw-panel').is_displayed()
    assert len(opened.find_elements('css selector', '#gallery canvas')) == 24
    assert opened.find_elements('css selector', '#gallery canvas.wrong')
    opened.save_screenshot(str(tmp_path / 'explorer.png'))
    assert (tmp_path / 'explorer.png').stat().st_size > 20000


def test_the_pages_decoder_matches_chainers(opened, model):
    page_data = opened.execute_script(
        'return {indices: CAPSNET.indices, capsules: CAPSNET.capsules, '
        'predicted: CAPSNET.predicted};')
    images, _ = data.load('mnist', MNIST_FIXTURE, ('test',))['test']
    x = analysis.model_input(model, images[page_data['indices']])
    v, _ = analysis.digit_capsules(model, x)
    numpy.testing.assert_allclose(page_data['capsules'], v, atol=1e-5)
    rng = numpy.random.default_rng(0)
    worst = 0
    for n in range(0, len(v), 5):
        digit = page_data['predicted'][n]
        for tweak in (0, rng.uniform(-0.3, 0.3, 16)):
            capsules = v[n].copy()
            capsules[digit] += tweak
            ours = opened.execute_script(
                'return capsnetExplorer.decode(arguments[0], arguments[1]);',
                digit, capsules[digit].tolist())
            theirs = chainer_decode(model, capsules, digit)
            worst = max(worst, numpy.abs(numpy.array(ours) - theirs).max())
    assert worst <= 2e-3, worst


def reconstruction_pixels(browser):
    return browser.execute_script(
        "return document.getElementById('reconstruction').toDataURL();")


def test_a_colour_models_page_draws_in_colour(browser, tmp_path):
    """A model of one's own colour images (untrained: any decoder will do):
    its gallery and reconstruction are RGB, and no drawing panel."""
    from capsnet.model import CapsNet
    numpy.random.seed(0)
    model = CapsNet(n_classes=3, in_size=20, in_channels=3,
                    class_names=['r', 'g', 'b'])
    model.fc3.W.array *= 100            # outputs far from sigmoid's 0.5
    images = numpy.random.RandomState(0).randint(
        0, 256, (4, 3, 20, 20)).astype(numpy.uint8)
    page = explorer.page_data(model, images, numpy.arange(4) % 3,
                              numpy.arange(4), chainer.get_device('@numpy'))
    path = tmp_path / 'colour.html'
    path.write_text(explorer.render_page(page, served=True))
    browser.get(path.as_uri())
    assert not errors(browser)
    assert not browser.find_element('id', 'draw-panel').is_displayed()
    for name in ('input', 'reconstruction'):
        spread = browser.execute_script(
            "const c = document.getElementById(arguments[0]);"
            "const d = c.getContext('2d').getImageData(0, 0, c.width, "
            "c.height).data; let m = 0;"
            "for (let i = 0; i < d.length; i += 4) m = Math.max(m, "
            "Math.abs(d[i] - d[i + 1]), Math.abs(d[i + 1] - d[i + 2]));"
            "return m;", name)
        # grey would have r = g = b; the untrained decoder's colours are
        # faint, the random input's strong
        assert spread > (50 if name == 'input' else 5), (name, spread)


def test_a_slider_redraws_the_reconstruction(opened):
    from selenium.webdriver.common.keys import Keys
    before = reconstruction_pixels(opened)
    slider = opened.find_element('id', 'dim3')
    value = float(slider.get_attribute('value'))
    slider.send_keys(*[Keys.ARROW_RIGHT] * 40)         # +0.2, as a user would
    assert float(slider.get_attribute('value')) == pytest.approx(value + 0.2)
    assert reconstruction_pixels(opened) != before
    opened.find_element('id', 'reset').click()
    assert reconstruction_pixels(opened) == before


def test_picking_another_digit_shows_its_lengths(opened):
    def lengths():
        return [float(bar.get_attribute('data-length')) for bar in
                opened.find_elements('css selector', '#lengths .bar')]
    first = lengths()
    assert len(first) == 10
    opened.find_elements('css selector', '#gallery canvas')[1].click()
    assert lengths() != first
    assert 'Test image' in opened.find_element('id', 'digit-title').text
    assert not errors(opened)


def test_the_served_page_draws_and_sends_a_digit(browser, model,
                                                  test_images):
    images, _ = test_images
    image = images[7, 0].astype(numpy.float32) / 255
    v, _ = model_capsules(model, images[7:8])
    expected = int(numpy.linalg.norm(v[0], axis=1).argmax())
    with explorer_server(model) as url:
        browser.get(url)
        assert browser.find_element('id', 'draw-panel').is_displayed()
        predicted = browser.execute_async_script(
            'const done = arguments[arguments.length - 1];'
            'capsnetExplorer.send(arguments[0]).then('
            '  () => done(capsnetExplorer.state.predicted));',
            image.ravel().tolist())
        assert predicted == expected
        assert 'Drawn digit' in browser.find_element('id',
                                                     'digit-title').text
        assert not errors(browser)
