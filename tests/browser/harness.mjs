// What the browser tests share: a free port, a server process started in its
// own process group (its output kept and echoed to stderr), a bounded wait
// for it to listen, and a clean stop.
import { spawn } from 'node:child_process';
import net from 'node:net';
import readline from 'node:readline';

// Ask the kernel for a free port, then release it for the server to take.
export function freePort() {
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

// A server started with `args` (an argv) in `cwd`; `lines` collects its
// output, which is also echoed to stderr behind `[label]`.
export class Server {
  constructor(args, cwd, label = 'server') {
    this.lines = [];
    this.child = spawn(args[0], args.slice(1), {
      cwd, detached: true, stdio: ['ignore', 'pipe', 'pipe'],
    });
    for (const stream of [this.child.stdout, this.child.stderr]) {
      readline.createInterface({ input: stream }).on('line', (line) => {
        this.lines.push(line);
        process.stderr.write(`[${label}] ${line}\n`);
      });
    }
    this.exit = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => resolve({ code, signal }));
      this.child.once('error', (err) => resolve({ code: null, signal: null, err }));
    });
    process.on('exit', () => this.kill('SIGKILL'));
  }

  // Polls until the port accepts connections; fails early if the server dies.
  async waitForPort(port, timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    let exited = null;
    this.exit.then((e) => { exited = e; });
    while (Date.now() < deadline) {
      if (exited) throw new Error(`server exited before listening: ${JSON.stringify(exited)}`);
      if (await tryConnect(port)) return;
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`server did not listen on port ${port} within ${timeoutMs} ms`);
  }

  // Resolves with the first output line matching `pattern`, or fails after
  // `timeoutMs`.
  async waitForLine(pattern, timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const line = this.lines.find((l) => pattern.test(l));
      if (line) return line;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`no server line matched ${pattern} within ${timeoutMs} ms`);
  }

  kill(signal) {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      try { process.kill(-this.child.pid, signal); } catch { /* already gone */ }
    }
  }

  async stop() {
    this.kill('SIGTERM');
    const timer = setTimeout(() => this.kill('SIGKILL'), 5_000);
    await this.exit;
    clearTimeout(timer);
  }
}
