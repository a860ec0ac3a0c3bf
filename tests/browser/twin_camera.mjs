// Twin Matcher's camera test: the page as people use it, in headless Chromium with a fake camera
// that plays a clip, against a running `twin serve`.
//
// Started by `cargo test -p twin-cli --test browser_camera`, which imports the gallery, makes the
// clips with ffmpeg, starts the server and passes, in the environment:
//   TWIN_URL           the page's address (http://127.0.0.1:PORT/)
//   TWIN_API_KEY       the server's API key
//   TWIN_CAMERA_Y4M    the fake camera's clip (Y4M, one person turning the head; Chromium loops it)
//   TWIN_DARK_VIDEO    a video too dark to enroll
//   TWIN_NOTURN_VIDEO  a video where the head turns to one side only
//   TWIN_SCREENSHOTS   where to save the screenshots
//   CHROMIUM           the browser (default: Debian's /usr/lib/chromium/chromium or /usr/bin/chromium)
//
// Checks, each printing one line: the keyboard alone reaches the Enroll tab, the name, the camera
// button, and opens and closes the camera dialog; enrolling by filming with the camera (countdown,
// prompts to turn left and right, the API key asked for) ends indexed; a photo taken with the
// camera matches the enrolled person; a dark video fails with advice that says so; a video
// without a turn to one side says so; names in Cyrillic and CJK are shown as typed; axe-core
// finds no serious or critical violation in any view or dialog. Exits non-zero at the first
// failure.

import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { envReader, fail, launch, logger, screenshot } from './common.mjs';

const env = envReader('cargo test -p twin-cli --test browser_camera');
const BASE = env('TWIN_URL');
const KEY = env('TWIN_API_KEY');
const CAMERA_CLIP = env('TWIN_CAMERA_Y4M');
const DARK_VIDEO = env('TWIN_DARK_VIDEO');
const NOTURN_VIDEO = env('TWIN_NOTURN_VIDEO');
const SHOTS = env('TWIN_SCREENSHOTS');
const AXE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'node_modules/axe-core/axe.min.js');
if (!existsSync(AXE)) throw new Error(`${AXE} is missing: run scripts/setup (npm ci in tests/browser)`);
const AXE_SOURCE = readFileSync(AXE, 'utf8');
mkdirSync(SHOTS, { recursive: true });

// Names in other scripts, each to be shown exactly as typed.
const CAMERA_NAME = 'Лин-Мануэль Миранда';
const DARK_NAME = '林曼努尔';
const NOTURN_NAME = 'Lin-Manuel without a turn';

const log = logger('camera');
const pass = (check, detail) => log(`PASS ${check}: ${detail}`);

// A camera that is allowed without asking and plays the clip, looping.
const browser = await launch(['--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
  `--use-file-for-fake-video-capture=${CAMERA_CLIP}`]);

const problems = [];
function watch(page, label) {
  page.on('pageerror', (e) => problems.push(`${label}: page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    // Expected failures, logged by the browser as failed resources: a 401 before the key is
    // given, a 422 for a camera photo taken while no face was in view (it is taken again).
    const text = m.text();
    if (/status of 40[1]|status of 422/.test(text)) return;
    problems.push(`${label}: console error: ${text}`);
  });
}

const shot = (page, name) => screenshot(page, SHOTS, name, log);

// --- Accessibility ------------------------------------------------------------------------------

const axeResults = [];

/** Runs axe-core on the page as it is; fails on any serious or critical violation. */
async function axe(page, view) {
  if (!await page.evaluate(() => typeof window.axe === 'object')) {
    // Evaluated through the DevTools protocol: the page's CSP (script-src 'self') refuses the
    // inline script tag page.addScriptTag would add, and the CSP stays on for the whole test.
    await page.evaluate(AXE_SOURCE);
  }
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  const counts = {};
  for (const v of result.violations) counts[v.impact] = (counts[v.impact] || 0) + 1;
  axeResults.push({ view, counts });
  const text = (v) => `${v.id} (${v.impact}): ${v.help} [${v.nodes.map((n) => n.target.join(' ')).join(', ')}]`;
  for (const v of result.violations) log(`  axe ${view}: ${text(v)}`);
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  if (bad.length) {
    const details = (v) => `${text(v)}\n    ${v.nodes.map((n) => n.failureSummary.replace(/\s+/g, ' ')).join('\n    ')}`;
    throw new Error(`axe-core: ${bad.length} serious or critical violations in ${view}:\n  ${bad.map(details).join('\n  ')}`);
  }
  const summary = Object.entries(counts).map(([k, n]) => `${n} ${k}`).join(', ') || 'no violations';
  pass(`axe ${view}`, `${summary} (${result.passes.length} rules passed)`);
}

// --- Keyboard -----------------------------------------------------------------------------------

/** What has the focus: enough to tell where it is and whether it shows. */
function focused(page) {
  return page.evaluate(() => {
    const a = document.activeElement;
    const style = a ? getComputedStyle(a) : null;
    return {
      id: a?.id || '',
      tag: a?.tagName.toLowerCase() || 'none',
      text: (a?.getAttribute('aria-label') || a?.textContent || '').trim().replace(/\s+/g, ' ').slice(0, 40),
      tab: a?.dataset?.tab || '',
      visible: !!a && a.matches(':focus-visible') && style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2,
      inDialog: a?.closest('dialog')?.id || '',
      pageHasFocus: document.hasFocus(),
    };
  });
}

const describe = (f) => `${f.tag}${f.id ? `#${f.id}` : ''}${f.text ? ` "${f.text}"` : ''}`;

/** Presses Tab until the focus is on what `wanted` accepts; every stop must show its focus. */
async function tabTo(page, what, wanted, max = 25) {
  const stops = [];
  for (let i = 0; i < max; i += 1) {
    await page.keyboard.press('Tab');
    const f = await focused(page);
    stops.push(describe(f));
    assert.ok(f.pageHasFocus && f.tag !== 'body', `the focus left the page while tabbing to ${what} (${stops.join(' → ')})`);
    assert.ok(f.visible, `${describe(f)} has the focus but does not show it`);
    if (wanted(f)) return stops;
  }
  throw new Error(`${what} was not reached in ${max} presses of Tab: ${stops.join(' → ')}`);
}

async function keyboardOnly(page) {
  await page.goto(BASE);
  await page.waitForSelector('#match-camera:not([hidden])');
  const toTab = await tabTo(page, 'the Enroll tab', (f) => f.tab === 'enroll');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#enroll:not([hidden])');
  assert.equal(await page.getAttribute('[data-tab="enroll"]', 'aria-current'), 'page');
  const toName = await tabTo(page, 'the name field', (f) => f.id === 'enroll-name');
  await page.keyboard.type('Keyboard Only');
  assert.equal(await page.inputValue('#enroll-name'), 'Keyboard Only');
  const toCamera = await tabTo(page, 'the camera button', (f) => f.id === 'enroll-camera');
  log(`keyboard: ${[...toTab, 'Enter', ...toName, 'typed', ...toCamera].join(' → ')}`);

  // Enter and Space both open the dialog; inside, the focus stays in it and shows; Escape closes
  // it, turns the camera off and gives the focus back to the button.
  for (const key of ['Enter', 'Space']) {
    await page.keyboard.press(key);
    await page.waitForSelector('#camera-dialog[open]');
    await page.waitForSelector('#camera-record:not([hidden])');
    await page.waitForFunction(() => document.activeElement?.id === 'camera-record');
    let f = await focused(page);
    assert.ok(f.visible, `${describe(f)} has the focus in the dialog but does not show it`);
    const inside = [describe(f)];
    // Tab goes round the dialog's controls (the rest of the page is inert). Past the last one
    // Chromium hands the focus to the browser's own controls (the document loses it, as to an
    // address bar), and the next Tab brings it back to the dialog's first control.
    const controls = await page.locator('#camera-dialog button:not([hidden])').count();
    for (let i = 0; i < controls + 1; i += 1) {
      await page.keyboard.press('Tab');
      f = await focused(page);
      if (!f.pageHasFocus) {
        inside.push('(browser controls)');
        continue;
      }
      inside.push(describe(f));
      assert.equal(f.inDialog, 'camera-dialog', `Tab left the open camera dialog for ${describe(f)} (${inside.join(' → ')})`);
      assert.ok(f.visible, `${describe(f)} has the focus in the dialog but does not show it`);
    }
    assert.equal(f.id, 'camera-record', `Tab does not go round the dialog: ${inside.join(' → ')}`);
    if (key === 'Enter') await shot(page, '01-keyboard-camera-dialog.png');
    // The stream the preview shows, kept to see its tracks end.
    await page.evaluate(() => { window.cameraStreamSeen = document.querySelector('#camera-preview').srcObject; });
    assert.ok(await page.evaluate(() => window.cameraStreamSeen?.getVideoTracks().some((t) => t.readyState === 'live')),
      'the camera dialog is open but no live camera stream is on the preview');
    await page.keyboard.press('Escape');
    await page.waitForSelector('#camera-dialog', { state: 'hidden' });
    await page.waitForFunction(() => document.activeElement?.id === 'enroll-camera', null, { timeout: 5000 })
      .catch(async () => { throw new Error(`after Escape the focus is on ${describe(await focused(page))}, not the camera button`); });
    // The dialog's close event (which turns the camera off) is dispatched in a task after the
    // dialog hides, so this waits for it rather than looking at once.
    await page.waitForFunction(() => !document.querySelector('#camera-preview').srcObject
      && window.cameraStreamSeen.getTracks().every((t) => t.readyState === 'ended'), null, { timeout: 5000 })
      .catch(() => { throw new Error('the camera is still on 5 s after Escape closed the dialog'); });
    log(`keyboard: ${key} opens the camera dialog: ${inside.join(' → ')}; Escape closes it, focus back on the camera button`);
  }
  pass('keyboard', 'Tab reaches the Enroll tab, the name and the camera button (focus shown at every stop); Enter/Space open the camera dialog, focus stays inside, Escape closes it and returns the focus');
}

// --- Enrollment ---------------------------------------------------------------------------------

/** Waits for the enrollment on screen to end (indexed or failed), returning its state. */
async function waitEnrollment(page, label, onState = async () => {}) {
  const seen = [];
  const deadline = Date.now() + 180_000;
  for (;;) {
    const state = await page.getAttribute('#enroll-state', 'data-state');
    if (state && seen[seen.length - 1] !== state) {
      seen.push(state);
      log(`${label}: ${state}`);
      await onState(state);
    }
    if (state === 'indexed' || state === 'failed') return { state, seen };
    if (Date.now() > deadline) throw new Error(`${label} did not finish in 180 s (states: ${seen.join(' → ')})`);
    await page.waitForTimeout(100);
  }
}

async function enrollmentReport(page) {
  return page.evaluate(() => ({
    title: document.querySelector('#enroll-title').textContent,
    state: document.querySelector('#enroll-state').textContent,
    frames: document.querySelector('#enroll-frames').textContent,
    turn: document.querySelector('#enroll-turn').textContent,
    rejected: [...document.querySelectorAll('#enroll-rejected li')].map((l) => l.textContent),
    advice: [...document.querySelectorAll('#enroll-advice li')].map((l) => l.textContent),
    adviceShown: !document.querySelector('#enroll-advice-box').hidden,
  }));
}

async function cameraEnrollment(page) {
  await page.goto(`${BASE}#enroll`);
  await page.waitForSelector('#enroll-camera-choice:not([hidden])');
  await axe(page, 'Enroll (empty)');
  await page.fill('#enroll-name', CAMERA_NAME);
  await page.click('#enroll-camera');
  await page.waitForSelector('#camera-dialog[open]');
  await page.waitForSelector('#camera-record:not([hidden])');
  // The preview plays the fake camera.
  await page.waitForFunction(() => {
    const v = document.querySelector('#camera-preview');
    return v.srcObject && v.videoWidth > 0 && v.readyState >= 2;
  });
  assert.equal(await page.textContent('#camera-title'), 'Film yourself');
  await axe(page, 'camera dialog (video, preview)');
  await shot(page, '02-camera-ready.png');

  // Everything the countdown and the prompts say, as it changes.
  await page.evaluate(() => {
    window.seenText = { prompt: [], count: [] };
    for (const [sel, list] of [['#camera-prompt', window.seenText.prompt], ['#camera-count', window.seenText.count]]) {
      const node = document.querySelector(sel);
      new MutationObserver(() => {
        const t = node.textContent;
        if (t && list[list.length - 1] !== t) list.push(t);
      }).observe(node, { childList: true, characterData: true, subtree: true });
    }
  });
  const clicked = Date.now();
  await page.click('#camera-record');
  // (The screenshots are taken while it runs; the observer above checks the whole sequence.)
  await page.waitForFunction(() => /^[321]$/.test(document.querySelector('#camera-count').textContent));
  await shot(page, '03-camera-countdown.png');
  await page.waitForFunction(() => /left|right/.test(document.querySelector('#camera-prompt').textContent), null, { timeout: 10_000 });
  await shot(page, '04-camera-filming.png');
  await page.waitForSelector('#camera-use:not([hidden])', { timeout: 20_000 });
  const took = (Date.now() - clicked) / 1000;
  const seenText = await page.evaluate(() => window.seenText);
  assert.deepEqual(seenText.count, ['3', '2', '1'], `the countdown showed ${JSON.stringify(seenText.count)}`);
  const prompts = seenText.prompt;
  assert.ok(prompts.some((p) => /left/i.test(p)), `no prompt to turn left: ${JSON.stringify(prompts)}`);
  assert.ok(prompts.some((p) => /right/i.test(p)), `no prompt to turn right: ${JSON.stringify(prompts)}`);
  assert.ok(prompts.findIndex((p) => /left/i.test(p)) < prompts.findIndex((p) => /right/i.test(p)), 'left is asked before right');
  assert.ok(took >= 8.5 && took < 20, `countdown and filming took ${took.toFixed(1)} s (3 + 6 expected)`);
  // The recording plays back before it is used.
  await page.waitForFunction(() => {
    const v = document.querySelector('#camera-preview');
    return !v.srcObject && v.src.startsWith('blob:') && v.readyState >= 2;
  });
  await axe(page, 'camera dialog (video, filmed)');
  await shot(page, '05-camera-filmed.png');
  pass('camera filming', `countdown ${seenText.count.join('-')}, prompts "${prompts.filter((p) => !/starts in/.test(p)).join('" → "')}", ${took.toFixed(1)} s`);

  await page.click('#camera-use');
  await page.waitForSelector('#camera-dialog', { state: 'hidden' });
  const recorded = await page.textContent('#enroll-recorded');
  assert.match(recorded, /ready/);
  assert.equal(await page.evaluate(() => document.activeElement.id), 'enroll-submit', 'the focus moves to Enroll');
  log(`recorded: "${recorded}"`);

  // Enroll: the server wants the key, and the page asks for it.
  const created = page.waitForResponse((r) => r.url().endsWith('/v1/enrollments') && r.status() === 201);
  await page.click('#enroll-submit');
  await page.waitForSelector('#key-dialog[open]');
  assert.match(await page.textContent('#key-reason'), /API key/);
  await axe(page, 'API key dialog');
  await page.fill('#key-input', KEY);
  await shot(page, '06-enroll-key-dialog.png');
  await page.click('#key-ok');
  const body = await (await created).json();
  assert.equal(body.display_name, CAMERA_NAME, 'the API answers the name as typed');
  let progressChecked = false;
  const { state, seen } = await waitEnrollment(page, 'camera enrollment', async (s) => {
    if ((s === 'uploaded' || s === 'cropped') && !progressChecked) {
      progressChecked = true;
      await shot(page, '07-enroll-in-progress.png');
      await axe(page, `Enroll (in progress: ${s})`);
    }
  });
  const report = await enrollmentReport(page);
  if (state !== 'indexed') throw new Error(`the camera enrollment ${state}: ${JSON.stringify(report)}`);
  for (const step of ['uploaded', 'cropped', 'indexed']) {
    assert.equal(await page.getAttribute(`[data-step="${step}"]`, 'data-status'), 'done', `step ${step}`);
  }
  assert.equal(report.title, `Enrolling ${CAMERA_NAME}`, 'the name is shown as typed');
  const kept = Number((report.frames.match(/Kept (\d+) of (\d+)/) || [])[1]);
  assert.ok(kept >= 10, `only ${kept} frames kept of the camera video: ${report.frames}`);
  await page.waitForFunction(() => [...document.querySelectorAll('#enroll-crops img')]
    .every((i) => i.complete && i.naturalWidth > 0));
  await axe(page, 'Enroll (indexed)');
  await shot(page, '08-enroll-camera-indexed.png');
  pass('camera enrollment', `${seen.join(' → ')}; "${report.title}"; ${report.frames} ${report.turn}${report.advice.length ? `; advice: ${report.advice.join(' ')}` : ''}`);
}

// --- Match --------------------------------------------------------------------------------------

async function cameraMatch(page) {
  await page.goto(`${BASE}#match`);
  await page.waitForSelector('#match-camera:not([hidden])');
  let faces = null;
  for (let attempt = 1; attempt <= 6 && !faces; attempt += 1) {
    await page.evaluate(() => document.querySelector('#match-faces').replaceChildren());
    await page.click('#match-camera');
    await page.waitForSelector('#camera-dialog[open]');
    await page.waitForSelector('#camera-shoot:not([hidden])');
    await page.waitForFunction(() => document.querySelector('#camera-preview').videoWidth > 0);
    assert.equal(await page.textContent('#camera-title'), 'Take a photo');
    if (attempt === 1) {
      await axe(page, 'camera dialog (photo)');
      await shot(page, '09-camera-photo.png');
    }
    const answered = page.waitForResponse((r) => r.url().endsWith('/v1/match'));
    await page.click('#camera-shoot');
    const response = await answered;
    await page.waitForSelector('#camera-dialog', { state: 'hidden' });
    if (response.status() === 422) {
      // The clip passed a moment without a face in view: take the photo again.
      log(`camera photo ${attempt}: ${await page.textContent('#match-message')} (taking another)`);
      await page.waitForTimeout(700);
      continue;
    }
    assert.equal(response.status(), 200, `POST /v1/match of the camera photo answered ${response.status()}`);
    await page.waitForSelector('#match-faces .face');
    await page.waitForFunction(() => [...document.querySelectorAll('#match-result img')]
      .every((i) => i.complete && i.naturalWidth > 0));
    faces = await page.evaluate(() => [...document.querySelectorAll('#match-faces .face')].map((f) => ({
      verdict: f.querySelector('.verdict').textContent,
      names: [...f.querySelectorAll('.match .name')].map((n) => n.textContent),
    })));
  }
  assert.ok(faces, 'no camera photo with a face in six tries');
  const face = faces.find((f) => f.names[0] === CAMERA_NAME);
  assert.ok(face, `the camera photo's top match is not ${CAMERA_NAME}: ${JSON.stringify(faces)}`);
  assert.equal(face.verdict, `This is you: ${CAMERA_NAME}`);
  await axe(page, 'Match (camera photo matched)');
  await shot(page, '10-match-camera-photo.png');
  pass('camera match', `${faces.length} face(s); "${face.verdict}"; top 5 ${face.names.join(', ')}`);
}

// --- Enrollments that need advice --------------------------------------------------------------

async function fileEnrollment(page, name, file) {
  await page.goto(`${BASE}#enroll`);
  await page.fill('#enroll-name', name);
  await page.setInputFiles('#enroll-file', file);
  const created = page.waitForResponse((r) => r.url().endsWith('/v1/enrollments'));
  await page.click('#enroll-submit');
  const response = await created;
  assert.equal(response.status(), 201, `POST /v1/enrollments answered ${response.status()}`);
  assert.equal((await response.json()).display_name, name, 'the API answers the name as typed');
  const { state, seen } = await waitEnrollment(page, name);
  return { state, seen, report: await enrollmentReport(page) };
}

async function darkEnrollment(page) {
  const { state, seen, report } = await fileEnrollment(page, DARK_NAME, DARK_VIDEO);
  assert.equal(state, 'failed', `the dark video ${state}: ${JSON.stringify(report)}`);
  assert.match(report.state, /^It did not work/);
  assert.ok(report.adviceShown, 'the advice is shown');
  assert.ok(report.advice.some((a) => /too dark/.test(a)), `no advice about darkness: ${JSON.stringify(report.advice)}`);
  assert.equal(report.title, `Enrolling ${DARK_NAME}`, 'the CJK name is shown as typed');
  assert.equal(await page.getAttribute('[data-step="cropped"]', 'data-status'), 'failed');
  await axe(page, 'Enroll (failed, with advice)');
  await shot(page, '11-enroll-dark-failed.png');
  pass('dark video', `${seen.join(' → ')}; "${report.title}"; "${report.state}"; advice: ${report.advice.join(' ')}`);
}

async function noTurnEnrollment(page) {
  const { state, seen, report } = await fileEnrollment(page, NOTURN_NAME, NOTURN_VIDEO);
  assert.ok(report.adviceShown, `no advice shown (${state}): ${JSON.stringify(report)}`);
  assert.ok(report.advice.some((a) => /did not turn/.test(a)), `no advice about turning: ${JSON.stringify(report.advice)}`);
  await shot(page, '12-enroll-no-turn.png');
  pass('video without a turn', `${seen.join(' → ')}; ${report.frames} ${report.turn}; advice: ${report.advice.join(' ')}`);
}

// --- Gallery ------------------------------------------------------------------------------------

async function gallery(page) {
  await page.goto(`${BASE}#gallery`);
  const card = page.locator('#gallery-list .person', { hasText: CAMERA_NAME });
  await card.waitFor();
  assert.equal(await card.locator('.name').textContent(), CAMERA_NAME, 'the gallery shows the name as typed');
  await page.waitForFunction(() => [...document.querySelectorAll('#gallery-list img')]
    .every((i) => i.complete && i.naturalWidth > 0));
  await axe(page, 'Gallery');
  await shot(page, '13-gallery.png');
  await card.locator('button', { hasText: 'Erase' }).click();
  await page.waitForSelector('#erase-dialog[open]');
  assert.equal(await page.textContent('#erase-name'), CAMERA_NAME);
  await axe(page, 'erase dialog');
  await shot(page, '14-erase-dialog.png');
  await page.keyboard.press('Escape');
  await page.waitForSelector('#erase-dialog', { state: 'hidden' });
  assert.equal(await card.count(), 1, 'Escape erases nobody');
  pass('names as typed', `"${CAMERA_NAME}" in the enrollment, the match and the gallery; "${DARK_NAME}" in the failed enrollment`);
}

try {
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  watch(page, 'desk');

  await page.goto(BASE);
  assert.equal(await page.title(), 'Twin Matcher');
  await page.waitForSelector('#match-camera:not([hidden])');
  await axe(page, 'Match (empty)');

  await keyboardOnly(page);
  await cameraEnrollment(page);
  await cameraMatch(page);
  await darkEnrollment(page);
  await noTurnEnrollment(page);
  await gallery(page);

  assert.deepEqual(problems, [], 'no script errors or console errors');
  log(`axe: ${axeResults.map((r) => `${r.view}: ${Object.entries(r.counts).map(([k, n]) => `${n} ${k}`).join(', ') || 'none'}`).join('; ')}`);
  log('all checks passed');
  await browser.close();
} catch (e) {
  await fail(browser, 'camera', e, problems, SHOTS);
}
