"""The capsule explorer in a real browser (headless Chromium via Selenium):
the page from disk, its in-page decoder against Chainer's, its sliders and
gallery, and the local server with a real model behind it."""
import json
import os
import shutil
import signal
import urllib.error
import urllib.request

import numpy
import pytest

import chainer
from capsnet import analysis
from capsnet import checkpoint
from capsnet import data
from conftest import DATA
from conftest import MNIST_FIXTURE
from conftest import ROOT
from conftest import run
from conftest import start_explorer_server

MODEL = os.path.join(ROOT, 'saved_model')
DRIVER = '/usr/bin/chromedriver'
HOW = ('apt-get install chromium chromium-driver (Debian) and pip install '
       'selenium')


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
def model():
    return checkpoint.load_model(os.path.join(MODEL, 'model.npz'))


@pytest.fixture(scope='module')
def page(tmp_path_factory):
    out = tmp_path_factory.mktemp('explorer')
    result = run('analyze.py', '--load', MODEL, *DATA, '--explorer',
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


def post(url, body):
    request = urllib.request.Request(
        url + 'capsules', data=body,
        headers={'Content-Type': 'application/json'})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_the_server_answers_with_the_models_capsules(browser, model):
    server, url = start_explorer_server()
    try:
        images, _ = data.load('mnist', MNIST_FIXTURE, ('test',))['test']
        image = images[7, 0].astype(numpy.float32) / 255
        status, answer = post(url, json.dumps(
            {'image': image.ravel().tolist()}).encode())
        assert status == 200
        with chainer.using_config('train', False), \
                chainer.no_backprop_mode():
            v, c = model.capsules(image[None, None])
        numpy.testing.assert_allclose(answer['capsules'], v.array[0],
                                      atol=1e-5)
        expected = int(numpy.linalg.norm(v.array[0], axis=1).argmax())
        assert answer['predicted'] == expected
        for bad in (b'not json', b'{}', b'{"image": [1, 2]}',
                    json.dumps({'image': [2.0] * 784}).encode(),
                    json.dumps({'image': 'x' * 784}).encode()):
            status, answer = post(url, bad)
            assert status == 400 and answer['error'], bad
        assert post(url, json.dumps(
            {'image': image.ravel().tolist()}).encode())[0] == 200
        # the served page: the drawing panel, and a drawn digit round trip
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
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=30)
    finally:
        server.kill()
    assert server.returncode == 0, err
    assert out.strip().endswith('stopped') and not err.strip()


def test_the_server_serves_many_clients_and_no_silent_one_stalls_it(model):
    """No browser needed: an idle connection and a short body hold up no
    one, 20 clients x 10 requests are all answered right, a 100 MB body is
    refused before it is sent, and Ctrl-C still stops the server."""
    import socket
    import time
    from concurrent.futures import ThreadPoolExecutor
    server, url = start_explorer_server()
    try:
        port = int(url.rsplit(':', 1)[1].strip('/'))
        images, _ = data.load('mnist', MNIST_FIXTURE, ('test',))['test']
        bodies = [json.dumps({'image': (images[k, 0] / 255).ravel().tolist()})
                  .encode() for k in range(20)]
        with chainer.using_config('train', False), \
                chainer.no_backprop_mode():
            v, _ = model.capsules(images[:20].astype(numpy.float32) / 255)
        want = numpy.linalg.norm(v.array, axis=2).argmax(axis=1).tolist()

        idle = socket.create_connection(('127.0.0.1', port))
        short = socket.create_connection(('127.0.0.1', port))
        short.sendall(b'POST /capsules HTTP/1.1\r\nContent-Length: 1000\r\n'
                      b'\r\n{"image": [')
        start = time.monotonic()
        status, answer = post(url, bodies[0])
        assert status == 200 and answer['predicted'] == want[0]
        assert time.monotonic() - start < 2

        def client(k):
            return [post(url, bodies[k])[1]['predicted'] for _ in range(10)]
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(client, range(20)))
        assert answers == [[w] * 10 for w in want]

        huge = socket.create_connection(('127.0.0.1', port))
        start = time.monotonic()
        huge.sendall(b'POST /capsules HTTP/1.1\r\nContent-Length: 100000000'
                     b'\r\n\r\n')
        huge.settimeout(10)
        assert huge.recv(100).startswith(b'HTTP/1.0 413')
        assert time.monotonic() - start < 2
        for connection in (idle, short, huge):
            connection.close()
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=30)
    finally:
        server.kill()
    assert server.returncode == 0, err
    assert out.strip().endswith('stopped') and not err.strip()
