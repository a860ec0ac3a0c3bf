// Twin Matcher's browser test on the AWS shape: the web page in headless Chromium, served by the
// real `api` Lambda binary behind a local API Gateway (HTTP API, payload 2.0), with the bucket
// and the queues on moto (IAM and the bucket's CORS rules from infra/template.yaml).
//
// Started by `cargo test -p twin-fn-api --test browser_aws`, which deploys the template, seeds
// the gallery through uploads/ and runs ingest and dataset on the S3 and SQS events, and passes:
//   TWIN_URL          the page's address (the API's origin, http://127.0.0.1:PORT/)
//   TWIN_API_KEY      the api's key
//   TWIN_BUCKET_ORIGIN the bucket's origin (moto's endpoint, http://127.0.0.1:PORT)
//   TWIN_BUCKET       the bucket's name (path-style URLs: <origin>/<bucket>/<key>)
//   TWIN_SEEDED       the slugs seeded in the gallery, comma-separated (the first is matched)
//   TWIN_SEED_PHOTO   a photo (under TWIN_MEDIA) of the first seeded person
//   TWIN_MEDIA        the folder with short_hamilton_clip.mp4 and lin-manuel-miranda.png
//   TWIN_SCREENSHOTS  where to save the screenshots
//   TWIN_MATCH_WAIT_S how long the api may take to serve a newly indexed gallery (its polling)
//   CHROMIUM          the browser (default: Debian's /usr/lib/chromium/chromium or /usr/bin/chromium)
//
// It matches a photo of a seeded person, enrolls "Ada Lovelace" with a video (answering the API
// key dialog; the video goes to the bucket with the presigned PUT), waits for `indexed`, matches
// the video's person and sees the enrolled name, and erases them from the gallery view. Every
// request that leaves the API's origin is checked: only the presigned PUT to the bucket, and
// never the API key. Prints one JSON line `BROWSER_SUMMARY {...}` at the end; exits non-zero at
// the first failure.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { envReader, fail, launch, logger, screenshot } from './common.mjs';

const env = envReader('cargo test -p twin-fn-api --test browser_aws');
const BASE = env('TWIN_URL');
const KEY = env('TWIN_API_KEY');
const BUCKET_ORIGIN = new URL(env('TWIN_BUCKET_ORIGIN')).origin;
const BUCKET = env('TWIN_BUCKET');
const SEEDED = env('TWIN_SEEDED').split(',');
const SEED_PHOTO = env('TWIN_SEED_PHOTO');
const MEDIA = env('TWIN_MEDIA');
const SHOTS = env('TWIN_SCREENSHOTS');
const MATCH_WAIT_MS = 1000 * Number(process.env.TWIN_MATCH_WAIT_S || '30');
const API_ORIGIN = new URL(BASE).origin;
const media = (name) => path.join(MEDIA, name);
mkdirSync(SHOTS, { recursive: true });

const log = logger('browser');

const browser = await launch();

const problems = [];
// Every request the page makes: where it went and the headers it really carried.
const requests = [];
function watch(page, label) {
  page.on('pageerror', (e) => problems.push(`${label}: page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    // The page's own expected failures (a 401 before the key is given, a 404 while waiting for
    // a person to appear) are logged by the browser as failed resources; anything else (CORS
    // refusals, CSP violations, script errors) is a problem.
    const text = m.text();
    if (/status of 40[14]/.test(text)) return;
    problems.push(`${label}: console error: ${text}`);
  });
  page.on('request', (r) => {
    requests.push({
      method: r.method(),
      url: r.url(),
      headers: r.allHeaders(),
      response: r.response().then((res) => res && res.status()).catch(() => null),
    });
  });
}

const shot = (page, name) => screenshot(page, SHOTS, name, log);

/** Chooses a photo in the match form and waits for its result. */
async function matchPhoto(page, file) {
  await page.goto(`${BASE}#match`);
  await page.evaluate(() => document.querySelector('#match-faces').replaceChildren());
  const answered = page.waitForResponse((r) => r.url().endsWith('/v1/match'));
  await page.setInputFiles('#match-file', file);
  const response = await answered;
  assert.equal(response.status(), 200, `POST /v1/match of ${path.basename(file)} answered ${response.status()}`);
  await page.waitForSelector('#match-faces .face');
  await page.waitForFunction(() => [...document.querySelectorAll('#match-result img')]
    .every((i) => i.complete && i.naturalWidth > 0));
  return page.evaluate(() => ({
    meta: document.querySelector('#match-meta').textContent,
    faces: [...document.querySelectorAll('#match-faces .face')].map((f) => ({
      verdict: f.querySelector('.verdict').textContent,
      slugs: [...f.querySelectorAll('.match')].map((m) => m.dataset.slug),
      tags: [...f.querySelectorAll('.match .tag')].map((t) => t.textContent),
    })),
  }));
}

/**
 * Matches `file` until its first face's best match is `slug`: the api serves a gallery it
 * reloads every TWIN_MODEL_POLL_SECONDS, so a person just indexed (or seeded) is matched once
 * it has polled. Returns the result and how long that took.
 */
async function matchUntil(page, file, slug) {
  const t0 = Date.now();
  let tries = 0;
  for (;;) {
    tries += 1;
    const found = await matchPhoto(page, file);
    if (found.faces[0] && found.faces[0].slugs[0] === slug) {
      return { found, tries, waited_ms: Date.now() - t0 };
    }
    if (Date.now() - t0 > MATCH_WAIT_MS) {
      throw new Error(`${path.basename(file)} was not matched to ${slug} within ${MATCH_WAIT_MS / 1000} s `
        + `(${tries} tries; last: ${JSON.stringify(found)})`);
    }
    await page.waitForTimeout(1000);
  }
}

const summary = {};
try {
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  watch(page, 'desk');

  // 1. The page from the API's origin, and a match against the seeded gallery.
  await page.goto(BASE);
  assert.equal(await page.title(), 'Twin Matcher');
  let m = await matchUntil(page, media(SEED_PHOTO), SEEDED[0]);
  assert.equal(m.found.faces.length, 1, `${SEED_PHOTO} has one face`);
  assert.equal(m.found.faces[0].tags[0], 'this is you');
  log(`${SEED_PHOTO}: "${m.found.faces[0].verdict}" (${m.found.meta}); top ${m.found.faces[0].slugs.join(', ')}; after ${m.tries} tries`);
  summary.seed_match = { verdict: m.found.faces[0].verdict, slugs: m.found.faces[0].slugs, meta: m.found.meta, waited_ms: m.waited_ms };
  await shot(page, '01-match-seeded.png');

  // 2. Enroll with the video: the api wants the key, the page asks for it, then PUTs the video
  //    straight to the bucket with the presigned URL.
  await page.goto(`${BASE}#enroll`);
  await page.fill('#enroll-name', 'Ada Lovelace');
  await page.setInputFiles('#enroll-file', media('short_hamilton_clip.mp4'));
  const created = page.waitForResponse((r) => r.url().endsWith('/v1/enrollments') && r.status() === 201);
  await page.click('#enroll-submit');
  await page.waitForSelector('#key-dialog[open]');
  assert.match(await page.textContent('#key-reason'), /API key/);
  await page.fill('#key-input', KEY);
  await shot(page, '02-enroll-key-dialog.png');
  await page.click('#key-ok');
  const enrollment = await (await created).json();
  assert.ok(enrollment.upload_url.startsWith(`${BUCKET_ORIGIN}/${BUCKET}/uploads/ada_lovelace/`),
    `the upload goes to the bucket: ${enrollment.upload_url.split('?')[0]}`);
  log(`enrollment ${enrollment.upload_id}: PUT ${enrollment.upload_url.split('?')[0]} with ${Object.keys(enrollment.upload_headers || {}).join(', ')}`);
  const seen = [];
  const enrollStarted = Date.now();
  const deadline = enrollStarted + 150_000;
  const shotAt = new Set();
  for (;;) {
    const state = await page.getAttribute('#enroll-state', 'data-state');
    if (state && seen[seen.length - 1] !== state) {
      seen.push(state);
      log(`enrollment: ${state}`);
    }
    if ((state === 'uploaded' || state === 'cropped') && !shotAt.has(state)) {
      shotAt.add(state);
      await shot(page, `03-enroll-${state}.png`);
    }
    if (state === 'indexed') break;
    if (state === 'failed') throw new Error(`enrollment failed: ${await page.textContent('#enroll-state')}`);
    if (Date.now() > deadline) throw new Error(`enrollment did not finish in 150 s (states: ${seen.join(' → ')})`);
    await page.waitForTimeout(100);
  }
  summary.enroll_states = seen;
  summary.enroll_ms = Date.now() - enrollStarted;
  for (const step of ['uploaded', 'cropped', 'indexed']) {
    assert.equal(await page.getAttribute(`[data-step="${step}"]`, 'data-status'), 'done', `step ${step}`);
  }
  const frames = await page.textContent('#enroll-frames');
  assert.match(frames, /Kept \d+ of \d+ frames/);
  assert.ok(await page.locator('#enroll-crops img').count() > 0, 'the faces cut are shown');
  await page.waitForFunction(() => [...document.querySelectorAll('#enroll-crops img')]
    .every((i) => i.complete && i.naturalWidth > 0));
  summary.frames = frames;
  summary.turn = await page.textContent('#enroll-turn');
  summary.rejected = await page.locator('#enroll-rejected li').allTextContents();
  log(`indexed after ${(summary.enroll_ms / 1000).toFixed(1)} s: ${frames} ${summary.turn}`);
  await shot(page, '04-enroll-indexed.png');

  // 3. The video's person is matched to the enrolled name at once: the page said "can be
  //    matched now", and the api reloaded its gallery when it reported `indexed`.
  m = await matchUntil(page, media('lin-manuel-miranda.png'), 'ada_lovelace');
  assert.equal(m.tries, 1, 'matched on the first try after indexed');
  assert.equal(m.found.faces.length, 1);
  assert.equal(m.found.faces[0].verdict, 'This is you: Ada Lovelace');
  assert.equal(m.found.faces[0].tags[0], 'this is you');
  log(`lin-manuel-miranda.png: "${m.found.faces[0].verdict}" (${m.found.meta}) after ${m.tries} tries, ${(m.waited_ms / 1000).toFixed(1)} s after indexed`);
  summary.ada_match = { verdict: m.found.faces[0].verdict, slugs: m.found.faces[0].slugs, meta: m.found.meta, tries: m.tries, waited_ms: m.waited_ms };
  await shot(page, '05-match-ada.png');

  // 4. Erase her from the gallery view.
  await page.goto(`${BASE}#gallery`);
  const card = page.locator('#gallery-list [data-slug="ada_lovelace"]');
  await card.waitFor();
  await page.waitForFunction(() => [...document.querySelectorAll('#gallery-list img')]
    .every((i) => i.complete && i.naturalWidth > 0));
  const before = await page.textContent('#gallery-count');
  await shot(page, '06-gallery.png');
  await card.locator('button', { hasText: 'Erase' }).click();
  await page.waitForSelector('#erase-dialog[open]');
  assert.equal(await page.inputValue('#erase-key'), KEY, 'the erase dialog offers the kept key');
  await shot(page, '07-erase-dialog.png');
  await page.click('#erase-confirm');
  await card.waitFor({ state: 'detached' });
  await page.waitForSelector('#erase-dialog', { state: 'hidden' });
  const after = await page.textContent('#gallery-count');
  assert.equal(parseInt(after, 10), parseInt(before, 10) - 1, `gallery count ${before} → ${after}`);
  await page.reload();
  await page.waitForSelector('#gallery-list .person');
  assert.equal(await page.locator('#gallery-list [data-slug="ada_lovelace"]').count(), 0, 'gone after a reload');
  log(`erased: gallery ${before} → ${after}`);
  summary.gallery = { before, after };
  await shot(page, '08-gallery-erased.png');

  // 5. She is not matched any more.
  const again = await matchPhoto(page, media('lin-manuel-miranda.png'));
  assert.ok(!again.faces[0].slugs.includes('ada_lovelace'), `still matched: ${again.faces[0].slugs}`);
  log(`lin-manuel-miranda.png after erasure: "${again.faces[0].verdict}"`);
  summary.after_erase = { verdict: again.faces[0].verdict, slugs: again.faces[0].slugs };
  await shot(page, '09-match-after-erasure.png');
  await context.close();

  // 6. Where the requests went: the API's origin, and the bucket for the video only; the key
  //    never left the API's origin.
  const seenRequests = await Promise.all(requests.map(async (r) => ({
    ...r, headers: await r.headers.catch(() => ({})), status: await r.response,
  })));
  const origins = {};
  for (const r of seenRequests) {
    const u = new URL(r.url);
    if (u.protocol === 'blob:' || u.protocol === 'data:') continue;
    origins[u.origin] = (origins[u.origin] || 0) + 1;
    if (u.origin === API_ORIGIN) continue;
    assert.ok(!('x-api-key' in r.headers), `${r.method} ${u.origin}${u.pathname} carried x-api-key`);
    assert.ok(!r.url.includes(KEY), `the key is in the URL ${u.origin}${u.pathname}`);
    for (const [name, value] of Object.entries(r.headers)) {
      assert.ok(!String(value).includes(KEY), `the key is in the ${name} header to ${u.origin}`);
    }
  }
  assert.deepEqual(Object.keys(origins).sort(), [API_ORIGIN, BUCKET_ORIGIN].sort(),
    `requests went only to the API and the bucket: ${JSON.stringify(origins)}`);
  const toBucket = seenRequests.filter((r) => new URL(r.url).origin === BUCKET_ORIGIN);
  assert.equal(toBucket.length, 1, `one request to the bucket: ${toBucket.map((r) => `${r.method} ${r.url.split('?')[0]}`)}`);
  const put = toBucket[0];
  const u = new URL(put.url);
  assert.equal(put.method, 'PUT');
  assert.equal(u.pathname, `/${BUCKET}/uploads/ada_lovelace/${enrollment.upload_id}.mp4`);
  for (const q of ['X-Amz-Algorithm', 'X-Amz-Credential', 'X-Amz-Date', 'X-Amz-Expires',
    'X-Amz-SignedHeaders', 'X-Amz-Signature', 'X-Amz-Security-Token']) {
    assert.ok(u.searchParams.get(q), `the PUT is presigned: ${q} is in its query`);
  }
  assert.equal(put.headers['content-type'], 'video/mp4');
  assert.ok(!('authorization' in put.headers), 'the PUT carries no Authorization header');
  assert.equal(put.status, 200, `the bucket answered the PUT with ${put.status}`);
  const signed = u.searchParams.get('X-Amz-SignedHeaders').split(';');
  assert.ok(signed.includes('content-type') && signed.includes('content-length'),
    `type and size are signed: ${signed}`);
  const keyed = seenRequests.filter((r) => 'x-api-key' in r.headers)
    .map((r) => `${r.method} ${new URL(r.url).pathname} → ${r.status}`);
  summary.requests = origins;
  summary.with_key = keyed;
  summary.put = {
    url: `${u.origin}${u.pathname}`,
    signed_headers: signed,
    expires: u.searchParams.get('X-Amz-Expires'),
    credential: u.searchParams.get('X-Amz-Credential').replace(/^[^/]+/, '<key id>'),
    status: put.status,
  };
  log(`requests by origin: ${JSON.stringify(origins)}; with the key: ${keyed.join('; ')}`);

  assert.deepEqual(problems, [], 'no script errors or console errors');
  console.log(`BROWSER_SUMMARY ${JSON.stringify(summary)}`);
  log('all steps passed');
  await browser.close();
} catch (e) {
  await fail(browser, 'browser', e, problems, SHOTS);
}
