// The dashboard behind --token-file and --read-token in headless Chromium:
// it asks for the token once, says clearly when it is wrong, and once signed
// in uploads (with progress), submits, watches live and kills.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDispatcher, launchBrowser, shot } from './harness.mjs';

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

test('behind a token the dashboard signs in once, then uploads, submits, watches live and kills', async () => {
  const secrets = mkdtempSync(join(tmpdir(), 'dispatcher-secrets-'));
  writeFileSync(join(secrets, 'write'), 'correct horse battery staple\n');
  writeFileSync(join(secrets, 'read'), 'just looking\n');
  const d = await startDispatcher(['--token-file', join(secrets, 'write'), '--read-token-file', join(secrets, 'read')]);
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  try {
    // Nothing is readable without a token, from the API or the page.
    assert.equal((await fetch(`${d.base}/api/jobs`)).status, 401);
    await page.goto(`${d.base}/apps`);
    const dialog = page.getByRole('dialog');
    await dialog.getByText(/This dispatcher is private/).waitFor();
    await shot(page, 'sign-in');
    await page.locator('#token').fill('wrong token');
    await dialog.getByRole('button', { name: 'Sign in' }).click();
    await page.getByTestId('signin-error').getByText("that token is not this dispatcher's token").waitFor();
    await shot(page, 'sign-in-wrong');
    await page.locator('#token').fill('correct horse battery staple');
    await dialog.getByRole('button', { name: 'Sign in' }).click();
    await page.getByTestId('signed-in').waitFor();
    assert.equal(await dialog.count(), 0);
    await page.getByText('No apps yet').waitFor();
    // The page never holds the token: only an HttpOnly cookie does.
    assert.equal(await page.evaluate(() => document.cookie), '');
    const cookies = await context.cookies();
    assert.equal(cookies.length, 1);
    assert.equal(cookies[0].httpOnly, true);
    assert.ok(!cookies[0].value.includes('horse'));

    // Upload by drop, with progress, through the cookie.
    await page.evaluate(() => {
      const bytes = new TextEncoder().encode('#!/bin/sh\necho "peer $DISPATCHER_PEER_INDEX up"\nexec sleep 60\n' + '#'.repeat(4 << 20));
      const file = new File([bytes], 'sleeper', { type: 'application/octet-stream' });
      const dt = new DataTransfer();
      dt.items.add(file);
      const zone = document.querySelector('[data-testid=drop-zone]');
      zone.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
      zone.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    });
    await page.getByTestId('upload-detail').getByText(/done: new version/).waitFor({ timeout: 30000 });
    assert.equal(await page.locator('[data-testid=upload] progress').getAttribute('value'), '100');

    // Submit from the editor, watch it run live, kill it.
    await page.goto(`${d.base}/new?app=sleeper`);
    await page.getByTestId('role-editor').fill('name: s\npeers: 2\ncpu: 0.1\n');
    await page.getByTestId('no-problems').waitFor();
    await page.getByTestId('submit').click();
    await page.waitForURL(/\/jobs\/\d+$/);
    const badge = page.locator('.title-row [data-testid=state]');
    await badge.getByText('RUNNING').waitFor({ timeout: 20000 });
    await page.getByTestId('peer-1').getByText('RUNNING').waitFor();
    await page.getByTestId('log').getByText(/peer 0 up/).waitFor({ timeout: 10000 });
    await shot(page, 'signed-in-job-running');
    page.once('dialog', (dlg) => dlg.accept());
    await page.getByTestId('kill').click();
    await badge.getByText('KILLED').waitFor({ timeout: 15000 });

    // A second tab of the same browser session is signed in already.
    const other = await context.newPage();
    await other.goto(`${d.base}/jobs`);
    await other.getByTestId('signed-in').waitFor();
    assert.equal(await other.getByRole('dialog').count(), 0);
    await other.close();

    // Signing out closes it again.
    await page.getByTestId('signed-in').getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('dialog').getByText(/private/).first().waitFor();
    assert.deepEqual(errors, [], 'no errors in the page');
  } catch (e) {
    console.error(d.log().slice(-3000));
    throw e;
  } finally {
    await context.close();
    await d.stop();
  }
});
