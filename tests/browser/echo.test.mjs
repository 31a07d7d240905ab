// Headless-Chromium test of the echo example's page (examples/echo/web.html).
//
// Starts the echo server twice (as it is, and with `--deflate`, where the
// handler opts in to permessage-deflate), opens its page, clicks connect /
// send / close and checks the page's log and the extensions Chromium agreed
// to (`WebSocket.extensions`). Environment knobs:
//   ECHO_CMD                 shell command that starts the server; "{addr}" is
//                            replaced by 127.0.0.1:PORT and "{flags}" by the
//                            mode's flags. Default:
//                            cargo run --quiet --example echo -- {addr} {flags}
//   ECHO_START_TIMEOUT_MS    how long to wait for the port to accept TCP
//                            connections (default 600000: a first cargo build
//                            is slow)
//   BROWSER_STEP_TIMEOUT_MS  timeout of each page step (default 15000)
//   CHROMIUM_PATH            browser binary (default /usr/bin/chromium)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { freePort, Server } from './harness.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const START_TIMEOUT = Number(process.env.ECHO_START_TIMEOUT_MS ?? 600_000);
const STEP_TIMEOUT = Number(process.env.BROWSER_STEP_TIMEOUT_MS ?? 15_000);
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const SCREENSHOT = path.join(ROOT, 'target', 'browser', 'echo.png');

// One server per mode: { flags, server (a harness Server), addr }.
const MODES = [
  { name: 'plain', flags: [], extensions: 'none' },
  { name: 'deflate', flags: ['--deflate'], extensions: 'permessage-deflate' },
];
let browser = null;

function startServer(mode, address) {
  const args = process.env.ECHO_CMD
    ? ['sh', '-c', process.env.ECHO_CMD.replaceAll('{addr}', address)
      .replaceAll('{flags}', mode.flags.join(' '))]
    : ['cargo', 'run', '--quiet', '--example', 'echo', '--', address, ...mode.flags];
  mode.server = new Server(args, ROOT, `server ${mode.name}`);
}

before(async () => {
  for (const mode of MODES) {
    const port = await freePort();
    mode.addr = `127.0.0.1:${port}`;
    startServer(mode, mode.addr);
    await mode.server.waitForPort(port, START_TIMEOUT);
  }
  browser = await chromium.launch({
    headless: true,
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
});

after(async () => {
  try {
    if (browser) await browser.close();
  } finally {
    for (const mode of MODES) if (mode.server) await mode.server.stop();
  }
});

for (const mode of MODES) test(`echo page (${mode.name}): connect, send, receive the echo, close`, async () => {
  const addr = mode.addr;
  const page = await browser.newPage();
  const pageErrors = [];
  page.on('pageerror', (err) => pageErrors.push(err));
  page.on('console', (msg) => process.stderr.write(`[console] ${msg.text()}\n`));

  const response = await page.goto(`http://${addr}/`, { timeout: STEP_TIMEOUT });
  assert.equal(response.status(), 200);
  assert.match(response.headers()['content-type'] ?? '', /^text\/html\b/);

  // Before connecting only "connect" is usable.
  assert.equal(await page.isEnabled('#connect'), true);
  assert.equal(await page.isDisabled('#send'), true);
  assert.equal(await page.isDisabled('#close'), true);

  const wait = { timeout: STEP_TIMEOUT };
  await page.click('#connect', wait);
  await page.waitForSelector('#log li:text-is("open")', wait);
  await page.waitForSelector('#send:enabled', wait);
  // What Chromium agreed to: permessage-deflate only when the handler opts in.
  assert.equal(await page.textContent('#extensions'), mode.extensions);

  await page.click('#send', wait);
  await page.waitForSelector('#log li:text-is("sent: hello world")', wait);
  await page.waitForSelector('#log li:text-is("You said: hello world")', wait);

  await page.click('#close', wait);
  await page.waitForSelector('#log li:text-matches("^close 1000( |$)")', wait);
  await page.waitForSelector('#connect:enabled', wait);
  assert.equal(await page.isDisabled('#send'), true);
  assert.equal(await page.isDisabled('#close'), true);

  mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT.replace('.png', `-${mode.name}.png`), fullPage: true });

  const log = await page.$$eval('#log li', (items) => items.map((li) => li.textContent));
  assert.deepEqual(log.slice(0, 3), ['open', 'sent: hello world', 'You said: hello world']);
  assert.equal(log.length, 4, `unexpected log: ${JSON.stringify(log)}`);
  assert.match(log[3], /^close 1000( |$)/);
  assert.deepEqual(pageErrors, []);
  await page.close();
});
