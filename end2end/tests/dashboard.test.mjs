// The dashboard in headless Chromium against a real dispatcher.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { startDispatcher, launchBrowser, uploadApp, submitJob, jobState, shot, fillHistory } from './harness.mjs';

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

async function withApp(fn, flags = [], prepare = null) {
  const d = await startDispatcher(flags, prepare);
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  try {
    await fn(d, page);
    assert.deepEqual(errors, [], 'no errors in the page');
  } catch (e) {
    console.error(d.log().slice(-3000));
    throw e;
  } finally {
    await page.close();
    await d.stop();
  }
}

test('dropping a file onto the page uploads it with progress and shows the new version', () => withApp(async (d, page) => {
  await page.goto(`${d.base}/apps`);
  await page.getByText('No apps yet').waitFor();
  // 24 MiB so progress is visible on the way; dropped as a real DataTransfer.
  await page.evaluate(() => {
    const bytes = new Uint8Array(24 * 1024 * 1024);
    for (let i = 0; i < bytes.length; i += 4096) bytes[i] = i & 255;
    const file = new File([bytes], 'bigprog', { type: 'application/octet-stream' });
    const dt = new DataTransfer();
    dt.items.add(file);
    const zone = document.querySelector('[data-testid=drop-zone]');
    zone.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
    zone.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  });
  const upload = page.getByTestId('upload');
  await upload.waitFor();
  await shot(page, 'upload-in-progress');
  await page.getByTestId('upload-detail').getByText(/done: new version/).waitFor({ timeout: 30000 });
  assert.equal(await page.locator('[data-testid=upload] progress').getAttribute('value'), '100');
  // The new version appears without a reload.
  await page.getByTestId('app-bigprog').waitFor();
  assert.equal(await page.getByTestId('app-bigprog').getByTestId('version-count').textContent(), '1');
  await shot(page, 'upload-done');
  const apps = await (await fetch(`${d.base}/api/apps`)).json();
  assert.equal(apps.apps[0].latest.size, 24 * 1024 * 1024);
}));

test('a bad role file is marked on the right line and the mark clears when fixed', () => withApp(async (d, page) => {
  await uploadApp(d.base, 'prog', '#!/bin/sh\n');
  await page.goto(`${d.base}/new?app=prog`);
  const editor = page.getByTestId('role-editor');
  await editor.fill('name: w\npeers: 2\ncpu: lots\n');
  await page.locator('.gutter .ln-error[data-line="3"]').waitFor();
  const problem = page.getByTestId('problem').first();
  assert.match(await problem.textContent(), /3:6 error expected a number, found string "lots"/);
  assert.equal(await page.getByTestId('submit').isDisabled(), true);
  // Clicking the problem puts the cursor on it.
  await problem.getByRole('button').click();
  const caret = await editor.evaluate((el) => el.selectionStart);
  assert.equal(caret, 'name: w\npeers: 2\ncpu: '.length);
  await shot(page, 'editor-with-errors');
  await editor.fill('name: w\npeers: 2\ncpu: 0.5\n');
  await page.getByTestId('no-problems').waitFor();
  assert.equal(await page.locator('.gutter .ln-error').count(), 0);
  await page.getByTestId('preview').getByText(/Fits now/).waitFor();
  assert.equal(await page.getByTestId('submit').isDisabled(), false);
  // K3's per-app jobs URL, opened in a browser, shows that app's jobs.
  await page.goto(`${d.base}/jobs/prog`);
  await page.waitForURL(/\/jobs\?app=prog$/);
  await page.getByText('No jobs match these filters.').waitFor();
}));

test('a submitted 3-peer job goes from waiting to running to finished without a reload', () => withApp(async (d, page) => {
  await uploadApp(d.base, 'hog', '#!/bin/sh\nexec sleep 60\n');
  await uploadApp(d.base, 'three', '#!/bin/sh\necho "peer $DISPATCHER_PEER_INDEX"\nsleep 5\n');
  const hog = await submitJob(d.base, 'hog', 'name: hog\npeers: 1\ncpu: 4\nmem: 1\n');
  for (let i = 0; i < 100 && (await jobState(d.base, hog)) !== 'RUNNING'; i++) await new Promise((r) => setTimeout(r, 50));
  await page.goto(`${d.base}/new?app=three`);
  await page.getByTestId('role-editor').fill('name: trio\npeers: 3\ncpu: 0.5\n');
  await page.getByTestId('preview').getByText(/Would wait/).waitFor();
  await page.getByTestId('submit').click();
  await page.waitForURL(/\/jobs\/\d+$/);
  const id = Number(page.url().split('/').pop());
  const badge = page.locator('.title-row [data-testid=state]');
  await badge.getByText('WAITING').waitFor();
  await shot(page, 'job-waiting');
  // Free the machine; the page must follow on its own.
  await fetch(`${d.base}/api/jobs/${hog}/kill`, { method: 'POST' });
  await badge.getByText('RUNNING').waitFor({ timeout: 20000 });
  await page.getByTestId('peer-2').getByText('RUNNING').waitFor();
  await shot(page, 'job-page-mid-run');
  await badge.getByText('FINISHED').waitFor({ timeout: 20000 });
  for (const n of [0, 1, 2]) await page.getByTestId(`peer-${n}`).getByText('FINISHED').waitFor();
  await page.getByTestId('timeline').waitFor();
  assert.equal(await jobState(d.base, id), 'FINISHED');
  // The jobs table shows it too, live.
  await page.getByRole('link', { name: 'Jobs' }).click();
  await page.getByTestId(`job-row-${id}`).getByText('FINISHED').waitFor();
  await shot(page, 'jobs-table');
}));

test('the jobs page streams from where its list was read and updates the rows an event touches', () => withApp(async (d, page) => {
  await uploadApp(d.base, 'quick', '#!/bin/sh\n');
  await uploadApp(d.base, 'pair', '#!/bin/sh\nsleep 2\n');
  // History the page must not download: 12 jobs, about 90 events.
  const old = [];
  for (let i = 0; i < 12; i++) old.push(await submitJob(d.base, 'quick', 'name: q\npeers: 2\ncpu: 0.1\n'));
  for (let i = 0; i < 200 && (await (await fetch(`${d.base}/api/jobs/${old[11]}`)).json()).archive_size == null; i++) await new Promise((r) => setTimeout(r, 50));
  const lists = [];
  const rowFetches = [];
  const streams = [];
  page.on('request', (r) => {
    const u = new URL(r.url());
    if (u.pathname === '/api/events') streams.push(u.search);
    if (u.pathname === '/api/jobs' && u.searchParams.get('limit') === '1') rowFetches.push(u.search);
    else if (u.pathname === '/api/jobs') lists.push(u.search);
  });
  await page.goto(`${d.base}/jobs`);
  await page.getByTestId(`job-row-${old[11]}`).getByText('FINISHED').waitFor();
  const seq = (await (await fetch(`${d.base}/api/jobs`)).json()).events_seq;
  await page.locator('.title-row [data-testid=conn]').getByText('live').waitFor({ timeout: 10000 });
  assert.deepEqual(streams, [`?after=${seq}`], 'one stream, from the events the list reflected');
  // A new 2-peer job: its row appears, runs and finishes in place.
  const id = await submitJob(d.base, 'pair', 'name: p\npeers: 2\ncpu: 0.1\n');
  const row = page.getByTestId(`job-row-${id}`);
  await row.getByText('RUNNING').waitFor({ timeout: 10000 });
  await row.getByText('2 / 2').waitFor({ timeout: 10000 });
  await shot(page, 'jobs-live-row');
  await row.getByText('FINISHED').waitFor({ timeout: 15000 });
  await row.getByText('0 / 2').waitFor({ timeout: 10000 });
  // The list was read for the page and once more for the new job's row;
  // its peers' events refetched only that row.
  assert.ok(lists.length <= 3, `list reads: ${lists.join(' ')}`);
  assert.ok(rowFetches.length >= 1 && rowFetches.every((q) => new URLSearchParams(q).get('before') === String(id + 1)), `row reads: ${rowFetches.join(' ')}`);
  assert.equal(streams.length, 1);
}));

test('the jobs page over 100,000 finished jobs draws its rows at once and stays live', () => withApp(async (d, page) => {
  await uploadApp(d.base, 'pair', '#!/bin/sh\nsleep 2\n');
  const t0 = Date.now();
  await page.goto(`${d.base}/jobs`);
  await page.getByTestId('job-row-100000').getByText('FINISHED').waitFor({ timeout: 10000 });
  const drawn = Date.now() - t0;
  const rows = await page.locator('[data-testid^=job-row-]').count();
  console.log(`dashboard: jobs page over 100,000 jobs: ${rows} rows drawn ${drawn} ms after navigation`);
  assert.equal(rows, 25);
  // The aim is 1 s; this bound only catches a return of the old 30 s.
  assert.ok(drawn < 5000, `rows drawn after ${drawn} ms`);
  // The job page's code is not part of the first visit; pointing at the
  // table fetches it before any click.
  const jobChunk = () => performance.getEntriesByType('resource').some((r) => r.name.includes('/split___job_route_view_'));
  assert.equal(await page.evaluate(jobChunk), false);
  await page.getByTestId('job-row-100000').hover();
  await page.waitForFunction(jobChunk, null, { timeout: 10000 });
  await page.locator('.title-row [data-testid=conn]').getByText('live').waitFor({ timeout: 10000 });
  // While a job runs, its row follows it and the page answers at once.
  const id = await submitJob(d.base, 'pair', 'name: p\npeers: 2\ncpu: 0.1\n');
  const row = page.getByTestId(`job-row-${id}`);
  await row.getByText('RUNNING').waitFor({ timeout: 10000 });
  const t1 = Date.now();
  await page.getByTestId('filter-state').selectOption('FAILED');
  await page.getByText('No jobs match these filters.').waitFor({ timeout: 10000 });
  const filtered = Date.now() - t1;
  await page.getByTestId('filter-state').selectOption('');
  await row.getByText('FINISHED').waitFor({ timeout: 15000 });
  await row.getByText('0 / 2').waitFor({ timeout: 10000 });
  console.log(`dashboard: a state filter over 100,000 jobs answered in ${filtered} ms while a job ran`);
  assert.ok(filtered < 5000);
  await shot(page, 'jobs-100k');
  // Paging is by keyset: an older page is as quick as the first.
  const t2 = Date.now();
  // The newest page holds the new job and the 24 before it.
  await page.getByTestId('older').click();
  await page.getByTestId(`job-row-${id - 25}`).waitFor({ timeout: 10000 });
  console.log(`dashboard: the next older page over 100,000 jobs drawn in ${Date.now() - t2} ms`);
  assert.ok(page.url().endsWith(`/jobs?before=${id - 24}`), page.url());
  assert.equal(await page.getByTestId('page-label').textContent(), `25 older than #${id - 24}, of ${id}`);
  await page.getByTestId('newest').click();
  await page.getByTestId(`job-row-${id}`).waitFor();
}, [], (dir) => fillHistory(dir, 100000)));

let bigJob = null;
test('a 10,000-peer job\'s page draws its peers table and timeline as windows and scrolls to the last peer', () => withApp(async (d, page) => {
  const t0 = Date.now();
  await page.goto(`${d.base}/jobs/${bigJob}`);
  await page.getByTestId('peer-0').getByText('FINISHED').waitFor({ timeout: 20000 });
  const drawn = Date.now() - t0;
  // The whole stream (40,004 events) is read before the page says ended.
  await page.locator('.title-row [data-testid=conn]').getByText('ended').waitFor({ timeout: 60000 });
  const settled = Date.now() - t0;
  const rows = await page.locator('[data-testid^=peer-]:is(tr)').count();
  const bars = await page.locator('[data-testid=timeline] .tl-row').count();
  console.log(`dashboard: 10,000-peer job page: first rows ${drawn} ms, every event applied ${settled} ms after navigation; ${rows} table rows and ${bars} timeline rows in the DOM`);
  assert.ok(rows > 10 && rows < 200, `${rows} rows in the DOM`);
  assert.ok(bars > 10 && bars < 200, `${bars} timeline rows in the DOM`);
  assert.equal(await page.getByTestId('peers-table').getAttribute('aria-rowcount'), '10001');
  // Scrolled to the end, the last peer is drawn, and still only a window.
  const t1 = Date.now();
  await page.getByTestId('peers-scroll').evaluate((el) => { el.scrollTop = el.scrollHeight; });
  await page.getByTestId('peer-9999').getByText('FINISHED').waitFor({ timeout: 5000 });
  console.log(`dashboard: scrolled to peer 9999 in ${Date.now() - t1} ms`);
  assert.ok(await page.locator('[data-testid^=peer-]:is(tr)').count() < 200);
  await page.locator('[data-testid=timeline] .tl-scroll').evaluate((el) => { el.scrollTop = el.scrollHeight; });
  await page.locator('[data-testid=timeline]').getByText('peer 9999', { exact: true }).waitFor({ timeout: 5000 });
  // A big job's log is picked by number, not from 10,000 options.
  assert.equal(await page.getByTestId('log-peer').evaluate((el) => el.tagName), 'INPUT');
  await shot(page, 'job-10k-peers');
  // The aim is well under this; the bound catches a quadratic page.
  assert.ok(settled < 20000, `settled after ${settled} ms`);
}, [], (dir) => { bigJob = fillHistory(dir, 10, 10000); }));

test('a peer log shows lines while the peer runs', () => withApp(async (d, page) => {
  await uploadApp(d.base, 'talker', '#!/bin/sh\nfor i in $(seq 1 8); do echo "line $i"; sleep 0.5; done\n');
  const id = await submitJob(d.base, 'talker', 'name: t\npeers: 1\ncpu: 0.1\n');
  await page.goto(`${d.base}/jobs/${id}`);
  await page.getByTestId('log').getByText('line 2').waitFor({ timeout: 10000 });
  assert.equal(await jobState(d.base, id), 'RUNNING', 'lines arrived while the peer was still running');
  await page.getByTestId('log').getByText('line 8').waitFor({ timeout: 15000 });
  await page.getByTestId('log-count').getByText(/8 lines, ended/).waitFor({ timeout: 10000 });
}));

test('a big log stays fast: 100,000 lines render as a window', () => withApp(async (d, page) => {
  await uploadApp(d.base, 'flood', '#!/bin/sh\nseq 1 100000\n');
  const id = await submitJob(d.base, 'flood', 'name: f\npeers: 1\ncpu: 0.1\n');
  await page.goto(`${d.base}/jobs/${id}`);
  await page.getByTestId('log-count').getByText('100000 lines, ended').waitFor({ timeout: 30000 });
  const rendered = await page.locator('.log-line').count();
  assert.ok(rendered < 200, `only visible lines are in the DOM (${rendered})`);
  await page.getByTestId('log').getByText('100000', { exact: true }).waitFor();
}));

test('killing a running job from its page stops it', () => withApp(async (d, page) => {
  await uploadApp(d.base, 'sleeper', '#!/bin/sh\nexec sleep 60\n');
  const id = await submitJob(d.base, 'sleeper', 'name: s\npeers: 2\ncpu: 0.1\n');
  await page.goto(`${d.base}/jobs/${id}`);
  await page.getByTestId('peer-1').getByText('RUNNING').waitFor();
  page.once('dialog', (dialog) => dialog.accept());
  await page.getByTestId('kill').click();
  await page.locator('.title-row [data-testid=state]').getByText('KILLED').waitFor({ timeout: 15000 });
  assert.equal(await page.getByTestId('reason').textContent(), 'killed by request');
  await shot(page, 'job-killed');
}));

test('the archive downloads from the job page', () => withApp(async (d, page) => {
  await uploadApp(d.base, 'writer', '#!/bin/sh\necho hello > out.txt\n');
  const id = await submitJob(d.base, 'writer', 'name: w\npeers: 2\ncpu: 0.1\n');
  await page.goto(`${d.base}/jobs/${id}`);
  const link = page.getByTestId('archive');
  await link.waitFor({ timeout: 15000 });
  const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
  const path = await download.path();
  const bytes = readFileSync(path);
  assert.equal(download.suggestedFilename(), `job-${id}.tar.gz`);
  assert.ok(statSync(path).size > 20);
  assert.equal(bytes[0], 0x1f); assert.equal(bytes[1], 0x8b); // gzip
  await shot(page, 'job-finished');
}));

test('reloading a job page mid-run catches up', () => withApp(async (d, page) => {
  await uploadApp(d.base, 'slowish', '#!/bin/sh\nsleep 5\n');
  const id = await submitJob(d.base, 'slowish', 'name: s\npeers: 2\ncpu: 0.1\n');
  await page.goto(`${d.base}/jobs/${id}`);
  await page.getByTestId('peer-1').getByText('RUNNING').waitFor();
  await page.reload();
  // After the reload the page rebuilds from the event log, then follows live.
  await page.getByTestId('peer-0').getByText(/RUNNING|FINISHED/).waitFor();
  await page.locator('.title-row [data-testid=state]').getByText('FINISHED').waitFor({ timeout: 15000 });
  await page.getByTestId('peer-1').getByText('FINISHED').waitFor();
  await shot(page, 'job-after-reload');
}));

async function archived(base, id) {
  for (let i = 0; i < 400; i++) {
    const j = await (await fetch(`${base}/api/jobs/${id}`)).json();
    if (j.archive_size !== null) return j;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`job ${id} was never archived`);
}

test('a finished job page left open makes one request per stream and says ended', () => withApp(async (d, page) => {
  await uploadApp(d.base, 'hello', '#!/bin/sh\necho "hello from $DISPATCHER_PEER_INDEX"\n');
  const id = await submitJob(d.base, 'hello', 'name: h\npeers: 2\ncpu: 0.1\n');
  await archived(d.base, id);
  const streams = new Map();
  page.on('request', (r) => {
    const u = new URL(r.url());
    if (u.pathname.endsWith('/events') || u.pathname.endsWith('/logs')) {
      const k = u.pathname + u.search;
      streams.set(k, (streams.get(k) || 0) + 1);
    }
  });
  await page.goto(`${d.base}/jobs/${id}`);
  await page.locator('.title-row [data-testid=conn]').getByText('ended').waitFor({ timeout: 10000 });
  await page.getByTestId('log').getByText('hello from 0').waitFor({ timeout: 10000 });
  await page.getByTestId('log-count').getByText(/ended/).waitFor({ timeout: 10000 });
  // Left open: an EventSource that took the end for a drop would be back
  // within its 3 s retry, again and again.
  await new Promise((r) => setTimeout(r, 30000));
  assert.ok(streams.size >= 2, `the job's events and a log were streamed: ${[...streams.keys()]}`);
  for (const [url, n] of streams) assert.equal(n, 1, `${url} was requested ${n} times`);
  assert.equal(await page.locator('.title-row [data-testid=conn]').textContent(), 'ended');
  await shot(page, 'job-ended');
}));

test('a running job page reconnects after the server restarts and catches up', () => withApp(async (d, page) => {
  await uploadApp(d.base, 'sleeper', '#!/bin/sh\necho started\nsleep 60\n');
  const id = await submitJob(d.base, 'sleeper', 'name: s\npeers: 1\ncpu: 0.1\n');
  let eventRequests = 0;
  page.on('request', (r) => { if (new URL(r.url()).pathname === `/api/jobs/${id}/events`) eventRequests++; });
  await page.goto(`${d.base}/jobs/${id}`);
  await page.locator('.title-row [data-testid=state]').getByText('RUNNING').waitFor({ timeout: 10000 });
  await page.locator('.title-row [data-testid=conn]').getByText('live').waitFor({ timeout: 10000 });
  // The local backend stops its peers on shutdown and records why.
  await d.restart();
  await page.locator('.title-row [data-testid=state]').getByText('FAILED').waitFor({ timeout: 20000 });
  await page.getByText('the dispatcher shut down while this job was running').first().waitFor({ timeout: 10000 });
  await page.locator('.title-row [data-testid=conn]').getByText('ended').waitFor({ timeout: 20000 });
  assert.ok(eventRequests >= 2, `the page reconnected (${eventRequests} requests)`);
}));

test('the job page charts each peer\'s CPU and memory while it runs and keeps them after', () => withApp(async (d, page) => {
  // Two peers: one burns a core and holds 120 MB, one idles.
  await uploadApp(d.base, 'burner', '#!/usr/bin/env python3\nimport os, time\nif os.environ["DISPATCHER_PEER_INDEX"] == "0":\n    b = bytearray(120 * 1024 * 1024)\n    for i in range(0, len(b), 4096):\n        b[i] = 1\n    t = time.time()\n    while time.time() - t < 6:\n        pass\nelse:\n    time.sleep(6)\n');
  const id = await submitJob(d.base, 'burner', 'name: b\npeers: 2\ncpu: 1\n');
  await page.goto(`${d.base}/jobs/${id}`);
  await page.getByTestId('usage-empty').or(page.getByTestId('cpu-chart')).first().waitFor({ timeout: 10000 });
  const lines = page.getByTestId('cpu-chart').getByTestId('usage-line');
  await lines.nth(1).waitFor({ timeout: 15000 });
  assert.equal(await jobState(d.base, id), 'RUNNING', 'charted live, while the job ran');
  assert.equal(await page.getByTestId('mem-chart').getByTestId('usage-line').count(), 2);
  // Hover text names the peer and the value; the request is drawn.
  const tip = await lines.first().locator('circle title').first().textContent();
  assert.match(tip, /^peer 0 at \d\d:\d\d:\d\d: \d+\.\d\d cores$/);
  assert.match(await page.getByTestId('cpu-chart').locator('.ref title').textContent(), /asked: 1 cores/);
  assert.match(await page.getByTestId('mem-chart').locator('.ref title').textContent(), /^given: \d/);
  await shot(page, 'job-usage-mid-run');
  await page.locator('.title-row [data-testid=state]').getByText('FINISHED').waitFor({ timeout: 20000 });
  // After the end, a fresh page draws them from the usage route.
  await page.goto(`${d.base}/jobs/${id}`);
  await page.getByTestId('cpu-chart').getByTestId('usage-line').nth(1).waitFor({ timeout: 10000 });
  const peak = await page.getByTestId('peer-0').getByTestId('peer-mem').textContent();
  assert.match(peak, /MiB|GiB|MB|GB/, `peak memory shown: ${peak}`);
  await shot(page, 'job-usage-after');
  // The dark theme: lines and reference in the theme's colours.
  await page.emulateMedia({ colorScheme: 'dark' });
  const stroke = await page.getByTestId('cpu-chart').locator('.ref').evaluate((e) => getComputedStyle(e).stroke);
  await page.emulateMedia({ colorScheme: 'light' });
  const strokeLight = await page.getByTestId('cpu-chart').locator('.ref').evaluate((e) => getComputedStyle(e).stroke);
  assert.notEqual(stroke, strokeLight, 'the reference line follows the theme');
  await page.emulateMedia({ colorScheme: 'dark' });
  await shot(page, 'job-usage-dark');
  await page.emulateMedia({ colorScheme: 'light' });
  // Phone width: the charts fit.
  await page.setViewportSize({ width: 390, height: 844 });
  const box = await page.getByTestId('cpu-chart').boundingBox();
  assert.ok(box.width <= 390, `chart ${box.width}px wide on a phone`);
  await shot(page, 'job-usage-phone');
}, ['--usage-every-secs', '0.5']));

test('an app\'s page charts the duration and outcome of its past runs', () => withApp(async (d, page) => {
  await uploadApp(d.base, 'varied', '#!/bin/sh\nsleep "$SECS"\nexit "$CODE"\n');
  const runs = [['0.2', '0'], ['1', '0'], ['0.5', '3']];
  const ids = [];
  for (const [secs, code] of runs) {
    ids.push(await submitJob(d.base, 'varied', `name: v\npeers: 1\ncpu: 0.1\nenvars: [{name: SECS, value: '${secs}'}, {name: CODE, value: '${code}'}]\n`));
  }
  for (const id of ids) await archived(d.base, id);
  await page.goto(`${d.base}/apps`);
  await page.getByTestId('app-varied').getByRole('button', { name: 'varied' }).click();
  const dots = page.getByTestId('history-chart').locator('circle');
  await dots.nth(2).waitFor({ timeout: 10000 });
  assert.equal(await dots.count(), 3);
  const tips = await dots.locator('title').allTextContents();
  assert.ok(tips.some((t) => /^job \d+ \(FAILED\): /.test(t)), tips.join(' | '));
  assert.equal(tips.filter((t) => /\(FINISHED\)/.test(t)).length, 2, tips.join(' | '));
  assert.equal(await page.getByTestId('history-chart').locator('circle.state-failed').count(), 1);
  await shot(page, 'app-history');
}));

test('the cluster page shows the data directory and what retention deleted, and a deleted job\'s page says why', () => withApp(async (d, page) => {
  await uploadApp(d.base, 'quick', '#!/bin/sh\necho done\n');
  const first = await submitJob(d.base, 'quick', 'name: q\npeers: 1\ncpu: 0.1\n');
  await archived(d.base, first);
  const second = await submitJob(d.base, 'quick', 'name: q\npeers: 1\ncpu: 0.1\n');
  await archived(d.base, second);
  for (let i = 0; ; i++) {
    if ((await fetch(`${d.base}/api/jobs/${first}`)).status === 410) break;
    if (i > 300) throw new Error(`job ${first} was never deleted`);
    await new Promise((r) => setTimeout(r, 100));
  }
  await page.goto(`${d.base}/cluster`);
  const storage = page.getByTestId('storage');
  await storage.waitFor();
  await page.getByTestId('retention').getByText('1 job and 0 binaries deleted since start', { exact: false }).waitFor();
  assert.match(await page.getByTestId('retention').textContent(), /per app, the 1 newest finished jobs/);
  assert.match(await page.getByTestId('storage-total').textContent(), /\d(\.\d)? (B|KiB|MiB|GiB) \(.* free\)/);
  await shot(page, 'cluster-storage');
  await page.goto(`${d.base}/jobs/${first}`);
  await page.getByText('was deleted on', { exact: false }).waitFor();
  assert.match(await page.locator('body').textContent(), /retention policy: it was older than the 1 newest finished jobs app "quick" keeps/);
}, ['--keep-jobs', '1', '--retention-every-secs', '1']));

test('a sweep\'s page charts duration by parameter, a line per value of another, live, with its CSV', () => withApp(async (d, page) => {
  await page.goto(`${d.base}/sweeps`);
  await page.getByTestId('sweeps-empty').waitFor();
  await uploadApp(d.base, 'nap', '#!/bin/sh\nsleep 0.$DISPATCHER_PEER_COUNT\n');
  const r = await fetch(`${d.base}/api/sweeps`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ app: 'nap', role_file: 'name: w\npeers: 1\ncpu: 0.1\nmem: 0.1\n', parameters: { 'w.peers': [1, 2, 4], 'w.k3_globals.q': ['q1', 'q18'] }, repeat: 2 }),
  });
  assert.equal(r.status, 202);
  const { id } = await r.json();
  await page.goto(`${d.base}/sweeps/${id}`);
  // Live: the page fills in as the jobs end, without a reload.
  await page.getByTestId('sweep-progress').getByText('12 of 12 ended').waitFor({ timeout: 30000 });
  const chart = page.getByTestId('sweep-chart');
  await chart.waitFor();
  assert.equal(await chart.getByTestId('sweep-line').count(), 2, 'a line per query');
  assert.equal(await chart.getByTestId('sweep-dot').count(), 6);
  const tips = await chart.locator('circle title').allTextContents();
  assert.ok(tips.some((t) => /^w\.k3_globals\.q=q18, 4: median \d+\.\d\d s \(min /.test(t)), tips.join(' | '));
  assert.equal(await page.getByTestId('sweep-row').count(), 6);
  await shot(page, 'sweep-chart');
  await page.getByTestId('sweep-by').selectOption('');
  await chart.getByTestId('sweep-line').first().waitFor();
  assert.equal(await chart.getByTestId('sweep-line').count(), 1);
  assert.equal(await chart.getByTestId('sweep-dot').count(), 3);
  // Log x: peers 1, 2, 4 evenly spaced.
  await page.getByTestId('sweep-logx').check();
  const xs = (await chart.getByTestId('sweep-dot').evaluateAll((els) => els.map((e) => Number(e.getAttribute('cx'))))).sort((a, b) => a - b);
  assert.ok(Math.abs((xs[1] - xs[0]) - (xs[2] - xs[1])) < 1, xs.join(','));
  const link = page.getByTestId('sweep-csv');
  const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
  assert.equal(download.suggestedFilename(), `sweep-${id}.csv`);
  const csv = readFileSync(await download.path(), 'utf8').trim().split('\n');
  assert.equal(csv[0], 'w.peers,w.k3_globals.q,repeat,job,state,duration_s');
  assert.equal(csv.length, 13);
  await page.goto(`${d.base}/sweeps`);
  await page.getByTestId('sweeps-table').getByText('12 / 12').waitFor();
}));

test('a schedule made from the new-job page runs on its own; the schedules page shows its next run and last outcome and pauses it', () => withApp(async (d, page) => {
  await page.goto(`${d.base}/schedules`);
  await page.getByTestId('schedules-empty').waitFor();
  await uploadApp(d.base, 'tick', '#!/bin/sh\necho tick\n');
  await page.goto(`${d.base}/new?app=tick`);
  await page.getByTestId('role-editor').fill('name: t\npeers: 1\ncpu: 0.1\nmem: 0.1\n');
  await page.getByTestId('schedule-options').locator('summary').click();
  await page.getByTestId('scheduled').check();
  await page.getByTestId('schedule-name').fill('every two seconds');
  const start = new Date(Math.ceil(Date.now() / 1000) * 1000 + 1000).toISOString().replace('.000Z', 'Z');
  await page.getByTestId('when').fill(`R/${start}/PT2S`);
  await page.getByTestId('submit').getByText('Create schedule').waitFor();
  await page.getByTestId('submit').click();
  await page.waitForURL(/\/schedules\/\d+$/);
  const id = Number(page.url().split('/').pop());
  await page.getByTestId('next-runs').locator('li').nth(4).waitFor();
  // Its runs appear without a reload.
  await page.getByTestId('schedule-history').getByTestId('history-row').nth(1).waitFor({ timeout: 15000 });
  const row = await page.getByTestId('history-row').first().textContent();
  assert.match(row, /job \d+/);
  await page.getByTestId('schedule-history').getByText('FINISHED').first().waitFor({ timeout: 15000 });
  await shot(page, 'schedule-history');
  await page.goto(`${d.base}/schedules`);
  const listed = page.getByTestId('schedule-row').first();
  await listed.getByText('every two seconds').waitFor();
  assert.match(await listed.getByTestId('schedule-next').textContent(), /^(in \d|now)/);
  await listed.getByTestId('schedule-last').getByText(/job \d+/).waitFor();
  await shot(page, 'schedules');
  await listed.getByTestId('schedule-toggle').click();
  await listed.getByTestId('schedule-next').getByText('paused').waitFor();
  const paused = await (await fetch(`${d.base}/api/schedules/${id}`)).json();
  assert.equal(paused.paused, true);
  assert.equal(paused.uid, null, 'each run takes the latest version, as the page said');
  assert.equal(paused.name, 'every two seconds');
  const runs = paused.runs;
  await new Promise((r) => setTimeout(r, 2500));
  assert.equal((await (await fetch(`${d.base}/api/schedules/${id}`)).json()).runs, runs, 'nothing runs while paused');
}));

test('a sweep started from the new-job page names a bad combination, then runs and opens its page', () => withApp(async (d, page) => {
  await uploadApp(d.base, 'nap', '#!/bin/sh\nsleep 0.$DISPATCHER_PEER_COUNT\n');
  await page.goto(`${d.base}/new?app=nap`);
  await page.getByTestId('role-editor').fill('name: w\npeers: 1\ncpu: 0.1\nmem: 0.1\n');
  await page.getByTestId('sweep-options').locator('summary').click();
  await page.getByTestId('swept').check();
  await page.getByTestId('sweep-lines').fill('w.peers = 1, 0');
  await page.getByTestId('submit').getByText('Submit sweep').waitFor();
  await page.getByTestId('submit').click();
  await page.getByRole('alert').getByText('combination 2 of 2 (w.peers=0)', { exact: false }).waitFor();
  assert.equal((await (await fetch(`${d.base}/api/sweeps`)).json()).sweeps.length, 0, 'nothing submitted');
  await page.getByTestId('sweep-lines').fill('w.peers = 1, 2\nw.k3_globals.q = a, b');
  await page.getByTestId('sweep-repeat').fill('2');
  await page.getByTestId('submit').click();
  await page.waitForURL(/\/sweeps\/\d+$/);
  await page.getByTestId('sweep-progress').getByText('8 of 8 ended').waitFor({ timeout: 30000 });
  assert.equal(await page.getByTestId('sweep-row').count(), 4);
}));

test('a retried job\'s page lists its attempts', () => withApp(async (d, page) => {
  await uploadApp(d.base, 'flaky', '#!/bin/sh\n[ "$DISPATCHER_ATTEMPT" = 2 ] || exit 4\n');
  const id = await submitJob(d.base, 'flaky', 'name: f\npeers: 1\ncpu: 0.1\nretries: 1\nretry_on: failed\nretry_backoff: 1s\n');
  await page.goto(`${d.base}/jobs/${id}`);
  await page.locator('.title-row [data-testid=state]').getByText('FINISHED').waitFor({ timeout: 15000 });
  const rows = page.getByTestId('attempts-table').getByTestId('attempt-row');
  await rows.nth(1).waitFor();
  assert.equal(await rows.count(), 2);
  assert.match(await rows.nth(0).textContent(), /FAILED.*peer 0 \(role 'f'\) exited with code 4/);
  assert.match(await rows.nth(1).textContent(), /FINISHED/);
  await shot(page, 'job-attempts');
}));

test('time to first render and shipped sizes (figures)', async () => {
  const d = await startDispatcher();
  const page = await browser.newPage();
  const failed = [];
  // (Console errors too: the browser's own favicon request is not a page request.)
  page.on('response', (r) => { if (r.status() >= 400) failed.push(`${r.status()} ${r.url()}`); });
  page.on('console', (m) => { if (m.type() === 'error') failed.push(`${m.text()} ${m.location().url}`); });
  try {
    const t0 = Date.now();
    await page.goto(`${d.base}/jobs`);
    await page.getByText('No jobs yet.').waitFor();
    const firstRender = Date.now() - t0;
    const nav = await page.evaluate(() => performance.getEntriesByType('navigation')[0].toJSON());
    console.log(`dashboard: first render in ${firstRender} ms (navigation to the jobs page's empty state; DOMContentLoaded at ${Math.round(nav.domContentLoadedEventEnd)} ms)`);
    // What a first visit costs: every wasm and JS file the jobs page loaded
    // (the main module, its JS, the chunk loader; no page chunk).
    const measure = async (urls) => {
      const t = { raw: 0, gz: 0, br: 0 };
      for (const url of urls) {
        t.raw += (await (await fetch(url)).arrayBuffer()).byteLength;
        for (const enc of ['gzip', 'br']) {
          const r = await fetch(url, { headers: { 'Accept-Encoding': enc } });
          assert.equal(r.headers.get('content-encoding'), enc, url);
          t[enc === 'gzip' ? 'gz' : 'br'] += Number(r.headers.get('content-length') || 0);
        }
      }
      return t;
    };
    const code = () => page.evaluate(() => performance.getEntriesByType('resource').map((r) => r.name)
      .filter((n) => n.endsWith('.wasm') || n.endsWith('.js')));
    const kib = (t) => `${(t.raw / 1024).toFixed(1)} KiB raw, ${(t.gz / 1024).toFixed(1)} KiB gzip, ${(t.br / 1024).toFixed(1)} KiB brotli`;
    const first = await code();
    assert.ok(first.some((n) => n.endsWith('_bg.wasm')), `the main module is loaded: ${first}`);
    assert.ok(!first.some((n) => /\/split___/.test(n)), `no page chunk on the jobs page: ${first}`);
    for (const kind of ['wasm', 'js']) {
      console.log(`dashboard: first visit ${kind} ${kib(await measure(first.filter((n) => n.endsWith('.' + kind))))}`);
    }
    const total = await measure(first);
    console.log(`dashboard: first visit wasm + JS ${kib(total)} (${first.length} files)`);
    assert.ok(total.gz <= 300 * 1024, `the jobs page loads ${total.gz} bytes gzip of wasm and JS (at most 300 KiB)`);
    // Every other page's code arrives when the page is opened.
    const pages = [['/new', 'New job'], ['/schedules', 'Schedules'], ['/sweeps', 'Sweeps'], ['/apps', 'Apps'], ['/cluster', 'Cluster']];
    for (const [path, heading] of pages) {
      await page.locator(`nav a[href="${path}"]`).click();
      await page.getByRole('heading', { name: heading, exact: true }).first().waitFor();
    }
    const all = await code();
    const chunks = all.filter((n) => !first.includes(n));
    assert.ok(chunks.some((n) => /\/split___new_job_route_view_/.test(n)), `the new-job page's chunk was fetched: ${chunks}`);
    console.log(`dashboard: the other pages' chunks, fetched as opened: ${kib(await measure(chunks))} (${chunks.length} files)`);
    assert.deepEqual(failed, [], 'every request of the visit succeeded, and the console has no error');
    await shot(page, 'jobs-empty');
  } finally {
    await page.close();
    await d.stop();
  }
});
