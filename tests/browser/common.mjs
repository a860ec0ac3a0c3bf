// What Twin Matcher's browser scripts share: their environment, Debian's Chromium started as the
// tests start it, a timed log, screenshots, and the way a failed run ends (the problems seen,
// a screenshot of every open page, a non-zero exit).

import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

/** A reader of required environment variables; `command` says how the script is run. */
export function envReader(command) {
  return (name) => {
    const v = process.env[name];
    if (!v) throw new Error(`${name} is not set (run this through ${command})`);
    return v;
  };
}

/** `$CHROMIUM`, else Debian's Chromium; fails, naming scripts/setup, when there is none. */
export function chromiumPath() {
  const found = process.env.CHROMIUM
    || ['/usr/lib/chromium/chromium', '/usr/bin/chromium'].find((p) => existsSync(p));
  if (!found) throw new Error('Chromium is not installed: run scripts/setup (Debian package chromium)');
  return found;
}

/** Headless Chromium with nothing that reaches out to the network by itself, plus `extraArgs`. */
export function launch(extraArgs = []) {
  return chromium.launch({
    executablePath: chromiumPath(),
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
      ...extraArgs],
  });
}

/** A log whose lines carry `[prefix seconds]` since the script started. */
export function logger(prefix) {
  const started = Date.now();
  return (msg) => console.log(`[${prefix} ${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);
}

/** A full-page screenshot `name` in `dir` (made if needed), logged. */
export async function screenshot(page, dir, name, log) {
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, name);
  await page.screenshot({ path: file, fullPage: true });
  log(`screenshot ${file}`);
}

/** Ends a failed run: the error and the problems seen, `failure.png` of the open pages, exit 1. */
export async function fail(browser, prefix, error, problems, dir) {
  console.error(`[${prefix}] FAILED: ${error.stack || error}`);
  for (const p of problems) console.error(`[${prefix}] ${p}`);
  try {
    for (const ctx of browser.contexts()) {
      for (const pg of ctx.pages()) await pg.screenshot({ path: path.join(dir, 'failure.png'), fullPage: true });
    }
  } catch { /* best effort */ }
  await browser.close();
  process.exit(1);
}
