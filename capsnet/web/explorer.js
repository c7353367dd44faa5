// The capsule explorer. window.CAPSNET (written by capsnet/explorer.py)
// holds the gallery and the decoder's weights; this script runs the decoder
// in the page, so every slider move redraws at once.
//
// Shapes: J digit capsules of D dimensions, images C x S x S (C 1 grey or 3
// colour, channel-major), primary grid G x G. A decoder layer's W is
// (out, in), row-major, as in Chainer's Linear.
'use strict';

(function () {
  const data = window.CAPSNET;
  const S = data.side;
  const C = data.channels;
  const P = C * S * S;            // numbers in an image
  const J = data.capsules[0].length;
  const D = data.capsules[0][0].length;
  const SLIDER_RANGE = 0.5;       // each dimension moves +-this around its value

  // --- arrays from their base64 records -----------------------------------

  function bytes(record) {
    const raw = atob(record.data);
    const out = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out;
  }

  function halfToFloat(h) {
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const fraction = h & 0x3ff;
    if (exponent === 0) return sign * fraction * 2 ** -24;
    if (exponent === 31) return fraction ? NaN : sign * Infinity;
    return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
  }

  function floats(record) {
    const half = new Uint16Array(bytes(record).buffer);
    return Float32Array.from(half, halfToFloat);
  }

  const images = bytes(data.images);          // N x C*S*S, 0..255
  const layers = [];                          // [{W, b, rows, cols}] x 3
  for (let k = 0; k < data.decoder.length; k += 2) {
    const [rows, cols] = data.decoder[k].shape;
    layers.push({W: floats(data.decoder[k]), b: floats(data.decoder[k + 1]),
                 rows, cols});
  }

  // --- the decoder ---------------------------------------------------------

  // Output C*S*S pixels in [0, 1] from capsule `digit` alone, set to `vector`
  // (D numbers); the other capsules are zero, as the decoder's mask makes
  // them. Only the D columns of that capsule in the first layer matter.
  function decode(digit, vector) {
    const first = layers[0];
    let h = new Float32Array(first.rows);
    for (let r = 0; r < first.rows; r++) {
      let sum = first.b[r];
      const row = r * first.cols + digit * D;
      for (let k = 0; k < D; k++) sum += first.W[row + k] * vector[k];
      h[r] = Math.max(sum, 0);
    }
    for (let l = 1; l < layers.length; l++) {
      const {W, b, rows, cols} = layers[l];
      const out = new Float32Array(rows);
      for (let r = 0; r < rows; r++) {
        let sum = b[r];
        const row = r * cols;
        for (let c = 0; c < cols; c++) sum += W[row + c] * h[c];
        out[r] = l === layers.length - 1 ? 1 / (1 + Math.exp(-sum))
                                         : Math.max(sum, 0);
      }
      h = out;
    }
    return Array.from(h);
  }

  // --- drawing -------------------------------------------------------------

  // pixels (side x side, or 3 planes of them for `channels` 3) mapped from
  // [low, high] to [0, 1], then coloured (grey planes) or drawn as RGB
  function paint(canvas, pixels, side, [low, high] = [0, 1], colour = grey,
                 channels = 1) {
    const small = document.createElement('canvas');
    small.width = small.height = side;
    const context = small.getContext('2d');
    const picture = context.createImageData(side, side);
    const area = side * side;
    const unit = (v) => (v - low) / (high - low || 1);
    for (let i = 0; i < area; i++) {
      const rgb = channels === 3
        ? [0, 1, 2].map((k) => grey(unit(pixels[k * area + i]))[0])
        : colour(unit(pixels[i]));
      picture.data.set([...rgb, 255], 4 * i);
    }
    context.putImageData(picture, 0, 0);
    const target = canvas.getContext('2d');
    target.imageSmoothingEnabled = false;
    target.drawImage(small, 0, 0, canvas.width, canvas.height);
  }

  function grey(value) {
    const v = Math.round(255 * Math.min(Math.max(value, 0), 1));
    return [v, v, v];
  }

  function heat(value) {       // dark blue -> teal -> yellow, for couplings
    const t = Math.min(Math.max(value, 0), 1);
    return [Math.round(255 * t ** 1.5), Math.round(40 + 190 * t),
            Math.round(110 + 40 * t - 130 * t ** 2)];
  }

  function canvas(width, title) {
    const element = document.createElement('canvas');
    element.width = element.height = width;
    if (title) element.title = title;
    return element;
  }

  function figure(element, caption) {
    const fig = document.createElement('figure');
    const text = document.createElement('figcaption');
    text.textContent = caption;
    fig.append(element, text);
    return fig;
  }

  // --- state and panels ----------------------------------------------------

  // The digit shown: a gallery image or a drawn one.
  const state = {pixels: null, label: null, capsules: null, lengths: null,
                 predicted: null, couplings: null, capsule: 0, vector: null};

  const $ = (id) => document.getElementById(id);

  function lengthsOf(capsules) {
    return capsules.map((v) => Math.sqrt(v.reduce((s, x) => s + x * x, 0)));
  }

  function show(digit) {
    Object.assign(state, digit, {lengths: lengthsOf(digit.capsules)});
    $('digit-title').textContent = digit.label === null
      ? 'Drawn digit: predicted ' + digit.predicted
      : 'Test image ' + digit.title + ': label ' + digit.label +
        ', predicted ' + digit.predicted;
    paint($('input'), state.pixels, S, [0, 255], grey, C);
    showLengths();
    showMasks();
    showRouting();
    chooseCapsule(digit.predicted);
  }

  function showLengths() {
    const box = $('lengths');
    box.replaceChildren();
    state.lengths.forEach((length, j) => {
      const bar = document.createElement('div');
      bar.className = 'bar' + (j === state.predicted ? ' predicted' : '');
      bar.title = length.toFixed(4);
      bar.dataset.length = length;
      const fill = document.createElement('div');
      fill.style.height = (100 * length) + '%';
      const label = document.createElement('span');
      label.textContent = j;
      bar.append(fill, label);
      box.append(bar);
    });
  }

  function showMasks() {
    const box = $('masks');
    box.replaceChildren();
    for (let j = 0; j < J; j++) {
      const c = canvas(S, 'capsule ' + j + ' alone');
      paint(c, decode(j, state.capsules[j]), S, [0, 1], grey, C);
      box.append(figure(c, 'mask ' + j));
    }
  }

  function showRouting() {
    const box = $('routing');
    box.replaceChildren();
    const G = data.grid;
    // one colour scale for the ten maps, from their lowest to highest value
    const all = state.couplings.flat();
    const range = [Math.min(...all), Math.max(...all)];
    state.couplings.forEach((map, j) => {
      const c = canvas(G, 'coupling to capsule ' + j);
      paint(c, map, G, range, heat);
      box.append(figure(c, 'capsule ' + j));
    });
    $('routing-range').textContent = range.map((v) => v.toFixed(3))
      .join(' (dark) to ') + ' (bright)';
  }

  function chooseCapsule(j) {
    state.capsule = j;
    $('capsule').value = String(j);
    state.vector = state.capsules[j].slice();
    const box = $('sliders');
    box.replaceChildren();
    state.vector.forEach((value, k) => {
      const name = document.createElement('label');
      name.textContent = 'dim ' + k;
      name.htmlFor = 'dim' + k;
      const slider = document.createElement('input');
      Object.assign(slider, {type: 'range', id: 'dim' + k, step: 0.005,
                             min: value - SLIDER_RANGE,
                             max: value + SLIDER_RANGE, value});
      const shown = document.createElement('output');
      shown.textContent = value.toFixed(3);
      slider.addEventListener('input', () => {
        state.vector[k] = Number(slider.value);
        shown.textContent = state.vector[k].toFixed(3);
        redraw();
      });
      box.append(name, slider, shown);
    });
    redraw();
  }

  function redraw() {
    paint($('reconstruction'), decode(state.capsule, state.vector), S,
          [0, 1], grey, C);
  }

  function select(n) {
    document.querySelectorAll('#gallery canvas').forEach(
      (c, k) => c.classList.toggle('chosen', k === n));
    show({pixels: images.subarray(n * P, (n + 1) * P),
          title: data.indices[n], label: data.labels[n],
          predicted: data.predicted[n], capsules: data.capsules[n],
          couplings: data.couplings[n]});
  }

  function buildGallery() {
    const box = $('gallery');
    data.labels.forEach((label, n) => {
      const c = canvas(S, 'test image ' + data.indices[n] + ': label ' +
                       label + ', predicted ' + data.predicted[n]);
      if (label !== data.predicted[n]) c.classList.add('wrong');
      paint(c, images.subarray(n * P, (n + 1) * P), S, [0, 255], grey, C);
      c.addEventListener('click', () => select(n));
      box.append(c);
    });
    for (let j = 0; j < J; j++) $('capsule').add(new Option(String(j), j));
    $('capsule').addEventListener('change',
                                  (e) => chooseCapsule(Number(e.target.value)));
    $('reset').addEventListener('click', () => chooseCapsule(state.capsule));
  }

  // --- drawing a digit (served pages only) ---------------------------------

  function buildDrawing() {
    $('draw-panel').hidden = false;
    const pad = $('draw');
    const context = pad.getContext('2d');
    const clear = () => {
      context.fillStyle = '#000';
      context.fillRect(0, 0, pad.width, pad.height);
    };
    clear();
    Object.assign(context, {strokeStyle: '#fff', lineWidth: 20,
                            lineCap: 'round', lineJoin: 'round'});
    let drawing = false;
    const at = (e) => [e.offsetX * pad.width / pad.clientWidth,
                       e.offsetY * pad.height / pad.clientHeight];
    pad.addEventListener('pointerdown', (e) => {
      drawing = true;
      context.beginPath();
      context.moveTo(...at(e));
    });
    pad.addEventListener('pointermove', (e) => {
      if (!drawing) return;
      context.lineTo(...at(e));
      context.stroke();
    });
    window.addEventListener('pointerup', () => { drawing = false; });
    $('clear').addEventListener('click', clear);
    $('send').addEventListener('click', () => send(toModelInput(pad)));
  }

  // Like MNIST: the ink's bounding box scaled into 20 x 20, centred on S x S.
  function toModelInput(pad) {
    const {width, height} = pad;
    const ink = pad.getContext('2d').getImageData(0, 0, width, height).data;
    let [x0, y0, x1, y1] = [width, height, -1, -1];
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        if (ink[4 * (y * width + x)] > 0) {
          x0 = Math.min(x0, x); x1 = Math.max(x1, x);
          y0 = Math.min(y0, y); y1 = Math.max(y1, y);
        }
      }
    }
    const small = canvas(S);
    const context = small.getContext('2d');
    context.fillStyle = '#000';
    context.fillRect(0, 0, S, S);
    if (x1 >= 0) {
      const box = Math.max(x1 - x0 + 1, y1 - y0 + 1);
      const scale = 20 / box;
      const w = (x1 - x0 + 1) * scale;
      const h = (y1 - y0 + 1) * scale;
      context.drawImage(pad, x0, y0, x1 - x0 + 1, y1 - y0 + 1,
                        (S - w) / 2, (S - h) / 2, w, h);
    }
    const rgba = context.getImageData(0, 0, S, S).data;
    return Array.from({length: S * S}, (_, i) => rgba[4 * i] / 255);
  }

  async function send(image) {
    $('draw-status').textContent = 'asking the model...';
    const response = await fetch('capsules', {
      method: 'POST', headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({image})});
    const answer = await response.json();
    if (!response.ok) {
      $('draw-status').textContent = answer.error;
      return;
    }
    $('draw-status').textContent = '';
    document.querySelectorAll('#gallery canvas').forEach(
      (c) => c.classList.remove('chosen'));
    show({pixels: image.map((v) => 255 * v), label: null,
          predicted: answer.predicted, capsules: answer.capsules,
          couplings: answer.couplings});
    return answer;
  }

  buildGallery();
  if (data.served && C === 1) buildDrawing();     // one draws in grey
  select(0);

  // For tests and the console: decode(digit, vector) -> C*S*S outputs.
  window.capsnetExplorer = {decode, select, send, state};
})();
