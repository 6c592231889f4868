// The dashboard on the Mesos backend: a real dispatcher subscribed to the
// test master (server/examples/test_master.rs, which speaks Mesos' wire
// protocol and runs tasks), driven in headless Chromium.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { root, startDispatcher, launchBrowser, uploadApp, submitJob, jobState, shot } from './harness.mjs';

const masterBin = process.env.TEST_MASTER_BIN || join(root, 'target', 'debug', 'examples', 'test_master');

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

async function startMaster(agents, auth) {
  const proc = spawn(masterBin, [String(agents), ...(auth ? [auth] : [])], { stdio: ['ignore', 'pipe', 'inherit'] });
  const addr = await new Promise((resolve, reject) => {
    let out = '';
    proc.stdout.on('data', (d) => { out += d; if (out.includes('\n')) resolve(out.split('\n')[0].trim()); });
    proc.once('exit', (c) => reject(new Error(`test master exited (${c})`)));
  });
  return { addr, async stop() { proc.kill('SIGKILL'); await new Promise((r) => proc.once('exit', r)); } };
}

test('on Mesos a job runs on the agents, its log streams from an agent and the cluster page shows the subscription', async () => {
  const m = await startMaster(2);
  const d = await startDispatcher(['--master', m.addr, '--fast-timers', '--offer-hold-secs', '1']);
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  try {
    await uploadApp(d.base, 'talker', '#!/bin/sh\nfor i in $(seq 1 8); do echo "line $i from $DISPATCHER_HOST"; sleep 0.5; done\n');
    const id = await submitJob(d.base, 'talker', 'name: t\npeers: 2\npeers_per_host: 1\ncpu: 1\nmem: 0.25\n');
    await page.goto(`${d.base}/jobs/${id}`);
    await page.getByTestId('peer-1').getByText('RUNNING').waitFor({ timeout: 20000 });
    await page.getByTestId('log').getByText(/line 2 from host/).waitFor({ timeout: 10000 });
    assert.equal(await jobState(d.base, id), 'RUNNING', 'log lines came through the files API while the peer ran');
    await shot(page, 'mesos-job-mid-run');
    await page.locator('.title-row [data-testid=state]').getByText('FINISHED').waitFor({ timeout: 20000 });
    await page.goto(`${d.base}/cluster`);
    await page.getByTestId('backend').getByText('mesos').waitFor();
    await page.getByTestId('subscription').getByText('subscribed').waitFor();
    assert.equal(await page.getByTestId('leader').textContent(), m.addr);
    assert.equal(await page.getByTestId('hosts').locator('tbody tr').count(), 2);
    await shot(page, 'mesos-cluster');
    assert.deepEqual(errors, [], 'no errors in the page');
  } catch (e) {
    console.error(d.log().slice(-3000));
    throw e;
  } finally {
    await page.close();
    await d.stop();
    await m.stop();
  }
});

test('the cluster page says plainly when the master requires credentials, and that they work once given', async () => {
  const m = await startMaster(1, 'dispatch:s3cret');
  const without = await startDispatcher(['--master', m.addr, '--fast-timers']);
  const secret = join(mkdtempSync(join(tmpdir(), 'dispatcher-secret-')), 'secret');
  writeFileSync(secret, 's3cret\n', { mode: 0o600 });
  const page = await browser.newPage();
  let withCreds;
  try {
    await page.goto(`${without.base}/cluster`);
    const problem = page.getByTestId('mesos-problem');
    await problem.getByText('The master refuses this dispatcher').waitFor({ timeout: 20000 });
    const text = await problem.textContent();
    assert.match(text, /requires authentication \(401/);
    assert.match(text, /--mesos-principal and --mesos-secret-file/);
    assert.equal(await page.getByTestId('subscription').textContent(), 'refused');
    await shot(page, 'mesos-cluster-401');

    withCreds = await startDispatcher(['--master', m.addr, '--fast-timers', '--mesos-principal', 'dispatch', '--mesos-secret-file', secret]);
    await page.goto(`${withCreds.base}/cluster`);
    await page.getByTestId('subscription').getByText('subscribed').waitFor({ timeout: 20000 });
    assert.equal(await page.getByTestId('mesos-problem').count(), 0, 'no problem shown once subscribed');
  } catch (e) {
    console.error(without.log().slice(-3000));
    throw e;
  } finally {
    await page.close();
    await without.stop();
    await withCreds?.stop();
    await m.stop();
  }
});
