// The longrun console: the operations under a parent, live.
//
// It is a plain client of the REST API (see console.rs for the overview):
// a watch stream (Server-Sent Events read with fetch, so that it can carry
// a bearer token) fills and updates the table; Cancel and Delete are the
// standard calls. Everything the server sends is put into the page as text
// (textContent, attributes), never parsed as markup: operation names,
// metadata and messages are written by whoever created the operation.

const DEFAULT_PARENT = 'projects/-/locations/-';
/** Operations the snapshot shows (unless the address says `pageSize`);
 * older ones come with "Load older". */
const PAGE_SIZE = 200;
const TOKEN_KEY = 'longrun.console.token';
const RECENT_KEY = 'longrun.console.recentParents';
const RECENT_MAX = 12;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 15_000;
/** The server says something at least every 15 s; three missed heartbeats
 * mean the connection is dead even if TCP has not noticed. */
const SILENCE_MS = 45_000;
const CLOCK_TICK_MS = 5_000;
const ERROR_INFO = 'type.googleapis.com/google.rpc.ErrorInfo';

const $ = (id) => document.getElementById(id);
const ui = {
  form: $('view-form'),
  parent: $('parent'),
  parents: $('parents'),
  filter: $('filter'),
  filterError: $('filter-error'),
  status: $('status'),
  main: $('main'),
  rows: $('operations').tBodies[0],
  empty: $('empty'),
  loadMore: $('load-more'),
  detail: $('detail'),
  confirm: $('confirm'),
  tokenDialog: $('token-dialog'),
  token: $('token'),
};

/** What the page shows and where its stream stands. */
const view = {
  parent: DEFAULT_PARENT,
  filter: '',
  pageSize: PAGE_SIZE,
  /** name → OperationView, as last received. */
  operations: new Map(),
  /** name → its table row, made once and updated in place. */
  rows: new Map(),
  /** Names whose rows need filling on the next render. */
  dirty: new Set(),
  /** Older operations exist beyond what is shown ("Load older"). */
  nextPageToken: '',
  /** A snapshot is arriving: its `synced` carries the page token. */
  snapshotting: true,
  /** Where the watch stream resumes; empty means "start with a snapshot". */
  lastEventId: '',
  connection: 'connecting',
  problem: '',
  /** The operation in the detail panel, and its last known state (kept
   * when it leaves the table, so the panel can say why). */
  selected: null,
  selectedView: null,
  selectedGone: '',
};

let token = sessionStorage.getItem(TOKEN_KEY) || '';
let stream = null;
let renderPending = false;
/** Set while the page waits for the user to give a token. */
let tokenWanted = null;

// ---------------------------------------------------------------- the API

/** An AIP-193 error from the server (or an `end` event). */
class ApiError extends Error {
  constructor(httpStatus, body) {
    const error = (body && body.error) || {};
    super(typeof error.message === 'string' ? error.message : `HTTP ${httpStatus}`);
    this.httpStatus = httpStatus;
    this.status = typeof error.status === 'string' ? error.status : '';
    const details = Array.isArray(error.details) ? error.details : [];
    const info = details.find((detail) => detail && detail['@type'] === ERROR_INFO) || {};
    this.reason = info.reason || '';
    this.metadata = info.metadata || {};
  }

  describe() {
    return this.status ? `${this.status}: ${this.message}` : this.message;
  }

  /** Worth trying again unchanged: the server or the network, not the request. */
  get retryable() {
    return [408, 429, 500, 502, 503, 504].includes(this.httpStatus);
  }
}

/** A resource path in a URL: each segment escaped, the slashes kept (the
 * server refuses an encoded slash). */
function encodePath(path) {
  return path.split('/').map(encodeURIComponent).join('/');
}

function collectionPath(parent) {
  return parent ? `${encodePath(parent)}/operations` : 'operations';
}

function apiUrl(path, query = {}) {
  const url = new URL(`/v1/${path}`, window.location.origin);
  for (const [key, value] of Object.entries(query)) {
    if (value !== '' && value !== undefined) url.searchParams.set(key, value);
  }
  return url;
}

function authHeaders() {
  return token ? {authorization: `Bearer ${token}`} : {};
}

async function call(method, path, {query, body} = {}) {
  const headers = authHeaders();
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(apiUrl(path, query), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
  });
  const json = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, json);
  return json;
}

/** Runs `action`; when the server wants a token, asks for one and runs it again. */
async function withToken(action) {
  for (;;) {
    try {
      return await action();
    } catch (err) {
      if (!(err instanceof ApiError) || err.httpStatus !== 401) throw err;
      await askForToken(err.message);
    }
  }
}

// ------------------------------------------------------------ the token

/** Shows the token form; resolves once the user has given a token. */
function askForToken(reason) {
  if (!tokenWanted) {
    let resolve;
    const promise = new Promise((done) => (resolve = done));
    tokenWanted = {promise, resolve};
  }
  $('token-reason').textContent = token ? `The server did not accept the token: ${reason}` : reason;
  $('token-button').hidden = false;
  setConnection('token', 'a token is needed');
  if (!ui.tokenDialog.open) ui.tokenDialog.showModal();
  return tokenWanted.promise;
}

function useToken(value) {
  token = value;
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
  if (tokenWanted) {
    tokenWanted.resolve();
    tokenWanted = null;
  } else {
    restartWatch({fresh: true});
  }
}

// ---------------------------------------------------------- watch stream

/** Server-Sent Events as the HTML standard reads them, fed text as it
 * arrives. Lines end in LF or CRLF (the server writes LF). */
class EventParser {
  constructor(dispatch) {
    this.dispatch = dispatch;
    this.buffer = '';
    this.clear();
  }

  clear() {
    this.type = '';
    this.data = [];
    this.id = null;
  }

  push(text) {
    this.buffer += text;
    let newline;
    while ((newline = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, newline).replace(/\r$/, '');
      this.buffer = this.buffer.slice(newline + 1);
      this.line(line);
    }
  }

  line(line) {
    if (line === '') {
      const event = {type: this.type || 'message', data: this.data.join('\n'), id: this.id};
      const hasData = this.data.length > 0;
      this.clear();
      this.dispatch(event, hasData);
      return;
    }
    if (line.startsWith(':')) return; // a comment (the heartbeat)
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.type = value;
    else if (field === 'data') this.data.push(value);
    else if (field === 'id' && !value.includes('\0')) this.id = value;
  }
}

/** Starts following the current parent and filter; `fresh` forgets what
 * is shown (a new view), otherwise the stream resumes. */
function restartWatch({fresh}) {
  if (stream) stream.abort();
  if (fresh) {
    view.lastEventId = '';
    clearOperations();
  }
  stream = new AbortController();
  followChanges(stream.signal);
}

/** Keeps a watch stream open until `signal` aborts: reconnects with
 * backoff after network errors and `end` events, resuming from the last
 * event id; stops on errors that retrying would not fix (a bad filter). */
async function followChanges(signal) {
  let backoff = BACKOFF_FIRST_MS;
  while (!signal.aborted) {
    const started = Date.now();
    let problem;
    try {
      await readStream(signal);
      problem = 'the stream closed';
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof ApiError && err.httpStatus === 401) {
        await askForToken(err.message);
        continue;
      }
      if (err instanceof ApiError && !err.retryable) {
        showStreamError(err);
        return;
      }
      problem = err instanceof ApiError ? err.describe() : err.message || String(err);
    }
    // A stream that lasted a while was healthy: start the backoff over.
    if (Date.now() - started > 30_000) backoff = BACKOFF_FIRST_MS;
    setConnection('reconnecting', problem);
    await sleep(backoff * (0.75 + Math.random() / 2), signal);
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
  }
}

async function readStream(signal) {
  // Aborted by the caller, or by the watchdog when the server goes quiet.
  const connection = new AbortController();
  const forward = () => connection.abort();
  signal.addEventListener('abort', forward, {once: true});
  let watchdog;
  const feedWatchdog = () => {
    clearTimeout(watchdog);
    watchdog = setTimeout(
      () => connection.abort(new Error('no word from the server for 45 s')),
      SILENCE_MS,
    );
  };
  try {
    feedWatchdog();
    const headers = authHeaders();
    if (view.lastEventId) headers['last-event-id'] = view.lastEventId;
    const url = apiUrl(`${collectionPath(view.parent)}:watch`, {filter: view.filter, pageSize: view.pageSize});
    const response = await fetch(url, {headers, signal: connection.signal, cache: 'no-store'});
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
    hideStreamError();
    if (!view.lastEventId) clearOperations(); // a snapshot follows
    setConnection('loading', '');
    const parser = new EventParser(applyEvent);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const {value, done} = await reader.read();
      if (done) return;
      feedWatchdog();
      parser.push(value);
    }
  } finally {
    clearTimeout(watchdog);
    signal.removeEventListener('abort', forward);
    connection.abort(); // releases the response body if still open
  }
}

/** One event of the watch stream. */
function applyEvent(event, hasData) {
  if (event.id !== null) view.lastEventId = event.id;
  if (!hasData) return; // a heartbeat: only the id moved on
  const data = JSON.parse(event.data);
  switch (event.type) {
    case 'operation':
      upsert(data);
      break;
    case 'removed':
      remove(data.name, data.deleted ? 'deleted' : 'no longer matches the filter');
      break;
    case 'synced':
      if (view.snapshotting) view.nextPageToken = data.nextPageToken || '';
      view.snapshotting = false;
      setConnection('live', '');
      scheduleRender();
      break;
    case 'reset':
      // The server cannot replay from our position: a fresh snapshot
      // follows, and until it is complete there is nothing to resume from.
      view.lastEventId = '';
      clearOperations();
      break;
    case 'end':
      throw new ApiError((data.error && data.error.code) || 503, data);
    default:
      break; // an event a newer server sends: not ours to show
  }
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done);
  });
}

// ------------------------------------------------------------ the model

function upsert(operationView) {
  const name = operationView && operationView.operation && operationView.operation.name;
  if (typeof name !== 'string') return;
  view.operations.set(name, operationView);
  view.dirty.add(name);
  rememberParent(parentOf(name));
  if (name === view.selected) {
    view.selectedView = operationView;
    view.selectedGone = '';
  }
  scheduleRender();
}

function remove(name, why) {
  view.operations.delete(name);
  if (name === view.selected) {
    view.selectedGone = why;
    // Left the filter: show how it ended up.
    if (why !== 'deleted') refreshSelected(name);
  }
  scheduleRender();
}

function clearOperations() {
  view.operations.clear();
  view.nextPageToken = '';
  view.snapshotting = true;
  scheduleRender();
}

async function refreshSelected(name) {
  try {
    const latest = await withToken(() => call('GET', encodePath(name), {query: {view: 'longrun'}}));
    if (view.selected === name && !view.operations.has(name)) {
      view.selectedView = latest;
      renderDetail();
    }
  } catch {
    // The panel keeps the last state it had.
  }
}

async function loadOlder() {
  ui.loadMore.disabled = true;
  try {
    const page = await withToken(() => call('GET', collectionPath(view.parent), {
      query: {filter: view.filter, pageSize: view.pageSize, pageToken: view.nextPageToken, view: 'longrun'},
    }));
    (page.operations || []).forEach(upsert);
    view.nextPageToken = page.nextPageToken || '';
  } catch (err) {
    setConnection(view.connection, err instanceof ApiError ? err.describe() : err.message);
  } finally {
    ui.loadMore.disabled = false;
    scheduleRender();
  }
}

/** `projects/p/operations/x` → `projects/p`; top-level → ''. */
function parentOf(name) {
  return name.replace(/(^|\/)operations\/[^/]+$/, '');
}

function idOf(name) {
  return name.slice(name.lastIndexOf('/') + 1);
}

/** The standard state, also for a server that sent none. */
function stateOf(operationView) {
  const {operation = {}, standard = {}} = operationView;
  if (standard.state) return standard.state;
  if (!operation.done) return 'RUNNING';
  if (!operation.error) return 'SUCCEEDED';
  return operation.error.code === 1 ? 'CANCELLED' : 'FAILED';
}

function isCancelling(operationView) {
  return Boolean(operationView.standard && operationView.standard.cancelRequested && !operationView.operation.done);
}

/** Newest first, as List orders them; ids break ties (they sort by time). */
function newestFirst(a, b) {
  const at = Date.parse((a.standard || {}).createTime) || 0;
  const bt = Date.parse((b.standard || {}).createTime) || 0;
  if (at !== bt) return bt - at;
  return a.operation.name < b.operation.name ? 1 : -1;
}

// ------------------------------------------------------------ rendering

function scheduleRender() {
  if (renderPending) return;
  renderPending = true;
  setTimeout(render, 0);
}

function render() {
  renderPending = false;
  const focused = document.activeElement;
  let refocus = null;
  for (const [name, row] of view.rows) {
    if (view.operations.has(name)) continue;
    if (row === focused) refocus = row.nextElementSibling || row.previousElementSibling;
    row.remove();
    view.rows.delete(name);
  }
  const sorted = [...view.operations.values()].sort(newestFirst);
  sorted.forEach((operationView, index) => {
    const name = operationView.operation.name;
    let row = view.rows.get(name);
    if (!row) {
      row = createRow(name);
      view.rows.set(name, row);
    }
    if (view.dirty.has(name)) fillRow(row, operationView);
    // Only rows out of place move, so a focused row keeps its focus.
    const here = ui.rows.children[index] || null;
    if (here !== row) ui.rows.insertBefore(row, here);
  });
  view.dirty.clear();
  if (refocus && refocus.isConnected) focusRow(refocus);
  else if (!ui.rows.querySelector('tr[tabindex="0"]') && ui.rows.firstElementChild) {
    ui.rows.firstElementChild.tabIndex = 0;
  }
  ui.empty.hidden = sorted.length > 0 || view.snapshotting;
  ui.loadMore.hidden = !view.nextPageToken;
  renderStatus();
  renderDetail();
  renderParents();
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Sets a node's text only when it changed, so that a selection in it
 * (someone copying JSON) survives updates to other rows. */
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function createRow(name) {
  const row = element('tr');
  row.dataset.name = name;
  row.tabIndex = -1;
  const nameCell = row.insertCell();
  nameCell.className = 'col-name';
  nameCell.title = name;
  nameCell.append(element('span', 'op-id', idOf(name)));
  // Under a wildcard parent, which one it is.
  if (parentOf(name) !== view.parent) nameCell.append(element('span', 'op-parent', parentOf(name)));
  const stateCell = row.insertCell();
  stateCell.className = 'col-state';
  stateCell.append(element('span', 'state'), element('span', 'status-detail'));
  const progressCell = row.insertCell();
  progressCell.className = 'col-progress';
  const bar = element('progress');
  bar.max = 100;
  progressCell.append(bar, element('span', 'percent'));
  for (const column of ['verb', 'target', 'created', 'updated']) row.insertCell().className = `col-${column}`;
  row.cells[5].append(element('time'));
  row.cells[6].append(element('time'));
  return row;
}

function fillRow(row, operationView) {
  const standard = operationView.standard || {};
  const state = stateOf(operationView);
  row.dataset.state = state;
  fillBadge(row.querySelector('.state'), operationView);
  const detail = row.querySelector('.status-detail');
  detail.textContent = standard.statusDetail || '';
  detail.title = standard.statusDetail || '';
  const percent = Number(standard.progressPercent) || 0;
  const bar = row.querySelector('progress');
  bar.value = percent;
  bar.setAttribute('aria-label', `${percent}% done`);
  row.querySelector('.percent').textContent = `${percent}%`;
  row.cells[3].textContent = standard.verb || '';
  row.cells[4].textContent = standard.target || '';
  row.cells[4].title = standard.target || '';
  setTime(row.cells[5].firstChild, standard.createTime);
  setTime(row.cells[6].firstChild, standard.updateTime);
}

function fillBadge(badge, operationView) {
  const state = stateOf(operationView);
  const cancelling = isCancelling(operationView);
  badge.className = `state state-${cancelling ? 'cancelling' : state.toLowerCase()}`;
  badge.textContent = cancelling ? 'cancelling…' : state.toLowerCase();
  const error = operationView.operation.error;
  badge.title = error && typeof error.message === 'string' ? error.message : '';
}

function setTime(node, timestamp) {
  node.dateTime = timestamp || '';
  node.title = timestamp ? new Date(timestamp).toLocaleString() : '';
  node.textContent = relativeTime(timestamp, Date.now());
}

/** "3 s ago", "5 min ago", "2 h ago", "4 d ago". */
function relativeTime(timestamp, now) {
  const at = Date.parse(timestamp);
  if (Number.isNaN(at)) return '';
  const seconds = Math.round((now - at) / 1000);
  if (seconds < 1) return 'just now'; // or a clock a little ahead of ours
  if (seconds < 60) return `${seconds} s ago`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ago`;
  return `${Math.floor(hours / 24)} d ago`;
}

function tickClock() {
  const now = Date.now();
  for (const node of document.querySelectorAll('time[datetime]')) {
    node.textContent = relativeTime(node.dateTime, now);
  }
}

function setConnection(connection, problem) {
  view.connection = connection;
  view.problem = problem;
  renderStatus();
}

function renderStatus() {
  const count = view.operations.size;
  const words = {
    connecting: 'connecting…',
    loading: 'loading…',
    live: 'live',
    reconnecting: 'reconnecting…',
    token: 'waiting for a token',
    error: 'stopped',
  };
  const parts = [words[view.connection] || view.connection];
  if (view.connection !== 'error') parts.push(`${count} operation${count === 1 ? '' : 's'}`);
  if (view.nextPageToken) parts.push('older ones not loaded');
  if (view.problem) parts.push(view.problem);
  ui.status.textContent = parts.join(' · ');
  ui.status.dataset.state = view.connection;
}

/** An error the stream cannot get past: a bad filter points at its column. */
function showStreamError(err) {
  if (err.reason !== 'INVALID_FILTER') {
    setConnection('error', err.describe());
    return;
  }
  setConnection('error', 'the filter is not valid');
  const chars = Array.from(view.filter);
  const column = Math.max(1, Number(err.metadata.column) || 1);
  const where = ui.filterError.querySelector('.filter-error-where');
  where.replaceChildren(
    chars.slice(0, column - 1).join(''),
    element('mark', '', chars[column - 1] || ' '),
    chars.slice(column).join(''),
    `\n${' '.repeat(column - 1)}^ column ${column}`,
  );
  ui.filterError.querySelector('.filter-error-message').textContent = err.message;
  ui.filterError.hidden = false;
  ui.filter.setAttribute('aria-invalid', 'true');
  // Put the cursor where the problem is.
  const offset = chars.slice(0, column - 1).join('').length;
  ui.filter.focus();
  ui.filter.setSelectionRange(offset, offset);
}

function hideStreamError() {
  ui.filterError.hidden = true;
  ui.filter.removeAttribute('aria-invalid');
}

// --------------------------------------------------------- detail panel

function openDetail(name) {
  view.selected = name;
  view.selectedView = view.operations.get(name) || null;
  view.selectedGone = '';
  $('detail-error').hidden = true;
  ui.detail.hidden = false;
  ui.main.classList.add('with-detail');
  renderDetail();
  ui.detail.focus();
}

function closeDetail() {
  const row = view.rows.get(view.selected);
  view.selected = null;
  view.selectedView = null;
  ui.detail.hidden = true;
  ui.main.classList.remove('with-detail');
  for (const current of ui.rows.querySelectorAll('tr[aria-current]')) current.removeAttribute('aria-current');
  if (row && row.isConnected) focusRow(row);
}

function renderDetail() {
  for (const [name, row] of view.rows) {
    if (name === view.selected) row.setAttribute('aria-current', 'true');
    else row.removeAttribute('aria-current');
  }
  const operationView = view.selectedView;
  if (!view.selected || !operationView) return;
  const {operation, standard = {}} = operationView;
  $('detail-title').textContent = view.selected;
  fillBadge($('detail-badge'), operationView);
  let note = '';
  if (view.selectedGone) note = `Not in the list any more: ${view.selectedGone}.`;
  else if (isCancelling(operationView)) note = 'Cancel requested; waiting for the worker to stop.';
  $('detail-note').textContent = note;
  setText($('detail-operation'), JSON.stringify(operation, null, 2));
  setText($('detail-standard'), JSON.stringify({...standard, queue: operationView.queue}, null, 2));
  const deleted = view.selectedGone === 'deleted';
  $('cancel').disabled = deleted || Boolean(operation.done) || isCancelling(operationView);
  $('delete').disabled = deleted;
}

/** A modal question; resolves true on Confirm, false on Back or Escape. */
function confirmWith(title, text, confirmLabel) {
  $('confirm-title').textContent = title;
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = confirmLabel;
  // Escape closes without a value, leaving the last one: clear it first.
  ui.confirm.returnValue = '';
  ui.confirm.showModal();
  $('confirm-back').focus();
  return new Promise((resolve) => {
    ui.confirm.addEventListener('close', () => resolve(ui.confirm.returnValue === 'confirm'), {once: true});
  });
}

async function act(question, action) {
  const name = view.selected;
  if (!name || !(await confirmWith(...question(name)))) return;
  const error = $('detail-error');
  error.hidden = true;
  try {
    await withToken(() => action(name));
  } catch (err) {
    error.textContent = err instanceof ApiError ? err.describe() : `The request failed: ${err.message}`;
    error.hidden = false;
  }
}

const cancelSelected = () => act(
  (name) => [
    `Cancel ${idOf(name)}?`,
    `${name} will be cancelled: a queued operation ends at once, a running one is asked to stop.`,
    'Cancel operation',
  ],
  (name) => call('POST', `${encodePath(name)}:cancel`, {body: {}}),
);

const deleteSelected = () => act(
  (name) => [
    `Delete ${idOf(name)}?`,
    `${name} will be removed from lists and can no longer be read. Deleting does not cancel it.`,
    'Delete operation',
  ],
  (name) => call('DELETE', encodePath(name)),
);

// ------------------------------------------------------- parent and URL

function normalizeParent(text) {
  return text.trim().replace(/^\/*(v1\/)?/, '').replace(/\/+$/, '').replace(/(^|\/)operations$/, '');
}

function readLocation() {
  const params = new URLSearchParams(window.location.search);
  view.parent = params.has('parent') ? normalizeParent(params.get('parent')) : DEFAULT_PARENT;
  view.filter = (params.get('filter') || '').trim();
  view.pageSize = Math.min(1000, Math.max(1, Number.parseInt(params.get('pageSize'), 10) || PAGE_SIZE));
  ui.parent.value = view.parent;
  ui.filter.value = view.filter;
}

/** Puts the view in the address, so that a copied link opens it. Slashes
 * stay readable: they need no escaping in a query. */
function writeLocation() {
  const param = (key, value) => `${key}=${encodeURIComponent(value).replace(/%2F/g, '/')}`;
  const query = [param('parent', view.parent)];
  if (view.filter) query.push(param('filter', view.filter));
  if (view.pageSize !== PAGE_SIZE) query.push(param('pageSize', view.pageSize));
  window.history.replaceState(null, '', `${window.location.pathname}?${query.join('&')}`);
}

/** Parents seen in results this session, offered in the picker. */
const seenParents = new Set();

function rememberParent(parent) {
  seenParents.add(parent);
}

function recentParents() {
  try {
    const recent = JSON.parse(localStorage.getItem(RECENT_KEY) || '[]');
    return Array.isArray(recent) ? recent.filter((parent) => typeof parent === 'string') : [];
  } catch {
    return [];
  }
}

function rememberRecent(parent) {
  const recent = [parent, ...recentParents().filter((other) => other !== parent)].slice(0, RECENT_MAX);
  localStorage.setItem(RECENT_KEY, JSON.stringify(recent));
}

function renderParents() {
  const offered = [...new Set([...recentParents(), ...seenParents, DEFAULT_PARENT])].filter(Boolean).slice(0, 50);
  const current = [...ui.parents.options].map((option) => option.value);
  if (current.join('\n') === offered.join('\n')) return;
  ui.parents.replaceChildren(...offered.map((parent) => {
    const option = element('option');
    option.value = parent;
    return option;
  }));
}

function apply() {
  view.parent = normalizeParent(ui.parent.value);
  view.filter = ui.filter.value.trim();
  ui.parent.value = view.parent;
  writeLocation();
  rememberRecent(view.parent);
  hideStreamError();
  setConnection('connecting', '');
  restartWatch({fresh: true});
}

// ------------------------------------------------------------- keyboard

/** Rows form one tab stop (a roving tabindex): Tab reaches the table,
 * arrows move within it. */
function focusRow(row) {
  for (const other of ui.rows.querySelectorAll('tr[tabindex="0"]')) other.tabIndex = -1;
  row.tabIndex = 0;
  row.focus();
}

function onRowKey(event) {
  const row = event.target.closest('tr');
  if (!row || event.target !== row || event.ctrlKey || event.metaKey || event.altKey) return;
  const moves = {
    ArrowDown: row.nextElementSibling,
    j: row.nextElementSibling,
    ArrowUp: row.previousElementSibling,
    k: row.previousElementSibling,
    Home: ui.rows.firstElementChild,
    End: ui.rows.lastElementChild,
  };
  if (event.key in moves) {
    event.preventDefault();
    if (moves[event.key]) focusRow(moves[event.key]);
  } else if (event.key === 'Enter' || event.key === ' ') {
    event.preventDefault();
    openDetail(row.dataset.name);
  }
}

function onPageKey(event) {
  if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
  if (ui.confirm.open || ui.tokenDialog.open) return; // the dialog has the keyboard
  const typing = event.target.closest && event.target.closest('input, textarea, select');
  if (event.key === '/' && !typing) {
    event.preventDefault();
    ui.filter.focus();
    ui.filter.select();
  } else if (event.key === 'Escape' && view.selected) {
    event.preventDefault();
    closeDetail();
  } else if (event.key === 'ArrowDown' && event.target === ui.filter && ui.rows.firstElementChild) {
    event.preventDefault();
    focusRow(ui.rows.querySelector('tr[tabindex="0"]') || ui.rows.firstElementChild);
  }
}

// ---------------------------------------------------------------- start

function start() {
  readLocation();
  ui.form.addEventListener('submit', (event) => {
    event.preventDefault();
    apply();
  });
  ui.rows.addEventListener('click', (event) => {
    const row = event.target.closest('tr');
    if (!row) return;
    focusRow(row);
    openDetail(row.dataset.name);
  });
  ui.rows.addEventListener('keydown', onRowKey);
  document.addEventListener('keydown', onPageKey);
  ui.loadMore.addEventListener('click', loadOlder);
  $('detail-close').addEventListener('click', closeDetail);
  $('cancel').addEventListener('click', cancelSelected);
  $('delete').addEventListener('click', deleteSelected);
  $('confirm-ok').addEventListener('click', () => ui.confirm.close('confirm'));
  $('confirm-back').addEventListener('click', () => ui.confirm.close('back'));
  $('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const value = ui.token.value.trim();
    ui.token.value = '';
    ui.tokenDialog.close();
    useToken(value);
  });
  $('token-forget').addEventListener('click', () => {
    ui.token.value = '';
    ui.tokenDialog.close();
    useToken('');
  });
  $('token-button').addEventListener('click', () => ui.tokenDialog.showModal());
  $('token-button').hidden = !token;
  setInterval(tickClock, CLOCK_TICK_MS);
  writeLocation();
  renderParents();
  restartWatch({fresh: true});
}

start();
