'use strict';

// The web console (GET /) in headless Chromium, driven by Playwright,
// against real longrun servers started by crates/longrun/tests/console.rs:
//
//   LONGRUN_ENDPOINT          an open server, seeded with operations under
//                             projects/demo/locations/us and …/eu
//   LONGRUN_SECURED_ENDPOINT  a server with --tokens, and its tokens
//   LONGRUN_ADMIN_TOKEN       ("*=admin") and LONGRUN_VIEWER_TOKEN
//                             ("projects/demo=viewer")
//   LONGRUN_CONSOLE_SCREENSHOTS  where screenshots go
//   CHROMIUM                  the browser (default /usr/bin/chromium)
//
// Every wait is on a condition (a locator or a page function), never a
// sleep; timeouts are generous because CI machines are slow.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const {after, before, test} = require('node:test');
const {chromium} = require('playwright-core');

const endpoint = process.env.LONGRUN_ENDPOINT || 'http://127.0.0.1:8080';
const securedEndpoint = process.env.LONGRUN_SECURED_ENDPOINT;
const screenshots = process.env.LONGRUN_CONSOLE_SCREENSHOTS || path.join(__dirname, 'screenshots');
const TIMEOUT = 15_000;
const DESKTOP = {width: 1280, height: 760};
const NARROW = {width: 390, height: 760};
const SEEDED = 'projects/demo/locations/us';

let browser;

before(async () => {
  fs.mkdirSync(screenshots, {recursive: true});
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox'],
  });
});

after(async () => {
  if (browser) await browser.close();
});

/** longrun's REST API, as a producer or worker calls it. */
async function api(method, resource, body, {server = endpoint, token} = {}) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(new URL(`/v1/${resource}`, server), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await response.json();
  assert.equal(response.status, 200, `${method} ${resource}: ${JSON.stringify(json)}`);
  return json;
}

/** A fresh browser context (nothing in its storage) on `url`, failing
 * the test on any script error or Content-Security-Policy violation. */
async function openConsole(t, url, {server = endpoint, viewport = DESKTOP} = {}) {
  const context = await browser.newContext({viewport});
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  const problems = [];
  page.on('pageerror', (err) => problems.push(`script error: ${err.message}`));
  page.on('console', (message) => {
    // Refused calls (401, 400) are logged by Chromium as failed loads;
    // they are part of the tests. Anything else is a defect.
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
      problems.push(`console error: ${message.text()}`);
    }
  });
  t.after(async () => {
    await context.close();
    assert.deepEqual(problems, [], 'the page logged no errors');
  });
  await page.goto(new URL(url, server).href);
  return page;
}

const row = (page, name) => page.locator(`#operations tbody tr[data-name="${name}"]`);
const rowIn = (page, name, state) => page.locator(`#operations tbody tr[data-name="${name}"][data-state="${state}"]`);
const live = (page) => page.locator('#status[data-state="live"]').waitFor();

async function shoot(page, name) {
  await page.screenshot({path: path.join(screenshots, `${name}.png`)});
}

/** The names in the table, top to bottom. */
function shownNames(page) {
  return page.locator('#operations tbody tr').evaluateAll((rows) => rows.map((tr) => tr.dataset.name));
}

async function waitForRowCount(page, count) {
  await page.waitForFunction(
    (n) => document.querySelectorAll('#operations tbody tr').length === n,
    count,
    {timeout: TIMEOUT},
  );
}

test('(1) lists the operations under a parent, newest first, with their states', async (t) => {
  // The default parent, projects/-/locations/-, shows every location.
  const page = await openConsole(t, '/');
  await live(page);
  await row(page, `${SEEDED}/operations/import-orders`).waitFor();
  await row(page, 'projects/demo/locations/eu/operations/sync-eu').waitFor();
  assert.equal(await page.inputValue('#parent'), 'projects/-/locations/-');

  // One concrete parent: the other location's operation goes.
  await page.fill('#parent', SEEDED);
  await page.press('#parent', 'Enter');
  await row(page, 'projects/demo/locations/eu/operations/sync-eu').waitFor({state: 'detached'});
  await live(page);
  await waitForRowCount(page, 6);
  const {operations} = await api('GET', `${SEEDED}/operations?view=longrun`);
  assert.deepEqual(await shownNames(page), operations.map((view) => view.operation.name), 'the order List gives');
  assert.match(page.url(), /\?parent=projects\/demo\/locations\/us$/, 'the address follows the view');

  const expected = {
    'import-orders': 'RUNNING',
    'export-model': 'QUEUED',
    'train-model': 'SUCCEEDED',
    'resize-cluster': 'FAILED',
    'purge-cache': 'CANCELLED',
    'build-index': 'RUNNING',
  };
  for (const [id, state] of Object.entries(expected)) {
    await rowIn(page, `${SEEDED}/operations/${id}`, state).waitFor();
  }
  const importing = row(page, `${SEEDED}/operations/import-orders`);
  assert.equal(await importing.locator('.col-verb').textContent(), 'import');
  assert.equal(await importing.locator('.col-target').textContent(), 'datasets/orders');
  assert.equal(await importing.locator('.percent').textContent(), '65%');
  assert.match(await importing.locator('.col-created').textContent(), /^(just now|\d+ s ago|\d+ min ago)$/);
  assert.equal(
    await row(page, `${SEEDED}/operations/build-index`).locator('.state').textContent(),
    'cancelling…',
    'a running operation asked to cancel',
  );
  assert.match(await page.textContent('#status'), /live · 6 operations/);
  await shoot(page, '1-list');

  // The detail panel, for the documentation's picture.
  await importing.click();
  await page.locator('#detail-title', {hasText: `${SEEDED}/operations/import-orders`}).waitFor();
  // The producer's own metadata, and longrun's standard view beside it.
  await page.locator('#detail-operation', {hasText: '"source": "gs://bucket/orders.csv"'}).waitFor();
  await page.locator('#detail-standard', {hasText: '"progressPercent": 65'}).waitFor();
  await shoot(page, '1-list-detail');

  // Narrow: target and updated columns give way; the panel covers the table.
  await page.setViewportSize(NARROW);
  await page.keyboard.press('Escape');
  await page.locator('#detail').waitFor({state: 'hidden'});
  assert.equal(await page.locator('th.col-target').isVisible(), false);
  assert.equal(await page.locator('th.col-updated').isVisible(), false);
  assert.equal(await page.locator('th.col-state').isVisible(), true);
  await shoot(page, '1-list-narrow');
  await importing.click();
  const panel = await page.locator('#detail').boundingBox();
  assert.equal(Math.round(panel.width), NARROW.width, 'the panel takes the whole width');
  await shoot(page, '1-detail-narrow');
});

test('(2) an operation created after the page loaded appears without a reload', async (t) => {
  const parent = 'projects/live/locations/l';
  const page = await openConsole(t, `/?parent=${parent}`);
  await live(page);
  await page.locator('#empty').waitFor();
  await page.evaluate(() => (window.loadedOnce = true));

  await api('POST', `${parent}/operations`, {operationId: 'arrives-later', verb: 'render', target: 'videos/v1'});
  const arrived = rowIn(page, `${parent}/operations/arrives-later`, 'RUNNING');
  await arrived.waitFor();
  assert.equal(await arrived.locator('.col-verb').textContent(), 'render');
  assert.equal(await page.evaluate(() => window.loadedOnce), true, 'the same page, not a reload');

  // Newest first: a second one goes on top.
  await api('POST', `${parent}/operations`, {operationId: 'arrives-last'});
  await waitForRowCount(page, 2);
  assert.deepEqual(await shownNames(page), [`${parent}/operations/arrives-last`, `${parent}/operations/arrives-later`]);

  // Deleted elsewhere: gone from the table.
  await api('DELETE', `${parent}/operations/arrives-later`);
  await arrived.waitFor({state: 'detached'});
  await shoot(page, '2-live');
});

test('(3) progress moves as a worker claims and updates the operation', async (t) => {
  const parent = 'projects/work/locations/l';
  await api('POST', `${parent}/operations`, {operationId: 'crunch', queue: 'q', verb: 'crunch'});
  const page = await openConsole(t, `/?parent=${parent}`);
  const name = `${parent}/operations/crunch`;
  await rowIn(page, name, 'QUEUED').waitFor();
  assert.equal(await row(page, name).locator('.percent').textContent(), '0%');

  const claimed = await api('POST', `${parent}/operations:claim`, {queue: 'q', worker: 'console-test'});
  assert.equal(claimed.operation.name, name);
  await rowIn(page, name, 'RUNNING').waitFor();

  await api('POST', `${name}:update`, {leaseToken: claimed.leaseToken, progressPercent: 40});
  await row(page, name).locator('progress[value="40"]').waitFor();
  assert.equal(await row(page, name).locator('.percent').textContent(), '40%');
  await shoot(page, '3-progress');

  await api('POST', `${name}:complete`, {leaseToken: claimed.leaseToken, response: {rows: 7}});
  await rowIn(page, name, 'SUCCEEDED').waitFor();
  await row(page, name).locator('progress[value="100"]').waitFor();
});

test('(4) cancel and delete from the detail panel, each confirmed first', async (t) => {
  const parent = 'projects/cancel/locations/l';
  await api('POST', `${parent}/operations`, {operationId: 'waiting', queue: 'q', verb: 'export'});
  await api('POST', `${parent}/operations`, {operationId: 'unwanted', verb: 'export'});
  const page = await openConsole(t, `/?parent=${parent}`);
  const name = `${parent}/operations/waiting`;
  await rowIn(page, name, 'QUEUED').click();
  await page.locator('#detail-title', {hasText: name}).waitFor();

  // Back changes nothing.
  await page.click('#cancel');
  await page.locator('#confirm[open]').waitFor();
  assert.match(await page.textContent('#confirm-text'), /queued operation ends at once/);
  await shoot(page, '4-confirm');
  await page.click('#confirm-back');
  await page.locator('#confirm').waitFor({state: 'hidden'});
  assert.equal((await api('GET', name)).done, undefined, 'still queued');

  await page.click('#cancel');
  await page.click('#confirm-ok');
  await rowIn(page, name, 'CANCELLED').waitFor();
  await page.locator('#detail-badge.state-cancelled').waitFor();
  await page.locator('#detail-operation', {hasText: '"code": 1'}).waitFor();
  assert.equal(await page.isDisabled('#cancel'), true, 'a done operation cannot be cancelled');
  await shoot(page, '4-cancelled');

  // Delete: the row goes, the panel says why.
  const unwanted = `${parent}/operations/unwanted`;
  await row(page, unwanted).click();
  await page.locator('#detail-title', {hasText: unwanted}).waitFor();
  await page.click('#delete');
  await page.click('#confirm-ok');
  await row(page, unwanted).waitFor({state: 'detached'});
  await page.locator('#detail-note', {hasText: 'deleted'}).waitFor();
  assert.equal(await page.isDisabled('#delete'), true);
  const response = await fetch(new URL(`/v1/${unwanted}`, endpoint));
  assert.equal(response.status, 404);
});

test('(5) an invalid filter is shown under the box, pointing at its column', async (t) => {
  const filter = 'done = maybe';
  const refused = await fetch(new URL(`/v1/${SEEDED}/operations?filter=${encodeURIComponent(filter)}`, endpoint));
  const {error} = await refused.json();
  const column = Number(error.details[0].metadata.column);
  assert.ok(column > 1, JSON.stringify(error));

  const page = await openConsole(t, `/?parent=${SEEDED}`);
  await live(page);
  await page.fill('#filter', filter);
  await page.press('#filter', 'Enter');
  const shown = page.locator('#filter-error');
  await shown.locator('.filter-error-message', {hasText: error.message}).waitFor();
  assert.equal(await shown.locator('mark').textContent(), Array.from(filter)[column - 1]);
  const [, caret] = (await shown.locator('.filter-error-where').textContent()).split('\n');
  assert.equal(caret.indexOf('^'), column - 1, 'the caret stands under the column');
  assert.match(caret, new RegExp(`column ${column}`));
  assert.equal(await page.getAttribute('#filter', 'aria-invalid'), 'true');
  await page.locator('#status[data-state="error"]', {hasText: 'filter is not valid'}).waitFor();
  await shoot(page, '5-invalid-filter');

  // Fixed: the error goes and the view comes back.
  await page.fill('#filter', 'done = false');
  await page.press('#filter', 'Enter');
  await shown.waitFor({state: 'hidden'});
  await live(page);
  await rowIn(page, `${SEEDED}/operations/export-model`, 'QUEUED').waitFor();
});

test('(6) a deep link opens the same view', async (t) => {
  const page = await openConsole(t, `/?parent=${SEEDED}&filter=${encodeURIComponent('metadata.state = QUEUED')}`);
  await live(page);
  assert.equal(await page.inputValue('#parent'), SEEDED);
  assert.equal(await page.inputValue('#filter'), 'metadata.state = QUEUED');
  await waitForRowCount(page, 1);
  assert.deepEqual(await shownNames(page), [`${SEEDED}/operations/export-model`]);
  await shoot(page, '6-deep-link');

  // Changing the filter changes the address, so it can be shared.
  await page.fill('#filter', 'done = true');
  await page.press('#filter', 'Enter');
  await page.waitForURL((url) => url.searchParams.get('filter') === 'done = true');
  await rowIn(page, `${SEEDED}/operations/train-model`, 'SUCCEEDED').waitFor();
  await row(page, `${SEEDED}/operations/export-model`).waitFor({state: 'detached'});
});

test('(7) with --tokens the console asks for a token; a viewer may look but not cancel', {skip: !securedEndpoint}, async (t) => {
  const admin = process.env.LONGRUN_ADMIN_TOKEN;
  const viewer = process.env.LONGRUN_VIEWER_TOKEN;
  const name = `${SEEDED}/operations/guarded`;
  await api('POST', `${SEEDED}/operations`, {operationId: 'guarded', queue: 'q'}, {server: securedEndpoint, token: admin});

  const page = await openConsole(t, `/?parent=${SEEDED}`, {server: securedEndpoint});
  const dialog = page.locator('#token-dialog[open]');
  await dialog.waitFor();
  assert.match(await page.textContent('#token-reason'), /needs a token/);
  await shoot(page, '7-token-prompt');

  // A wrong token is refused and asked for again.
  await page.fill('#token', 'lr_not_a_token');
  await page.press('#token', 'Enter');
  await page.locator('#token-reason', {hasText: 'did not accept'}).waitFor();
  await page.fill('#token', viewer);
  await page.click('#token-dialog button[type="submit"]');
  await dialog.waitFor({state: 'hidden'});
  await live(page);
  await rowIn(page, name, 'QUEUED').click();

  await page.click('#cancel');
  await page.click('#confirm-ok');
  await page.locator('#detail-error', {hasText: 'PERMISSION_DENIED'}).waitFor();
  await shoot(page, '7-permission-denied');
  assert.equal((await api('GET', name, undefined, {server: securedEndpoint, token: admin})).done, undefined);

  // The token is kept for the tab: a reload goes straight to the table.
  await page.reload();
  await live(page);
  await row(page, name).waitFor();
  assert.equal(await page.locator('#token-dialog').isVisible(), false);
});

test('(8) the keyboard: / to the filter, arrows or j/k through rows, Enter opens, Escape closes', async (t) => {
  const page = await openConsole(t, `/?parent=${SEEDED}`);
  await live(page);
  await waitForRowCount(page, 6);
  const names = await shownNames(page);

  await page.locator('body').press('/');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'filter');
  await page.press('#filter', 'ArrowDown');
  const focused = () => page.evaluate(() => document.activeElement.dataset.name);
  assert.equal(await focused(), names[0]);
  await page.keyboard.press('j');
  await page.keyboard.press('ArrowDown');
  assert.equal(await focused(), names[2]);
  await page.keyboard.press('k');
  assert.equal(await focused(), names[1]);
  await page.keyboard.press('Enter');
  await page.locator('#detail-title', {hasText: names[1]}).waitFor();
  await page.keyboard.press('Escape');
  await page.locator('#detail').waitFor({state: 'hidden'});
  assert.equal(await focused(), names[1], 'focus goes back to the row');
  // One tab stop for the whole table.
  assert.equal(await page.locator('#operations tbody tr[tabindex="0"]').count(), 1);
});

test('(9) after the stream ends, the console reconnects from the last event id', async (t) => {
  const parent = 'projects/resume/locations/l';
  const created = await api('POST', `${parent}/operations?view=longrun`, {operationId: 'first'});
  const context = await browser.newContext({viewport: DESKTOP});
  t.after(() => context.close());
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);

  // The first stream is a recording: one operation, synced, then the
  // server's last word. Later ones reach the real server.
  const resumedWith = [];
  let first = true;
  await page.route('**/operations:watch?*', async (route) => {
    if (!first) {
      resumedWith.push(route.request().headers()['last-event-id']);
      return route.continue();
    }
    first = false;
    const events = [
      `event: operation\ndata: ${JSON.stringify(created)}\n\n`,
      'event: synced\nid: 1\ndata: {}\n\n',
      ': heartbeat\nid: 2\n\n',
      'event: end\ndata: {"error":{"code":503,"message":"the server is shutting down","status":"UNAVAILABLE"}}\n\n',
    ];
    await route.fulfill({status: 200, contentType: 'text/event-stream', body: events.join('')});
  });
  await page.goto(new URL(`/?parent=${parent}`, endpoint).href);
  await row(page, `${parent}/operations/first`).waitFor();
  await page.waitForFunction(() => document.querySelector('#status').dataset.state === 'live', null, {timeout: TIMEOUT});
  await api('POST', `${parent}/operations`, {operationId: 'second'});
  await row(page, `${parent}/operations/second`).waitFor();
  assert.equal(resumedWith[0], '2', 'resumed after the last id, the heartbeat\'s');
  await row(page, `${parent}/operations/first`).waitFor();
});

test('(10) older operations than the first page load on demand', async (t) => {
  const page = await openConsole(t, `/?parent=${SEEDED}&pageSize=4`);
  await live(page);
  await waitForRowCount(page, 4);
  assert.match(await page.textContent('#status'), /older ones not loaded/);
  await page.click('#load-more');
  await waitForRowCount(page, 6);
  await page.locator('#load-more').waitFor({state: 'hidden'});
  const {operations} = await api('GET', `${SEEDED}/operations?view=longrun`);
  assert.deepEqual(await shownNames(page), operations.map((view) => view.operation.name));
});
