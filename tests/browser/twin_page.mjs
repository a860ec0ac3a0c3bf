// Twin Matcher's browser test: the web page in headless Chromium against a running `twin serve`.
//
// Started by `cargo test -p twin-cli --test browser`, which imports the gallery, starts the
// server and passes, in the environment:
//   TWIN_URL         the page's address (http://127.0.0.1:PORT/)
//   TWIN_API_KEY     the server's API key
//   TWIN_MEDIA       the folder with obama.jpg, short_hamilton_clip.mp4, lin-manuel-miranda.png
//   TWIN_SCREENSHOTS where to save the screenshots
//   CHROMIUM         the browser (default: Debian's /usr/lib/chromium/chromium or /usr/bin/chromium)
//
// It matches a photo, enrolls a video (answering the API key dialog), matches the enrolled
// person, erases them (a wrong key first, then the right one) and matches them again, on a desk
// screen, then checks the match on a phone screen. Exits non-zero at the first failure.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { envReader, fail, launch, logger, screenshot } from './common.mjs';

const env = envReader('cargo test -p twin-cli --test browser');
const BASE = env('TWIN_URL');
const KEY = env('TWIN_API_KEY');
const MEDIA = env('TWIN_MEDIA');
const SHOTS = env('TWIN_SCREENSHOTS');
const media = (name) => path.join(MEDIA, name);
mkdirSync(SHOTS, { recursive: true });

const log = logger('browser');

const browser = await launch();

const problems = [];
function watch(page, label) {
  page.on('pageerror', (e) => problems.push(`${label}: page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    // The page's own expected failures (a 401 before the key is given) are logged by the
    // browser as failed resources; anything else (CSP violations, script errors) is a problem.
    const text = m.text();
    if (/status of 401/.test(text)) return;
    problems.push(`${label}: console error: ${text}`);
  });
}

const shot = (page, name) => screenshot(page, SHOTS, name, log);

/** Chooses a photo in the match form and waits for its result (or its error message). */
async function matchPhoto(page, file) {
  await page.goto(`${BASE}#match`);
  await page.evaluate(() => document.querySelector('#match-faces').replaceChildren());
  const answered = page.waitForResponse((r) => r.url().endsWith('/v1/match'));
  await page.setInputFiles('#match-file', media(file));
  const response = await answered;
  assert.equal(response.status(), 200, `POST /v1/match of ${file} answered ${response.status()}`);
  await page.waitForSelector('#match-faces .face');
  // Every picture shown has loaded.
  await page.waitForFunction(() => [...document.querySelectorAll('#match-result img')]
    .every((i) => i.complete && i.naturalWidth > 0));
  return page.evaluate(() => [...document.querySelectorAll('#match-faces .face')].map((f) => ({
    verdict: f.querySelector('.verdict').textContent,
    slugs: [...f.querySelectorAll('.match')].map((m) => m.dataset.slug),
    tags: [...f.querySelectorAll('.match .tag')].map((t) => t.textContent),
  })));
}

/** The face boxes, each inside the photo as displayed. */
async function faceBoxes(page) {
  const photo = await page.locator('#match-photo').boundingBox();
  const boxes = await page.locator('.face-box').evaluateAll((els) => els.map((e) => {
    const r = e.getBoundingClientRect();
    return { x: r.x + scrollX, y: r.y + scrollY, width: r.width, height: r.height };
  }));
  const top = await page.evaluate(() => scrollY);
  for (const b of boxes) {
    assert.ok(b.width > 10 && b.height > 10, `a face box is too small: ${JSON.stringify(b)}`);
    assert.ok(b.x >= photo.x - 1 && b.x + b.width <= photo.x + photo.width + 1, 'a face box is outside the photo');
    assert.ok(b.y >= photo.y + top - 1 && b.y + b.height <= photo.y + top + photo.height + 1, 'a face box is outside the photo');
  }
  return boxes;
}

try {
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  watch(page, 'desk');

  // 1. The page, and a match.
  await page.goto(BASE);
  assert.equal(await page.title(), 'Twin Matcher');
  let faces = await matchPhoto(page, 'obama.jpg');
  const boxes = await faceBoxes(page);
  assert.equal(boxes.length, 1, 'obama.jpg shows one face box');
  assert.equal(faces.length, 1);
  assert.equal(faces[0].slugs[0], 'barack_obama', `first match of obama.jpg: ${faces[0].slugs}`);
  assert.equal(faces[0].slugs.length, 5, 'five matches per face');
  assert.match(faces[0].verdict, /Barack Obama/);
  log(`obama.jpg: ${boxes.length} box, "${faces[0].verdict}", top 5 ${faces[0].slugs.join(', ')}`);
  await shot(page, '01-match-obama.png');

  // 2. Enroll with the video; the server wants the key, and the page asks for it.
  await page.goto(`${BASE}#enroll`);
  await page.fill('#enroll-name', 'Lin-Manuel Miranda');
  await page.setInputFiles('#enroll-file', media('short_hamilton_clip.mp4'));
  await page.click('#enroll-submit');
  await page.waitForSelector('#key-dialog[open]');
  assert.match(await page.textContent('#key-reason'), /API key/);
  await page.fill('#key-input', KEY);
  await shot(page, '02-enroll-key-dialog.png');
  await page.click('#key-ok');
  const seen = [];
  const deadline = Date.now() + 300_000;
  let midShot = false;
  for (;;) {
    const state = await page.getAttribute('#enroll-state', 'data-state');
    if (state && seen[seen.length - 1] !== state) {
      seen.push(state);
      log(`enrollment: ${state}`);
    }
    if (state === 'uploaded' && !midShot) {
      await shot(page, '03-enroll-progress.png');
      midShot = true;
    }
    if (state === 'indexed') break;
    if (state === 'failed') throw new Error(`enrollment failed: ${await page.textContent('#enroll-state')}`);
    if (Date.now() > deadline) throw new Error(`enrollment did not finish in 300 s (states: ${seen.join(' → ')})`);
    await page.waitForTimeout(100);
  }
  assert.equal(await page.getAttribute('[data-step="uploaded"]', 'data-status'), 'done');
  assert.equal(await page.getAttribute('[data-step="cropped"]', 'data-status'), 'done');
  assert.equal(await page.getAttribute('[data-step="indexed"]', 'data-status'), 'done');
  const frames = await page.textContent('#enroll-frames');
  assert.match(frames, /Kept \d+ of \d+ frames/);
  const reasons = await page.locator('#enroll-rejected li').allTextContents();
  assert.ok(reasons.length > 0, 'rejected-frame reasons are listed');
  const turn = await page.textContent('#enroll-turn');
  assert.match(turn, /Left: (yes|no) · right: (yes|no)/);
  assert.ok(await page.locator('#enroll-crops img').count() > 0, 'the faces cut are shown');
  assert.equal(await page.evaluate(() => localStorage.getItem('twin.apiKey')), KEY, 'the key is kept');
  log(`enrolled: ${seen.join(' → ')}; ${frames} ${reasons.join('; ')}; ${turn}`);
  await page.waitForFunction(() => [...document.querySelectorAll('#enroll-crops img')]
    .every((i) => i.complete && i.naturalWidth > 0));
  await shot(page, '04-enroll-indexed.png');

  // 3. The enrolled person is recognised.
  faces = await matchPhoto(page, 'lin-manuel-miranda.png');
  assert.equal(faces.length, 1);
  assert.equal(faces[0].verdict, 'This is you: Lin-Manuel Miranda');
  assert.equal(faces[0].slugs[0], 'lin_manuel_miranda');
  assert.equal(faces[0].tags[0], 'this is you');
  assert.ok(faces[0].tags.slice(1).includes('lookalike'), 'the others are lookalikes');
  log(`lin-manuel-miranda.png: "${faces[0].verdict}"`);
  await shot(page, '05-match-lin-manuel-miranda.png');

  // 4. Erase him: a wrong key is refused, the right one erases.
  await page.goto(`${BASE}#gallery`);
  const card = page.locator('#gallery-list [data-slug="lin_manuel_miranda"]');
  await card.waitFor();
  await page.waitForFunction(() => [...document.querySelectorAll('#gallery-list img')]
    .every((i) => i.complete && i.naturalWidth > 0));
  const before = await page.textContent('#gallery-count');
  await shot(page, '06-gallery.png');
  await card.locator('button', { hasText: 'Erase' }).click();
  await page.waitForSelector('#erase-dialog[open]');
  assert.equal(await page.inputValue('#erase-key'), KEY, 'the erase dialog offers the kept key');
  await page.fill('#erase-key', 'not-the-key');
  await page.click('#erase-confirm');
  await page.waitForSelector('#erase-error:not([hidden])');
  assert.match(await page.textContent('#erase-error'), /not valid/);
  await shot(page, '07-erase-wrong-key.png');
  await page.fill('#erase-key', KEY);
  await page.click('#erase-confirm');
  await card.waitFor({ state: 'detached' });
  await page.waitForSelector('#erase-dialog', { state: 'hidden' });
  const after = await page.textContent('#gallery-count');
  assert.equal(parseInt(after, 10), parseInt(before, 10) - 1, `gallery count ${before} → ${after}`);
  log(`erased: gallery ${before} → ${after}`);
  await shot(page, '08-gallery-erased.png');

  // 5. He is not matched any more.
  faces = await matchPhoto(page, 'lin-manuel-miranda.png');
  assert.ok(!faces[0].slugs.includes('lin_manuel_miranda'), `still matched: ${faces[0].slugs}`);
  assert.doesNotMatch(faces[0].verdict, /This is you: Lin-Manuel Miranda/);
  log(`lin-manuel-miranda.png after erasure: "${faces[0].verdict}"`);
  await shot(page, '09-match-after-erasure.png');
  await context.close();

  // 6. A phone screen: the same match fits without sideways scrolling.
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  const p2 = await phone.newPage();
  watch(p2, 'phone');
  faces = await matchPhoto(p2, 'obama.jpg');
  await faceBoxes(p2);
  assert.equal(faces[0].slugs[0], 'barack_obama');
  // (On a phone the layout viewport widens to fit the page, so compare with the device width.)
  const sideways = async () => (await p2.evaluate(() => document.documentElement.scrollWidth)) - 390;
  assert.ok(await sideways() <= 0, `the match page scrolls sideways on a phone by ${await sideways()}px`);
  await shot(p2, '10-phone-match.png');
  for (const [section, name] of [['enroll', '11-phone-enroll.png'], ['gallery', '12-phone-gallery.png']]) {
    await p2.goto(`${BASE}#${section}`);
    await p2.waitForSelector(`#${section}:not([hidden])`);
    if (section === 'gallery') await p2.waitForSelector('#gallery-list .person');
    assert.ok(await sideways() <= 0, `the ${section} page scrolls sideways on a phone by ${await sideways()}px`);
    await shot(p2, name);
  }
  await phone.close();

  assert.deepEqual(problems, [], 'no script errors or console errors');
  log('all steps passed');
  await browser.close();
} catch (e) {
  await fail(browser, 'browser', e, problems, SHOTS);
}
