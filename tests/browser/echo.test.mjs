// Headless-Chromium test of the echo example's page (examples/echo/web.html).
//
// Starts the echo server, opens its page, clicks connect / send / close and
// checks the page's log. Environment knobs:
//   ECHO_CMD                 shell command that starts the server; "{addr}" is
//                            replaced by 127.0.0.1:PORT. Default:
//                            cargo run --quiet --example echo -- {addr}
//   ECHO_START_TIMEOUT_MS    how long to wait for the port to accept TCP
//                            connections (default 600000: a first cargo build
//                            is slow)
//   BROWSER_STEP_TIMEOUT_MS  timeout of each page step (default 15000)
//   CHROMIUM_PATH            browser binary (default /usr/bin/chromium)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const START_TIMEOUT = Number(process.env.ECHO_START_TIMEOUT_MS ?? 600_000);
const STEP_TIMEOUT = Number(process.env.BROWSER_STEP_TIMEOUT_MS ?? 15_000);
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const SCREENSHOT = path.join(ROOT, 'target', 'browser', 'echo.png');

let server = null; // child process, leader of its own process group
let serverExit = null; // promise resolved with the exit code/signal
let browser = null;
let addr = null;

// Ask the kernel for a free port, then release it for the server to take.
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function tryConnect(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    sock.once('connect', () => { sock.destroy(); resolve(true); });
    sock.once('error', () => { sock.destroy(); resolve(false); });
  });
}

function startServer(address) {
  const opts = { cwd: ROOT, detached: true, stdio: ['ignore', 'pipe', 'pipe'] };
  const child = process.env.ECHO_CMD
    ? spawn('sh', ['-c', process.env.ECHO_CMD.replaceAll('{addr}', address)], opts)
    : spawn('cargo', ['run', '--quiet', '--example', 'echo', '--', address], opts);
  // The server's output goes to our stderr, which the test runner shows.
  for (const stream of [child.stdout, child.stderr]) {
    readline.createInterface({ input: stream })
      .on('line', (line) => process.stderr.write(`[server] ${line}\n`));
  }
  serverExit = new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', (err) => resolve({ code: null, signal: null, err }));
  });
  return child;
}

// Poll until the port accepts connections; fail early if the server dies.
async function waitForPort(port, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let exited = null;
  serverExit.then((e) => { exited = e; });
  while (Date.now() < deadline) {
    if (exited) {
      throw new Error(`server exited before listening: ${JSON.stringify(exited)}`);
    }
    if (await tryConnect(port)) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`server did not listen on port ${port} within ${timeoutMs} ms`);
}

function killServerSync(signal) {
  if (server && server.exitCode === null && server.signalCode === null) {
    try { process.kill(-server.pid, signal); } catch { /* already gone */ }
  }
}

async function stopServer() {
  if (!server) return;
  killServerSync('SIGTERM');
  const timer = setTimeout(() => killServerSync('SIGKILL'), 5_000);
  await serverExit;
  clearTimeout(timer);
  server = null;
}

// If the test process dies some other way, don't leave the server behind.
process.on('exit', () => killServerSync('SIGKILL'));

before(async () => {
  const port = await freePort();
  addr = `127.0.0.1:${port}`;
  server = startServer(addr);
  await waitForPort(port, START_TIMEOUT);
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
    await stopServer();
  }
});

test('echo page: connect, send, receive the echo, close', async () => {
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

  await page.click('#send', wait);
  await page.waitForSelector('#log li:text-is("sent: hello world")', wait);
  await page.waitForSelector('#log li:text-is("You said: hello world")', wait);

  await page.click('#close', wait);
  await page.waitForSelector('#log li:text-matches("^close 1000( |$)")', wait);
  await page.waitForSelector('#connect:enabled', wait);
  assert.equal(await page.isDisabled('#send'), true);
  assert.equal(await page.isDisabled('#close'), true);

  mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true });

  const log = await page.$$eval('#log li', (items) => items.map((li) => li.textContent));
  assert.deepEqual(log.slice(0, 3), ['open', 'sent: hello world', 'You said: hello world']);
  assert.equal(log.length, 4, `unexpected log: ${JSON.stringify(log)}`);
  assert.match(log[3], /^close 1000( |$)/);
  assert.deepEqual(pageErrors, []);
  await page.close();
});
