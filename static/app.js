// The upload page: choose or drop a photo, preview it, send it to /v1/segment (detections,
// COCO RLE masks) and /v1/render (the drawn picture) in parallel, then show both. Clicking a
// table row highlights that instance on a canvas laid over the picture, decoded from its RLE.
// Loaded as a file (no inline script), so the page works under a strict CSP. When the server
// wants an API key (it answers 401), an API key field appears; the key is kept in this tab's
// sessionStorage and sent as `Authorization: Bearer` on every call.
'use strict';

// Ultralytics' palette, the same as PALETTE in src/render/mod.rs: table swatches match the
// colours drawn on the picture.
const PALETTE = ['#042AFF', '#0BDBEB', '#F3F3F3', '#00DFB7', '#111F68', '#FF6FDD', '#FF444F',
  '#CCED00', '#00F344', '#BD00FF', '#00B4FF', '#DD00BA', '#00FFFF', '#26C000', '#01FFB3',
  '#7D24FF', '#7B0068', '#FF1B6C', '#FC6D2F', '#A2FF0B'];

const $ = (id) => document.getElementById(id);
const form = $('upload');
const input = $('image');
const drop = $('drop');
const preview = $('preview');
const output = $('output');
const resultImage = $('result-image');
const canvas = $('highlight');
let previewUrl = null;
let resultUrl = null;
let current = null; // the last /v1/segment reply
let currentFile = null; // the photo of that reply, for background edits
let editUrl = null; // the last /v1/background picture

function setStatus(text) { $('status').textContent = text; }

const KEY_STORE = 'segserve.apiKey';
let typedKey = ''; // the key as typed, in case session storage is off

function apiKey() {
  try { return sessionStorage.getItem(KEY_STORE) || typedKey; } catch (_) { return typedKey; }
}

// The request headers, with the key when there is one.
function withKey(headers) {
  const key = apiKey();
  return key ? { ...headers, Authorization: `Bearer ${key}` } : headers;
}

function showKeyField() {
  $('key-box').hidden = false;
}

$('api-key').value = apiKey();
if (apiKey()) showKeyField();
$('api-key').addEventListener('input', () => {
  typedKey = $('api-key').value.trim();
  try {
    if (typedKey) sessionStorage.setItem(KEY_STORE, typedKey); else sessionStorage.removeItem(KEY_STORE);
  } catch (_) { /* storage off: typedKey still serves this page */ }
});
// A new key may unlock the model list.
$('api-key').addEventListener('change', () => loadModels());

function showError(title, detail, type) {
  $('error-title').textContent = title;
  $('error-detail').textContent = detail ? ' ' + detail : '';
  $('error').dataset.errorType = type || '';
  $('error').hidden = false;
}

function clearError() {
  $('error').hidden = true;
  $('error').dataset.errorType = '';
}

// What a person should read for each error_type the server sends ({"error","error_type"}).
function explain(status, body) {
  const type = body && body.error_type;
  const detail = body && body.error;
  switch (type) {
    case 'unsupported_media_type':
    case 'invalid_image':
      return ['This file is not a photo segserve can read.', detail];
    case 'payload_too_large':
      return ['This photo is too large.', detail];
    case 'overloaded':
    case 'not_ready':
      return ['The server is busy. Please try again in a moment.', detail];
    case 'request_timeout':
      return ['The upload took too long.', detail];
    case 'bad_request':
      return ['Please check the options.', detail];
    case 'unauthorized':
      return apiKey()
        ? ['The API key was not accepted.', 'Check the key in the API key field and try again.']
        : ['This server needs an API key.', 'Enter it in the API key field and press Segment again.'];
    default:
      return ['Something went wrong on the server.', detail || `HTTP ${status}`];
  }
}

class ApiError extends Error {
  constructor(status, body) {
    const [title, detail] = explain(status, body);
    super(title);
    this.detail = detail;
    this.type = (body && body.error_type) || 'http_' + status;
  }
}

async function failure(res) {
  let body = null;
  try { body = await res.json(); } catch (_) { /* not JSON: explain() falls back to the status */ }
  return new ApiError(res.status, body);
}

function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

function chooseFile(file) {
  clearError();
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = null;
  if (!file) {
    preview.hidden = true;
    $('file-name').textContent = '';
    return;
  }
  $('file-name').textContent = `${file.name} · ${formatSize(file.size)}`;
  previewUrl = URL.createObjectURL(file);
  preview.alt = `Preview of ${file.name}`;
  preview.src = previewUrl;
  preview.hidden = false;
  drop.classList.add('has-file');
  $('drop-text').querySelector('strong').textContent = 'Choose another photo';
}

preview.addEventListener('error', () => {
  preview.hidden = true;
  drop.classList.remove('has-file');
  setStatus('No preview: this file does not look like an image.');
});
preview.addEventListener('load', () => setStatus(''));

input.addEventListener('change', () => chooseFile(input.files[0]));

for (const ev of ['dragenter', 'dragover']) {
  drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add('dragging'); });
}
for (const ev of ['dragleave', 'drop']) {
  drop.addEventListener(ev, () => drop.classList.remove('dragging'));
}
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  if (e.dataTransfer.files.length) {
    input.files = e.dataTransfer.files; // keeps the no-JS form submit path consistent
    chooseFile(input.files[0]);
  }
});

function query(extra) {
  const p = new URLSearchParams();
  p.set('conf', $('conf').value || '0.25');
  p.set('iou', $('iou').value || '0.7');
  const classes = $('classes').value.split(',').map((s) => s.trim()).filter(Boolean).join(',');
  if (classes) p.set('classes', classes);
  for (const [k, v] of Object.entries(extra)) p.set(k, v);
  return p.toString();
}

async function post(path, file, accept) {
  const body = new FormData();
  body.append('image', file);
  const res = await fetch(path, { method: 'POST', body, headers: withKey({ Accept: accept }) });
  if (res.status === 401) showKeyField();
  if (!res.ok) throw await failure(res);
  return res;
}

form.addEventListener('submit', async (e) => {
  e.preventDefault();
  clearError();
  const file = input.files[0];
  if (!file) {
    showError('Choose a photo first.', 'Use the button above or drag a photo onto it.', 'no_file');
    input.focus();
    return;
  }
  const button = $('segment');
  button.disabled = true;
  form.setAttribute('aria-busy', 'true');
  setStatus('Segmenting…');
  const started = performance.now();
  try {
    const [segRes, renderRes] = await Promise.all([
      post('/v1/segment?' + query({ masks: 'rle' }), file, 'application/json'),
      post('/v1/render?' + query({ format: 'jpeg' }), file, 'image/jpeg'),
    ]);
    const seg = await segRes.json();
    const blob = await renderRes.blob();
    currentFile = file;
    await showResult(seg, blob, performance.now() - started);
    setStatus(`Done: ${seg.detections.length} object${seg.detections.length === 1 ? '' : 's'} found.`);
  } catch (err) {
    output.hidden = true;
    output.dataset.state = 'error';
    $('placeholder').hidden = false;
    setStatus('');
    if (err instanceof ApiError) {
      showError(err.message, err.detail, err.type);
      if (err.type === 'unauthorized') $('api-key').focus();
    } else {
      showError('Could not reach the server.',
        'The connection failed or was closed (a very large file is refused before it is read).',
        'network');
    }
  } finally {
    button.disabled = false;
    form.removeAttribute('aria-busy');
  }
});

function countsText(counts) {
  return Object.entries(counts).map(([name, n]) => `${n} ${name}`).join(', ');
}

async function showResult(seg, blob, roundTripMs) {
  current = seg;
  const n = seg.detections.length;
  if (resultUrl) URL.revokeObjectURL(resultUrl);
  resultUrl = URL.createObjectURL(blob);
  resultImage.src = resultUrl;
  $('bg-mode').value = 'keep';
  showEdit('keep', resultUrl, 'jpg', 'image/jpeg');
  await resultImage.decode();
  resultImage.alt = n
    ? `The photo with ${n} object${n === 1 ? '' : 's'} outlined and labelled: ${countsText(seg.object_counts)}.`
    : 'The photo; no objects were found.';
  canvas.width = seg.image.width;
  canvas.height = seg.image.height;
  canvas.getContext('2d').clearRect(0, 0, canvas.width, canvas.height);

  $('summary').textContent = n
    ? `Found ${n} object${n === 1 ? '' : 's'} in a ${seg.image.width} × ${seg.image.height} photo.`
    : `No objects found above confidence ${$('conf').value}. Try a lower value.`;

  const counts = $('counts');
  counts.replaceChildren();
  for (const [name, k] of Object.entries(seg.object_counts)) {
    const li = document.createElement('li');
    const d = seg.detections.find((x) => x.class_name === name);
    li.append(swatch(d.class_id), document.createTextNode(`${name} `));
    const b = document.createElement('b');
    b.textContent = k;
    li.append(b);
    counts.append(li);
  }

  const tbody = $('detections').tBodies[0];
  tbody.replaceChildren();
  seg.detections.forEach((d, i) => tbody.append(row(d, i)));

  const t = seg.timing_ms;
  $('timing').textContent = `Model ${seg.model} · inference ${t.inference.toFixed(1)} ms · ` +
    `server total ${t.total.toFixed(1)} ms · round trip ${roundTripMs.toFixed(0)} ms`;
  $('placeholder').hidden = true;
  output.hidden = false;
  output.dataset.state = 'done';
  // Keyboard and screen-reader users land on the result; on a phone this also scrolls to it.
  $('summary').focus({ preventScroll: window.matchMedia('(min-width: 761px)').matches });
}

function swatch(classId) {
  const s = document.createElement('span');
  s.className = 'swatch';
  s.style.backgroundColor = PALETTE[classId % PALETTE.length]; // CSSOM: allowed by the CSP
  return s;
}

function row(d, i) {
  const tr = document.createElement('tr');
  tr.dataset.index = i;
  const cells = [String(i + 1), null, d.score.toFixed(2), d.box.map((v) => Math.round(v)).join(', ')];
  cells.forEach((text, col) => {
    const td = document.createElement(col === 1 ? 'th' : 'td');
    if (col === 1) {
      td.scope = 'row';
      // A real button: reachable with Tab, pressed with Enter or Space.
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'pick';
      b.setAttribute('aria-pressed', 'false');
      b.append(swatch(d.class_id), document.createTextNode(d.class_name));
      b.addEventListener('click', (e) => { e.stopPropagation(); select(i); });
      td.append(b);
    } else {
      td.textContent = text;
    }
    tr.append(td);
  });
  tr.addEventListener('click', () => select(i));
  return tr;
}

let selected = -1;

function select(i) {
  selected = selected === i ? -1 : i;
  for (const tr of $('detections').tBodies[0].rows) {
    const on = Number(tr.dataset.index) === selected;
    tr.classList.toggle('selected', on);
    tr.querySelector('button').setAttribute('aria-pressed', String(on));
  }
  drawHighlight(selected >= 0 ? current.detections[selected] : null);
}

// pycocotools' rleFrString: 5 bits per character, offset 48, deltas after the second count.
// Arithmetic instead of bit shifts: JS shifts are 32-bit.
function rleCounts(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0;
    let k = 0;
    let more = true;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x += (c & 0x1f) * 2 ** (5 * k);
      more = (c & 0x20) !== 0;
      p += 1;
      k += 1;
      if (!more && (c & 0x10)) x -= 2 ** (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

// Dims everything but the chosen instance and outlines its box.
function drawHighlight(d) {
  const ctx = canvas.getContext('2d');
  const w = canvas.width;
  const h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  if (!d) return;
  const shade = ctx.createImageData(w, h);
  const px = shade.data;
  for (let i = 3; i < px.length; i += 4) px[i] = 150;
  if (d.mask) {
    const counts = rleCounts(d.mask.counts);
    let j = 0;
    counts.forEach((c, n) => {
      if (n % 2 === 1) {
        // Runs are column-major: index j is row j % h of column floor(j / h).
        for (let k = j; k < j + c; k++) px[((k % h) * w + Math.floor(k / h)) * 4 + 3] = 0;
      }
      j += c;
    });
  } else {
    const [x1, y1, x2, y2] = d.box.map(Math.round);
    for (let y = Math.max(0, y1); y < Math.min(h, y2); y++) {
      for (let x = Math.max(0, x1); x < Math.min(w, x2); x++) px[(y * w + x) * 4 + 3] = 0;
    }
  }
  ctx.putImageData(shade, 0, 0);
  const lw = Math.max(3, Math.round((w + h) * 0.003));
  const [x1, y1, x2, y2] = d.box;
  ctx.lineWidth = lw;
  ctx.strokeStyle = '#ffffff';
  ctx.strokeRect(x1 - lw, y1 - lw, x2 - x1 + 2 * lw, y2 - y1 + 2 * lw);
  ctx.strokeStyle = '#000000';
  ctx.lineWidth = Math.max(1, lw / 3);
  ctx.strokeRect(x1 - 2 * lw, y1 - 2 * lw, x2 - x1 + 4 * lw, y2 - y1 + 4 * lw);
}

// The model name and its class names (for the class filter's suggestions). A 401 here is
// how the page learns that the server wants a key.
function loadModels() {
  return fetch('/v1/models', { headers: withKey({}) })
    .then((r) => {
      if (r.status === 401) showKeyField();
      return r.ok ? r.json() : null;
    })
    .then((m) => {
      const model = m && m.models.find((x) => x.default);
      if (!model) return;
      $('model-name').textContent = `Model: ${model.name} (${model.task}, ${model.class_names.length} classes)`;
      const list = $('class-names');
      list.replaceChildren();
      for (const name of model.class_names) {
        const o = document.createElement('option');
        o.value = name;
        list.append(o);
      }
    })
    .catch(() => { /* the page still works; the model name shows after the first result */ });
}

loadModels();

// Background edits: the same photo and options through POST /v1/background, shown in place
// of the outlined picture (same size, so the highlight canvas still lines up) and offered
// for download. "Keep" goes back to the outlined picture.
const bgMode = $('bg-mode');
bgMode.addEventListener('change', () => {
  $('bg-color').hidden = bgMode.value !== 'color';
  $('bg-blur').hidden = bgMode.value !== 'blur';
});

function showEdit(mode, url, ext, type) {
  resultImage.src = url;
  resultImage.dataset.background = mode;
  $('result-image').closest('.stage').classList.toggle('checker', mode === 'transparent');
  const a = $('bg-download');
  a.href = url;
  a.download = `segserve-${mode === 'keep' ? 'result' : mode}.${ext}`;
  a.type = type;
  a.hidden = false;
}

$('bg-apply').addEventListener('click', async () => {
  if (!currentFile) return;
  clearError();
  const mode = bgMode.value;
  if (mode === 'keep') {
    showEdit('keep', resultUrl, 'jpg', 'image/jpeg');
    return;
  }
  const png = mode === 'transparent';
  const extra = { background: mode, format: png ? 'png' : 'jpeg', feather: '1' };
  if (mode === 'color') extra.color = $('bg-color').value;
  if (mode === 'blur') extra.blur = $('bg-blur').value;
  const button = $('bg-apply');
  button.disabled = true;
  setStatus('Editing the background…');
  try {
    const res = await post('/v1/background?' + query(extra), currentFile, png ? 'image/png' : 'image/jpeg');
    const blob = await res.blob();
    if (editUrl) URL.revokeObjectURL(editUrl);
    editUrl = URL.createObjectURL(blob);
    showEdit(mode, editUrl, png ? 'png' : 'jpg', blob.type);
    await resultImage.decode();
    resultImage.alt = `The photo with its background made ${mode === 'color' ? 'one colour' : mode}.`;
    setStatus(`Background: ${mode}.`);
  } catch (err) {
    setStatus('');
    if (err instanceof ApiError) showError(err.message, err.detail, err.type);
    else showError('Could not reach the server.', 'The connection failed or was closed.', 'network');
  } finally {
    button.disabled = false;
  }
});
