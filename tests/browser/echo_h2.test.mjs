// Headless Chromium against the echo demo served over HTTPS with HTTP/2
// (examples/echo_h2.rs: hyper with squall's tower Service): the page loads
// over h2, and the WebSocket opens as an RFC 8441 extended CONNECT on that
// connection, which the server's access line shows as `CONNECT ... HTTP/2`.
// Knobs as in echo.test.mjs (ECHO_START_TIMEOUT_MS, BROWSER_STEP_TIMEOUT_MS,
// CHROMIUM_PATH).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { freePort, Server } from './harness.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const START_TIMEOUT = Number(process.env.ECHO_START_TIMEOUT_MS ?? 600_000);
const STEP_TIMEOUT = Number(process.env.BROWSER_STEP_TIMEOUT_MS ?? 15_000);
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

let server = null;
let browser = null;
let addr = null;

before(async () => {
  const port = await freePort();
  addr = `127.0.0.1:${port}`;
  server = new Server(
    ['cargo', 'run', '--quiet', '--features', 'hyper,tls', '--example', 'echo_h2', '--', addr],
    ROOT,
  );
  await server.waitForPort(port, START_TIMEOUT);
  browser = await chromium.launch({
    headless: true,
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--ignore-certificate-errors',
      '--no-first-run', '--disable-background-networking', '--disable-component-update'],
  });
});

after(async () => {
  try {
    if (browser) await browser.close();
  } finally {
    if (server) await server.stop();
  }
});

test('echo page over HTTP/2: the socket is an extended CONNECT', async () => {
  const page = await browser.newPage({ ignoreHTTPSErrors: true });
  const response = await page.goto(`https://${addr}/`, { timeout: STEP_TIMEOUT });
  assert.equal(response.status(), 200);
  const protocol = await page.evaluate(
    () => performance.getEntriesByType('navigation')[0].nextHopProtocol);
  assert.equal(protocol, 'h2');

  const wait = { timeout: STEP_TIMEOUT };
  await page.click('#connect', wait);
  await page.waitForSelector('#log li:text-is("open")', wait);
  await page.click('#send', wait);
  await page.waitForSelector('#log li:text-is("You said: hello world")', wait);
  await page.click('#close', wait);
  await page.waitForSelector('#log li:text-matches("^close 1000( |$)")', wait);

  const access = await server.waitForLine(/CONNECT \/socket\/ .*HTTP\/2/, STEP_TIMEOUT);
  assert.match(access, /200 CONNECT \/socket\/ \(127\.0\.0\.1\) [\d.]+ms HTTP\/2/);
  await page.close();
});
