// Twin Matcher's web page: match a photo, enroll with a video, browse and erase the gallery.
// Plain JavaScript against the HTTP API (/v1/openapi.json); no framework, no build step.
// Everything shown that comes from the server goes through textContent, never innerHTML.
'use strict';

const KEY_STORAGE = 'twin.apiKey';
const POLL_MS = 1000;
const PAGE_SIZE = 48;

const $ = (selector) => document.querySelector(selector);

/** Creates an element: el('p', {class: 'x', text: 'hi'}, child, ...). */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('data-') || k.startsWith('aria-') || k === 'role') e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// --- The API --------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const storedKey = () => localStorage.getItem(KEY_STORAGE) || '';

function errorFrom(status, data) {
  const e = data && data.error;
  return new ApiError(status, (e && e.code) || 'http',
    (e && e.message) || `The server answered with status ${status}.`);
}

/** One API call; resolves to the parsed JSON (null for 204), rejects with an ApiError. */
async function request(method, url, { body, type, write } = {}) {
  const headers = {};
  if (type) headers['Content-Type'] = type;
  if (write && storedKey()) headers['x-api-key'] = storedKey();
  let res;
  try {
    res = await fetch(url, { method, headers, body });
  } catch {
    throw new ApiError(0, 'network', 'The server could not be reached. Check the connection and try again.');
  }
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  if (!res.ok) throw errorFrom(res.status, data);
  return data;
}

/** Whether a URL is on this page's own origin (the API's), not e.g. a storage bucket's. */
function sameOrigin(url) {
  return new URL(url, location.href).origin === location.origin;
}

/**
 * PUTs a file with upload progress (fetch has none), with the headers the server asked for
 * (a presigned upload signs its content type). The API key goes only to this page's own
 * origin: a presigned upload to the bucket carries its authorisation in its URL.
 */
function putFile(url, file, type, headers, onProgress) {
  return new Promise((resolve, reject) => {
    const x = new XMLHttpRequest();
    x.open('PUT', url);
    const sent = { 'content-type': type };
    for (const [k, v] of Object.entries(headers || {})) {
      // The browser sets these itself (and refuses to be told).
      if (!['content-length', 'host'].includes(k.toLowerCase())) sent[k.toLowerCase()] = v;
    }
    for (const [k, v] of Object.entries(sent)) x.setRequestHeader(k, v);
    if (sameOrigin(url) && storedKey()) x.setRequestHeader('x-api-key', storedKey());
    x.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
    x.onload = () => {
      let data = null;
      try { data = JSON.parse(x.responseText); } catch { /* not JSON */ }
      if (x.status >= 200 && x.status < 300) resolve(data);
      else reject(errorFrom(x.status, data));
    };
    x.onerror = () => reject(new ApiError(0, 'network', 'The upload was interrupted. Check the connection and try again.'));
    x.send(file);
  });
}

/** Runs a write; when the server wants a key (401), asks for one and tries again. */
async function withKey(call) {
  for (;;) {
    try {
      return await call();
    } catch (e) {
      if (e.status === 401 && await askKey(keyReason(e.message))) continue;
      throw e;
    }
  }
}

/** What the key dialog says, from the server's 401 message. */
function keyReason(message) {
  if (/not valid/.test(message)) return 'That API key was not accepted. Enter this server\'s key.';
  if (/started without an API key/.test(message)) return message;
  return 'Enrolling and erasing need this server\'s API key.';
}

/** Shows the API key dialog; resolves true when a key was entered (and stored). */
function askKey(reason) {
  const dialog = $('#key-dialog');
  $('#key-reason').textContent = reason || '';
  $('#key-input').value = storedKey();
  dialog.returnValue = '';
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => {
      const key = $('#key-input').value.trim();
      if (dialog.returnValue === 'ok' && key) {
        localStorage.setItem(KEY_STORAGE, key);
        resolve(true);
      } else {
        resolve(false);
      }
    }, { once: true });
  });
}

function showMessage(node, text, kind = 'info') {
  node.textContent = text;
  node.dataset.kind = kind;
  node.classList.toggle('error', kind === 'error');
  node.hidden = !text;
}

// --- Sections -------------------------------------------------------------------------------

function showSection() {
  const name = (location.hash || '#match').slice(1);
  const known = ['match', 'enroll', 'gallery'].includes(name) ? name : 'match';
  for (const s of document.querySelectorAll('[data-section]')) s.hidden = s.dataset.section !== known;
  for (const a of document.querySelectorAll('[data-tab]')) {
    if (a.dataset.tab === known) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (known === 'gallery') loadGallery(true);
}

// --- Match ----------------------------------------------------------------------------------

let photoUrl = null;

async function matchFile(file) {
  const message = $('#match-message');
  const result = $('#match-result');
  result.hidden = true;
  if (!file) return;
  showMessage(message, 'Looking for faces…');
  if (photoUrl) URL.revokeObjectURL(photoUrl);
  photoUrl = URL.createObjectURL(file);
  const form = new FormData();
  form.append('file', file, file.name || 'photo');
  try {
    const found = await request('POST', '/v1/match', { body: form });
    renderMatch(found);
    result.hidden = false;
    showMessage(message, found.faces.length === 1 ? 'One face found.' : `${found.faces.length} faces found.`);
  } catch (e) {
    showMessage(message, e.message, 'error');
  }
}

function percent(part, whole) {
  return `${Math.max(0, Math.min(100, (100 * part) / whole)).toFixed(3)}%`;
}

function renderMatch(found) {
  const img = $('#match-photo');
  img.src = photoUrl;
  const boxes = $('#match-boxes');
  const faces = $('#match-faces');
  boxes.replaceChildren();
  faces.replaceChildren();
  found.faces.forEach((face, i) => {
    const [x, y, w, h] = face.box;
    const box = el('div', { class: 'face-box', 'data-face': String(i + 1) }, el('span', { text: String(i + 1) }));
    box.style.left = percent(x, found.width);
    box.style.top = percent(y, found.height);
    box.style.width = percent(w, found.width);
    box.style.height = percent(h, found.height);
    boxes.append(box);
    faces.append(renderFace(face, i + 1));
  });
  $('#match-meta').textContent = `Gallery version ${found.dataset_version} · ${found.model === "backbone" ? "untrained model (backbone)" : found.model}`;
}

function renderFace(face, n) {
  const card = el('article', { class: 'face', 'data-face': String(n) });
  card.append(el('h3', { text: `Face ${n}` }));
  const top = face.matches[0];
  let verdict;
  if (!top) verdict = el('p', { class: 'verdict', text: 'The gallery is empty: nobody to compare with yet.' });
  else if (top.same_person) verdict = el('p', { class: 'verdict you', text: `This is you: ${top.display_name}` });
  else verdict = el('p', { class: 'verdict lookalike', text: `Lookalike: ${top.display_name}` });
  card.append(verdict);
  const list = el('ol', { class: 'matches' });
  for (const hit of face.matches.slice(0, 5)) {
    const bar = el('div', { class: 'bar', role: 'meter', 'aria-label': `Similarity to ${hit.display_name}`,
      'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-valuenow': String(hit.similarity) },
      el('div', { class: 'fill' }));
    bar.firstChild.style.width = `${hit.similarity}%`;
    list.append(el('li', { class: 'match', 'data-slug': hit.slug, 'data-same': String(hit.same_person) },
      picture(hit.crop_url, hit.display_name),
      el('div', { class: 'who' },
        el('span', { class: 'name', text: hit.display_name }),
        el('span', { class: hit.same_person ? 'tag you' : 'tag', text: hit.same_person ? 'this is you' : 'lookalike' }),
        bar,
        el('span', { class: 'score', text: `${hit.similarity}% similar` }))));
  }
  card.append(list);
  return card;
}

function picture(url, name) {
  if (!url) return el('div', { class: 'pic none', 'aria-hidden': 'true', text: initials(name) });
  return el('img', { class: 'pic', src: url, alt: name, loading: 'lazy', width: 72, height: 72 });
}

function initials(name) {
  return name.split(/\s+/).filter(Boolean).slice(0, 2).map((w) => w[0].toUpperCase()).join('');
}

// --- Enroll ---------------------------------------------------------------------------------

const ORDER = ['created', 'uploaded', 'cropped', 'indexed'];
const STATE_TEXT = {
  created: 'Waiting for the video…',
  uploaded: 'Uploaded. Cutting the faces out of the video…',
  cropped: 'Faces cut. Adding you to the gallery…',
  indexed: 'Done: you are in the gallery, and can be matched now.',
};
const REASONS = {
  no_face: 'no face found',
  several_faces: 'more than one face',
  face_too_small: 'face too small',
  blurred: 'blurred',
  too_dark: 'too dark',
  too_bright: 'too bright',
  extreme_pose: 'head turned too far',
  other_person: 'someone else',
  near_duplicate: 'almost the same as a kept frame',
  over_limit: 'enough frames kept already',
};

function videoType(file) {
  if (file.type) return file.type;
  const ext = (file.name.split('.').pop() || '').toLowerCase();
  return { mov: 'video/quicktime', webm: 'video/webm' }[ext] || 'video/mp4';
}

function setStep(name, state) {
  const li = document.querySelector(`[data-step="${name}"]`);
  li.dataset.status = state; // pending | active | done | warn | failed
}

function renderStatus(s) {
  const at = ORDER.indexOf(s.state);
  const failed = s.state === 'failed';
  if (failed) {
    // The upload was accepted (a status exists); the first step without a result failed.
    setStep('uploaded', 'done');
    setStep('cropped', s.kept ? 'done' : 'failed');
    setStep('indexed', s.kept ? 'failed' : 'pending');
  } else {
    setStep('uploaded', at >= 1 ? 'done' : 'active');
    setStep('cropped', at >= 2 ? 'done' : at === 1 ? 'active' : 'pending');
    setStep('indexed', at >= 3 ? 'done' : at === 2 ? 'active' : 'pending');
  }

  $('#enroll-frames').textContent = s.frames_sampled != null
    ? `Kept ${s.kept ?? 0} of ${s.frames_sampled} frames.` : '';
  const rejected = $('#enroll-rejected');
  rejected.replaceChildren(...Object.entries(s.rejected || {}).map(([reason, count]) =>
    el('li', { 'data-reason': reason, text: `${REASONS[reason] || reason.replace(/_/g, ' ')}: ${count} ${count === 1 ? 'frame' : 'frames'}` })));

  const urls = s.crop_urls || [];
  const strip = $('#enroll-crops');
  if (strip.childElementCount !== Math.min(urls.length, 12)) {
    strip.replaceChildren(...urls.slice(0, 12).map((u) => el('img', { src: u, alt: '', width: 48, height: 48, loading: 'lazy' })));
  }

  // What to do about a failed or weak enrollment, in words (from the per-frame reasons).
  const advice = s.advice || [];
  $('#enroll-advice').replaceChildren(...advice.map((a) =>
    el('li', { text: a.charAt(0).toUpperCase() + a.slice(1) + '.' })));
  $('#enroll-advice-box').hidden = advice.length === 0;

  const l = s.turned_left;
  const r = s.turned_right;
  if (l == null && r == null) {
    setStep('turn', 'pending');
    $('#enroll-turn').textContent = '';
  } else {
    setStep('turn', l && r ? 'done' : 'warn');
    $('#enroll-turn').textContent = `Left: ${l ? 'yes' : 'no'} · right: ${r ? 'yes' : 'no'}`
      + (l && r ? '' : '. Turn your head further to both sides next time.');
  }

  const state = $('#enroll-state');
  state.dataset.state = s.state;
  state.textContent = failed ? `It did not work: ${s.error || 'the video could not be used.'}` : STATE_TEXT[s.state] || s.state;
  state.classList.toggle('error', failed);
}

async function enroll(event) {
  event.preventDefault();
  const name = $('#enroll-name').value.trim();
  const file = $('#enroll-file').files[0] || recordedVideo;
  const state = $('#enroll-state');
  const submit = $('#enroll-submit');
  $('#enroll-progress').hidden = false;
  for (const s of ['uploaded', 'cropped', 'turn', 'indexed']) setStep(s, 'pending');
  $('#enroll-frames').textContent = '';
  $('#enroll-rejected').replaceChildren();
  $('#enroll-crops').replaceChildren();
  $('#enroll-turn').textContent = '';
  $('#enroll-advice').replaceChildren();
  $('#enroll-advice-box').hidden = true;
  $('#enroll-upload').value = 0;
  $('#enroll-title').textContent = name;
  state.classList.remove('error');
  if (!name || !file) {
    state.dataset.state = 'failed';
    state.textContent = 'Give your name, and choose a video or film one with the camera.';
    state.classList.add('error');
    return;
  }
  submit.disabled = true;
  try {
    state.dataset.state = 'starting';
    state.textContent = 'Starting…';
    // The type and size are signed into a presigned upload (on AWS) and checked up front.
    const created = await withKey(() => request('POST', '/v1/enrollments', {
      body: JSON.stringify({ name, content_type: videoType(file), size: file.size }),
      type: 'application/json', write: true,
    }));
    $('#enroll-title').textContent = `Enrolling ${created.display_name}`;
    if (created.max_upload_bytes && file.size > created.max_upload_bytes) {
      throw new ApiError(413, 'too_large', `This video is too large: at most ${Math.floor(created.max_upload_bytes / 1048576)} MB.`);
    }
    state.dataset.state = 'uploading';
    state.textContent = 'Uploading the video…';
    setStep('uploaded', 'active');
    let status = await withKey(() => putFile(created.upload_url, file, videoType(file),
      created.upload_headers, (p) => { $('#enroll-upload').value = Math.round(p * 100); }));
    $('#enroll-upload').value = 100;
    // The bucket answers a presigned upload with no status of ours: ask for it.
    if (!status || !status.state) status = await request('GET', created.status_url);
    renderStatus(status);
    while (status.state !== 'indexed' && status.state !== 'failed') {
      await sleep(POLL_MS);
      try {
        status = await request('GET', created.status_url);
        renderStatus(status);
      } catch (e) {
        if (e.status !== 0) throw e; // a network blip: keep polling
      }
    }
  } catch (e) {
    state.dataset.state = 'failed';
    state.textContent = `It did not work: ${e.message}`;
    state.classList.add('error');
  } finally {
    submit.disabled = false;
  }
}

// --- Camera ---------------------------------------------------------------------------------
// A match photo or the enrollment video straight from the camera (getUserMedia; the video is
// recorded with MediaRecorder), with a preview, a countdown and prompts to turn the head.

const RECORD_MS = 6000;
const PROMPTS = [
  [0, 'Look at the camera'],
  [1300, 'Turn your head slowly to your left'],
  [3000, 'Now slowly to your right'],
  [4800, 'Back to the camera'],
];
let cameraStream = null;
let cameraMode = null;
let pendingVideo = null;
let recordedVideo = null;
let recordedUrl = null;

function cameraAvailable() {
  return !!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
}

function cameraButtons(shown) {
  for (const id of ['camera-shoot', 'camera-record', 'camera-retake', 'camera-use']) {
    $(`#${id}`).hidden = !shown.includes(id);
  }
}

function cameraError(e) {
  if (e && e.name === 'NotAllowedError') return 'The camera was not allowed. Allow it in the browser, or choose a file instead.';
  if (e && e.name === 'NotFoundError') return 'No camera was found. Choose a file instead.';
  return 'The camera could not be started. Choose a file instead.';
}

async function startCamera() {
  const video = $('#camera-preview');
  const prompt = $('#camera-prompt');
  prompt.textContent = 'Starting the camera…';
  try {
    cameraStream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 }, facingMode: 'user' }, audio: false,
    });
  } catch (e) {
    prompt.textContent = cameraError(e);
    return false;
  }
  video.classList.remove('playback');
  video.controls = false;
  video.loop = false;
  video.removeAttribute('src');
  video.srcObject = cameraStream;
  await video.play().catch(() => {});
  return true;
}

function stopCamera() {
  if (cameraStream) for (const t of cameraStream.getTracks()) t.stop();
  cameraStream = null;
  $('#camera-count').textContent = '';
}

async function openCamera(mode) {
  cameraMode = mode;
  $('#camera-title').textContent = mode === 'photo' ? 'Take a photo' : 'Film yourself';
  cameraButtons([]);
  const dialog = $('#camera-dialog');
  if (!dialog.open) dialog.showModal();
  if (!await startCamera()) return;
  if (mode === 'photo') {
    $('#camera-prompt').textContent = 'Face the camera, then take the photo.';
    cameraButtons(['camera-shoot']);
    $('#camera-shoot').focus();
  } else {
    $('#camera-prompt').textContent = 'The camera films for 6 seconds: look at it, then turn your head slowly to the left and to the right.';
    cameraButtons(['camera-record']);
    $('#camera-record').focus();
  }
}

function closeCamera() {
  const dialog = $('#camera-dialog');
  if (dialog.open) dialog.close();
}

async function shootPhoto() {
  const video = $('#camera-preview');
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext('2d').drawImage(video, 0, 0);
  const blob = await new Promise((r) => canvas.toBlob(r, 'image/jpeg', 0.92));
  closeCamera();
  if (blob) matchFile(new File([blob], 'camera.jpg', { type: 'image/jpeg' }));
}

function recorderType() {
  const types = ['video/webm;codecs=vp8', 'video/webm;codecs=vp9', 'video/webm', 'video/mp4'];
  return types.find((t) => window.MediaRecorder && MediaRecorder.isTypeSupported(t)) || '';
}

async function recordVideo() {
  cameraButtons([]);
  const count = $('#camera-count');
  const prompt = $('#camera-prompt');
  for (let n = 3; n > 0; n -= 1) {
    count.textContent = String(n);
    prompt.textContent = `Filming starts in ${n}…`;
    await sleep(1000);
    if (!cameraStream) return; // closed meanwhile
  }
  count.textContent = '';
  const type = recorderType();
  const recorder = new MediaRecorder(cameraStream, type ? { mimeType: type } : undefined);
  const chunks = [];
  recorder.ondataavailable = (e) => { if (e.data.size) chunks.push(e.data); };
  const stopped = new Promise((r) => { recorder.onstop = r; });
  recorder.start(250);
  const started = performance.now();
  for (const [at, text] of PROMPTS) {
    const wait = at - (performance.now() - started);
    if (wait > 0) await sleep(wait);
    prompt.textContent = text;
  }
  await sleep(Math.max(0, RECORD_MS - (performance.now() - started)));
  if (recorder.state !== 'inactive') recorder.stop();
  await stopped;
  stopCamera();
  const base = (recorder.mimeType || type || 'video/webm').split(';')[0];
  const blob = new Blob(chunks, { type: base });
  pendingVideo = new File([blob], `camera.${base === 'video/mp4' ? 'mp4' : 'webm'}`, { type: base });
  // Played back for a look before it is used.
  const video = $('#camera-preview');
  if (recordedUrl) URL.revokeObjectURL(recordedUrl);
  recordedUrl = URL.createObjectURL(blob);
  video.srcObject = null;
  video.src = recordedUrl;
  video.classList.add('playback');
  video.controls = true;
  video.loop = true;
  video.play().catch(() => {});
  prompt.textContent = 'Filmed. Use this video, or film again.';
  cameraButtons(['camera-retake', 'camera-use']);
  $('#camera-use').focus();
}

function useRecording() {
  if (!pendingVideo) return;
  recordedVideo = pendingVideo;
  pendingVideo = null;
  $('#enroll-file').value = '';
  const mb = (recordedVideo.size / 1048576).toFixed(1);
  $('#enroll-recorded').textContent = `Your video from the camera is ready (${mb} MB).`;
  closeCamera();
  $('#enroll-submit').focus();
}

// --- Gallery --------------------------------------------------------------------------------

let galleryOffset = 0;
let galleryTotal = 0;
let galleryLoading = null;

async function loadGallery(reset) {
  if (galleryLoading) await galleryLoading;
  galleryLoading = (async () => {
    const list = $('#gallery-list');
    const message = $('#gallery-message');
    if (reset) {
      galleryOffset = 0;
      list.replaceChildren();
    }
    try {
      const page = await request('GET', `/v1/identities?offset=${galleryOffset}&limit=${PAGE_SIZE}`);
      galleryTotal = page.total;
      for (const ident of page.identities) list.append(galleryCard(ident));
      galleryOffset += page.identities.length;
      showMessage(message, page.total === 0 ? 'Nobody is in the gallery yet.' : '');
    } catch (e) {
      showMessage(message, e.message, 'error');
    }
    updateGalleryCount();
  })();
  await galleryLoading;
  galleryLoading = null;
}

function updateGalleryCount() {
  $('#gallery-count').textContent = galleryTotal === 1 ? '1 person' : `${galleryTotal} people`;
  $('#gallery-more').hidden = galleryOffset >= galleryTotal;
}

function galleryCard(ident) {
  const erase = el('button', { type: 'button', class: 'danger small', text: 'Erase' });
  erase.addEventListener('click', () => askErase(ident));
  return el('li', { class: 'person', 'data-slug': ident.slug },
    picture(ident.picture_url, ident.display_name),
    el('span', { class: 'name', text: ident.display_name }),
    el('span', { class: 'meta', text: ident.crops === 1 ? '1 picture' : `${ident.crops} pictures` }),
    erase);
}

let erasing = null;

function askErase(ident) {
  erasing = ident;
  $('#erase-name').textContent = ident.display_name;
  $('#erase-key').value = storedKey();
  $('#erase-error').hidden = true;
  $('#erase-dialog').showModal();
}

async function confirmErase() {
  if (!erasing) return;
  const key = $('#erase-key').value.trim();
  const error = $('#erase-error');
  if (key) localStorage.setItem(KEY_STORAGE, key);
  const button = $('#erase-confirm');
  button.disabled = true;
  try {
    await request('DELETE', `/v1/identities/${encodeURIComponent(erasing.slug)}`, { write: true });
    const card = document.querySelector(`#gallery-list [data-slug="${CSS.escape(erasing.slug)}"]`);
    if (card) card.remove();
    galleryTotal = Math.max(0, galleryTotal - 1);
    galleryOffset = Math.max(0, galleryOffset - 1);
    updateGalleryCount();
    showMessage($('#gallery-message'), `${erasing.display_name} was erased.`);
    erasing = null;
    $('#erase-dialog').close();
  } catch (e) {
    showMessage(error, e.message, 'error');
  } finally {
    button.disabled = false;
  }
}

// --- Start ----------------------------------------------------------------------------------

document.addEventListener('DOMContentLoaded', () => {
  $('#match-file').addEventListener('change', (e) => {
    const file = e.target.files[0];
    e.target.value = ''; // so that choosing the same photo again matches it again
    matchFile(file);
  });
  $('#match-form').addEventListener('submit', (e) => e.preventDefault());
  $('#enroll-form').addEventListener('submit', enroll);
  $('#enroll-file').addEventListener('change', (e) => {
    if (e.target.files[0]) {
      recordedVideo = null;
      $('#enroll-recorded').textContent = '';
    }
  });
  if (cameraAvailable()) {
    $('#match-camera').hidden = false;
    $('#match-camera').addEventListener('click', () => openCamera('photo'));
    if (window.MediaRecorder) {
      $('#enroll-camera-choice').hidden = false;
      $('#enroll-camera').addEventListener('click', () => openCamera('video'));
    }
  }
  $('#camera-shoot').addEventListener('click', shootPhoto);
  $('#camera-record').addEventListener('click', recordVideo);
  $('#camera-retake').addEventListener('click', () => openCamera('video'));
  $('#camera-use').addEventListener('click', useRecording);
  $('#camera-cancel').addEventListener('click', closeCamera);
  // However the dialog closes (Cancel, Escape), the camera is turned off.
  $('#camera-dialog').addEventListener('close', () => {
    stopCamera();
    const video = $('#camera-preview');
    video.pause();
    video.srcObject = null;
    video.removeAttribute('src');
  });
  $('#gallery-more').addEventListener('click', () => loadGallery(false));
  $('#erase-confirm').addEventListener('click', confirmErase);
  $('#key-settings').addEventListener('click', () => askKey('Enrolling and erasing need this server\'s API key.'));
  window.addEventListener('hashchange', showSection);
  showSection();
});
