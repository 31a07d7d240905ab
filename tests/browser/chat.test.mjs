// Headless-Chromium test of the chat example (examples/chat/index.html) with
// two server processes behind one Redis: the member list spans processes,
// and a page recovers the messages it missed while its server was down (a
// dropped network) and across a reload, each once and in order.
//
// Starts redis-server and two chat servers. Environment knobs:
//   CHAT_CMD                 shell command that starts a chat server; "{addr}"
//                            and "{redis}" are replaced. Default:
//                            cargo run --quiet --example chat --features redis -- --addr {addr} --redis {redis}
//   ECHO_START_TIMEOUT_MS    how long to wait for a port (default 600000: a
//                            first cargo build is slow)
//   BROWSER_STEP_TIMEOUT_MS  timeout of each page step (default 15000)
//   CHROMIUM_PATH            browser binary (default /usr/bin/chromium)
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
// A page reconnects with backoff up to 10 s; a killed server's members
// leave within 15 s.
const RECOVERY_TIMEOUT = 40_000;

const children = new Set();
let browser = null;
let redisUrl = null;
const addrs = [];

function start(name, command, args) {
  const server = new Server([command, ...args], ROOT, name);
  children.add(server);
  return server;
}

async function kill(server, signal) {
  server.kill(signal);
  await server.exit;
  children.delete(server);
}

function startChat(addr) {
  const name = `chat ${addr}`;
  if (process.env.CHAT_CMD) {
    const cmd = process.env.CHAT_CMD.replaceAll('{addr}', addr).replaceAll('{redis}', redisUrl);
    return start(name, 'sh', ['-c', cmd]);
  }
  return start(name, 'cargo', ['run', '--quiet', '--example', 'chat', '--features', 'redis', '--',
    '--addr', addr, '--redis', redisUrl]);
}

const servers = [];

before(async () => {
  const redisPort = await freePort();
  redisUrl = `redis://127.0.0.1:${redisPort}/`;
  const redis = start('redis', 'redis-server',
    ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']);
  await redis.waitForPort(redisPort, 10_000);
  for (let i = 0; i < 2; i++) {
    const port = await freePort();
    addrs.push(`127.0.0.1:${port}`);
    servers.push(startChat(addrs[i]));
    // One at a time: the first may build the example.
    await servers[i].waitForPort(port, START_TIMEOUT);
  }
  browser = await chromium.launch({
    headless: true,
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  try {
    if (browser) await browser.close();
  } finally {
    for (const child of [...children]) await kill(child, 'SIGKILL');
  }
});

async function open(addr, name) {
  // Own context each: own sessionStorage, as two people.
  const context = await browser.newContext();
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (err) => page.errors.push(err));
  page.on('console', (msg) => process.stderr.write(`[${name} console] ${msg.text()}\n`));
  const response = await page.goto(`http://${addr}/room/lobby?name=${name}`, { timeout: STEP_TIMEOUT });
  assert.equal(response.status(), 200);
  await page.waitForSelector('#status:text-is("open")', { timeout: STEP_TIMEOUT });
  return page;
}

async function post(page, text) {
  await page.fill('#body', text);
  await page.press('#body', 'Enter');
}

const log = (page) => page.$$eval('#log .msg', (lines) => lines.map((l) => l.textContent));
const count = (lines, text) => lines.filter((l) => l.endsWith(text)).length;

test('chat: members across two processes, recovery after a dropped network and a reload', async () => {
  const wait = { timeout: STEP_TIMEOUT };
  const ada = await open(addrs[0], 'ada');
  const bob = await open(addrs[1], 'bob');

  // The member list spans both processes.
  await ada.waitForSelector('#member-list li:text-is("bob")', wait);
  await bob.waitForSelector('#member-list li:text-is("ada")', wait);
  await ada.waitForSelector('#member-list li:text-is("ada")', wait);

  await post(ada, 'hello from ada');
  await bob.waitForSelector('#log .msg:has-text("hello from ada")', wait);

  // Bob's server dies (his network is gone); ada goes on talking.
  await kill(servers[1], 'SIGKILL');
  await bob.waitForSelector('#status:text-is("closed"), #status:text-is("connecting")', wait);
  await post(ada, 'missed one');
  await post(ada, 'missed two');
  await ada.waitForSelector('#log .msg:has-text("missed two")', wait);
  // Back on the same address: bob's page reconnects with its last offset.
  servers[1] = startChat(addrs[1]);
  await servers[1].waitForPort(Number(addrs[1].split(':')[1]), START_TIMEOUT);
  await bob.waitForSelector('#log .msg:has-text("missed two")', { timeout: RECOVERY_TIMEOUT });
  await post(ada, 'live again');
  await bob.waitForSelector('#log .msg:has-text("live again")', wait);
  const bobLines = await log(bob);
  for (const text of ['hello from ada', 'missed one', 'missed two', 'live again']) {
    assert.equal(count(bobLines, text), 1, `${text} once in ${JSON.stringify(bobLines)}`);
  }
  const order = ['missed one', 'missed two', 'live again'].map((t) => bobLines.findIndex((l) => l.endsWith(t)));
  assert.deepEqual([...order].sort((a, b) => a - b), order, 'in order');

  // Ada reloads while bob talks: her log comes back, the new message once.
  const reloading = ada.reload({ timeout: STEP_TIMEOUT });
  await post(bob, 'during the reload');
  await reloading;
  await ada.waitForSelector('#log .msg:has-text("during the reload")', wait);
  await post(bob, 'after the reload');
  await ada.waitForSelector('#log .msg:has-text("after the reload")', wait);
  const adaLines = await log(ada);
  for (const text of ['hello from ada', 'missed two', 'during the reload', 'after the reload']) {
    assert.equal(count(adaLines, text), 1, `${text} once in ${JSON.stringify(adaLines)}`);
  }
  assert.deepEqual(ada.errors, []);
  assert.deepEqual(bob.errors, []);
});
