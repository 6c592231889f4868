// Starts a real dispatcher (the binary built by cargo, with the dashboard
// embedded) on a free loopback port with a temporary data directory, and a
// headless Chromium to drive it.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const root = join(here, '..', '..');
export const artifacts = join(root, 'end2end', 'artifacts');
mkdirSync(artifacts, { recursive: true });

const binary = process.env.DISPATCHER_BIN || join(root, 'target', 'debug', 'dispatcher');

/// A free port above Linux's ephemeral range (32768-60999): a restarted
/// dispatcher must get its port back, and an ephemeral one can be taken
/// meanwhile by a client that reconnects and connects to itself.
async function freePort() {
  for (let i = 0; i < 200; i++) {
    const port = 61000 + Math.floor(Math.random() * 4535);
    const ok = await new Promise((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (ok) return port;
  }
  throw new Error('no free port above 61000');
}

let portBase = 41000 + (process.pid % 50) * 200;

/// `prepare(dir)` runs on the data directory before the first start.
export async function startDispatcher(extra = [], prepare = null) {
  const dir = mkdtempSync(join(tmpdir(), 'dispatcher-e2e-'));
  if (prepare) await prepare(dir);
  const port = await freePort();
  const ports = `${portBase}-${portBase + 99}`;
  portBase += 100;
  let log = '';
  const base = `http://127.0.0.1:${port}`;
  const launch = async () => {
    const p = spawn(binary, ['-d', dir, '-p', String(port), '--cpus', '4', '--mem-mb', '4096', '--ports', ports, '--kill-grace-secs', '1', ...extra], { stdio: ['ignore', 'ignore', 'pipe'] });
    p.stderr.on('data', (d) => { log += d; });
    for (let i = 0; i < 200; i++) {
      try { const r = await fetch(`${base}/api/health`); if (r.ok) break; } catch {}
      await new Promise((r) => setTimeout(r, 50));
    }
    return p;
  };
  const halt = async (p) => { p.kill('SIGTERM'); await new Promise((r) => p.once('exit', r)); };
  let proc = await launch();
  return {
    base, dir,
    log: () => log,
    /// Stops the dispatcher and starts it again on the same port and data directory.
    async restart() { await halt(proc); proc = await launch(); },
    async stop() { await halt(proc); rmSync(dir, { recursive: true, force: true }); },
  };
}

/// Writes `jobs` finished jobs (4 peers, 3 events each) into a data
/// directory, and with `bigPeers` one more finished job of that many peers
/// (3 events each), whose id it returns.
export function fillHistory(dir, jobs, bigPeers = null) {
  const args = [dir, String(jobs)];
  if (bigPeers) args.push(String(bigPeers));
  const out = execFileSync(join(root, 'target', 'debug', 'examples', 'fill_history'), args);
  return bigPeers ? Number(String(out).trim()) : null;
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync'],
  });
}

/// Uploads an app through the API (tests that are not about uploading).
export async function uploadApp(base, name, script) {
  const form = new FormData();
  form.append('file', new Blob([script]), name);
  const r = await fetch(`${base}/api/apps`, { method: 'POST', body: form });
  if (!r.ok) throw new Error(`upload failed: ${r.status} ${await r.text()}`);
  return r.json();
}

export async function submitJob(base, app, roleFile) {
  const r = await fetch(`${base}/api/jobs`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ app, role_file: roleFile }) });
  if (!r.ok) throw new Error(`submit failed: ${r.status} ${await r.text()}`);
  return (await r.json()).id;
}

export async function jobState(base, id) {
  return (await (await fetch(`${base}/api/jobs/${id}`)).json()).state;
}

export async function shot(page, name) {
  await page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });
}
