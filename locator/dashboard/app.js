// The admin dashboard: one page, plain JavaScript, no build step and nothing fetched from another
// origin. It calls the same admin API as the CLI (/api/v1/admin), authenticated by the login
// cookie the locator sets (HttpOnly: this script never sees it) plus the login's CSRF token on
// every change.
//
// Layout of this file:
//   - DOM and formatting helpers: `h` builds elements (never innerHTML: every value from the API
//     goes in as text), `svg` builds chart elements.
//   - `call`: the one place requests are made; errors become `ApiError` with the server's message.
//   - the status line, the login screen, the session, hash routing and the 2-second refresh loop.
//   - one class per page (Edges, Sessions, Audit log, Regions, Usage).
//
// Live updates: the page on screen re-reads its data every REFRESH_MS while the tab is visible.
// A refresh only replaces tables and charts (and only the cells that changed on the Edges page):
// forms, filters and an open drain form are built once and left alone. Each page runs its
// requests one after another (`Page.serial`), so a refresh begun before a change never paints
// the state from before it over the state after it.
//
// The Content-Security-Policy allows no inline script or style: handlers are attached with
// addEventListener, looks come from classes in app.css.

/** Re-read the page on screen this often (ms): a change made elsewhere shows within ~2 s. */
const REFRESH_MS = 2000;
/** Info messages in the status line go away after this long (ms); errors stay until replaced. */
const INFO_MESSAGE_MS = 6000;
/** Rows per page of the sessions and audit lists. */
const SESSIONS_PAGE = 50;
const AUDIT_PAGE = 100;
/** A refresh re-reads at most this many pages of a list; past it the list stops updating. */
const MAX_RELOAD_PAGES = 10;
/** The longest drain deadline the API takes (a day), and the one the form proposes. */
const MAX_DRAIN_SECONDS = 86400;
const DEFAULT_DRAIN_SECONDS = 300;
/** Usage ranges: how far back, and the step that gives 60 to 168 points. */
const USAGE_RANGES = {
  '1h': { label: 'Last hour', ms: 3600e3, step: 60 },
  '24h': { label: 'Last 24 hours', ms: 86400e3, step: 600 },
  '7d': { label: 'Last 7 days', ms: 7 * 86400e3, step: 3600 },
};
/** Audit kinds offered as suggestions in the filter (the field takes any kind). */
const AUDIT_KINDS = [
  'edge_suspended', 'edge_resumed', 'edge_draining', 'edge_drained', 'edge_region_set',
  'edge_unavailable', 'edge_recovered', 'region_rule_added', 'region_rule_deleted',
  'region_fallback_set', 'token_created', 'token_revoked', 'client_key_created',
  'client_key_revoked', 'dashboard_login', 'dashboard_logout', 'session_started', 'session_ended',
  'session_ended_by_locator', 'session_restored', 'participant_joined', 'participant_left',
  'participant_away', 'participant_resumed', 'participant_admitted', 'participant_refused',
  'presence_moved', 'outbox_overflow', 'media_connected', 'media_closed', 'track_published',
  'track_unpublished',
];

// The locator's base URL: this script is <base>/dashboard/app.js, so a locator served under a
// path prefix works as long as index.html names its files under the same prefix.
const ROOT = new URL('../', import.meta.url);
const ADMIN = 'api/v1/admin';
const LOGIN_API = 'dashboard/api';

// ---------------------------------------------------------------------------------------------
// DOM helpers

const $ = (id) => document.getElementById(id);

/** Properties set as attributes (the element has no writable property of that name). */
const ATTRIBUTES = new Set(['list', 'role', 'for']);

/**
 * Builds an element. `props`: `class`, `text`, `testid`, `data` (dataset entries), `on` (event
 * listeners), attributes with a dash or in ATTRIBUTES, and any other element property; null and
 * undefined props are skipped. Children may be nodes, strings, numbers, arrays of those, or
 * null/false (skipped).
 */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = String(value);
    else if (key === 'testid') el.dataset.testid = value;
    else if (key === 'data') Object.assign(el.dataset, value);
    else if (key === 'on') for (const [event, fn] of Object.entries(value)) el.addEventListener(event, fn);
    else if (key === 'style') throw new Error('inline styles are refused by the CSP: use a class');
    else if (key.includes('-') || ATTRIBUTES.has(key)) el.setAttribute(key, String(value));
    else el[key] = value;
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

const SVG_NS = 'http://www.w3.org/2000/svg';

/** Builds an SVG element; every prop is an attribute except `class` and `text`. */
function svg(tag, props = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === 'text') el.textContent = String(value);
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

/** Replaces `el`'s children with `build()`'s only when `key` changed since the last fill. */
const filledWith = new WeakMap();
function fill(el, key, build) {
  if (filledWith.get(el) === key) return;
  filledWith.set(el, key);
  el.replaceChildren();
  append(el, [build()]);
}

/** A small colored label; its class follows the value (see app.css). */
function badge(value, testid) {
  return h('span', { class: `badge badge-${String(value).replace(/[^a-z_]/g, '')}`, text: value, testid });
}

function headRow(...names) {
  return h('thead', {}, h('tr', {}, names.map((n) => h('th', { text: n }))));
}

/** A form field: a label around its title and input. */
function field(title, input) {
  return h('label', { class: 'field' }, h('span', { class: 'field-title', text: title }), input);
}

const dash = '—';
const orDash = (v) => (v === null || v === undefined || v === '' ? dash : String(v));

// ---------------------------------------------------------------------------------------------
// Formatting

const pad = (n) => String(n).padStart(2, '0');
const numberFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const fmtNum = (n) => (typeof n === 'number' && Number.isFinite(n) ? numberFormat.format(n) : dash);

/** Local date and time, `2025-01-31 14:02:03`. */
function fmtTime(iso) {
  if (!iso) return dash;
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${fmtClock(iso)}`;
}

/** Local time of day, `14:02:03`. */
function fmtClock(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** `42 s`, `5 min 3 s`, `2 h 10 min`, `3 d 4 h`. */
function fmtDuration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return s % 60 ? `${m} min ${s % 60} s` : `${m} min`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return m % 60 ? `${hours} h ${m % 60} min` : `${hours} h`;
  const d = Math.floor(hours / 24);
  return hours % 24 ? `${d} d ${hours % 24} h` : `${d} d`;
}

// The server's clock, estimated from the Date header of its answers: relative times ("2 s ago")
// compare the server's timestamps with it, so a browser whose clock is off still reads right.
// Date has a resolution of a second, so only an offset clearly larger than that is applied.
let clockOffsetMs = 0;
function noteServerClock(response) {
  const serverMs = Date.parse(response.headers.get('date') ?? '');
  if (Number.isNaN(serverMs)) return;
  const offset = serverMs - Date.now();
  clockOffsetMs = Math.abs(offset) > 5000 ? offset : 0;
}
const serverNow = () => Date.now() + clockOffsetMs;

function ago(iso) {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? orDash(iso) : `${fmtDuration(serverNow() - t)} ago`;
}

function fromNow(iso) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return orDash(iso);
  const ms = t - serverNow();
  return ms > 0 ? `in ${fmtDuration(ms)}` : 'deadline passed';
}

// ---------------------------------------------------------------------------------------------
// Requests

/** An error answer, or an unreachable locator (`status` 0). */
class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/**
 * Calls the locator. `query` entries that are empty are left out; `body` is sent as JSON. Every
 * change carries the CSRF token. Answers the parsed JSON (null for an empty answer), or throws
 * ApiError with the server's message.
 */
async function call(method, path, { query, body } = {}) {
  const url = new URL(path, ROOT);
  for (const [key, value] of Object.entries(query ?? {})) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(key, String(value));
  }
  const headers = { Accept: 'application/json' };
  if (method !== 'GET' && session) headers['X-CSRF-Token'] = session.csrf;
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  let text;
  try {
    response = await fetch(url, init);
    text = await response.text();
  } catch {
    throw new ApiError(0, 'unreachable', 'Cannot reach the locator: is it running, and is the network up?');
  }
  noteServerClock(response);
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const error = data?.error;
    throw new ApiError(
      response.status,
      error?.code ?? `http_${response.status}`,
      error?.message ?? `${method} ${url.pathname} failed with HTTP ${response.status}.`,
    );
  }
  return data;
}

const seg = encodeURIComponent;
const edgePath = (id, action) => `${ADMIN}/edges/${seg(id)}/${action}`;

// ---------------------------------------------------------------------------------------------
// Status line: one message at a time. `source` says who may clear it: a successful refresh
// clears only a refresh's error ('poll'), not the message of an action the admin just took.

let statusSource = null;
let statusSerial = 0;

function showStatus(text, kind = 'error', source = 'action') {
  const el = $('status');
  el.className = `status status-${kind}`;
  el.dataset.kind = kind;
  $('status-text').textContent = text;
  el.hidden = false;
  statusSource = source;
  const serial = ++statusSerial;
  if (kind === 'info') {
    setTimeout(() => {
      if (statusSerial === serial) clearStatus();
    }, INFO_MESSAGE_MS);
  }
}

function clearStatus(source) {
  if (source && source !== statusSource) return;
  statusSource = null;
  statusSerial++;
  $('status').hidden = true;
  $('status-text').textContent = '';
}

/** Shows an error; a 401 from any call ends the session and goes back to the login screen. */
function report(error, source = 'action') {
  if (error instanceof ApiError && error.status === 401) {
    if (session) endSession('Your dashboard session has ended: log in again.');
    return;
  }
  if (!(error instanceof ApiError)) console.error(error);
  showStatus(error.message || String(error), 'error', source);
}

// ---------------------------------------------------------------------------------------------
// Session, login and logout

/** `{principal, scope, csrf}` while logged in, else null. */
let session = null;
/** The page on screen. */
let page = null;
let pollTimer = 0;

function startSession(s) {
  session = s;
  $('login').hidden = true;
  $('login-token').value = '';
  $('login-password').value = '';
  $('app').hidden = false;
  $('nav').hidden = false;
  $('who').hidden = false;
  $('principal').textContent = s.principal;
  const scope = $('scope');
  scope.textContent = s.scope === 'admin' ? 'admin' : 'read only';
  scope.className = `badge badge-scope-${s.scope === 'admin' ? 'admin' : 'read'}`;
  route();
}

function endSession(message) {
  session = null;
  clearTimeout(pollTimer);
  page?.leave();
  page = null;
  $('app').replaceChildren();
  $('app').hidden = true;
  $('nav').hidden = true;
  $('who').hidden = true;
  $('updated').textContent = '';
  document.title = 'duet admin';
  showLogin();
  if (message) showStatus(message, 'error', 'session');
}

async function showLogin() {
  $('login').hidden = false;
  $('login-token').focus();
  try {
    const options = await call('GET', `${LOGIN_API}/login-options`);
    $('login-password-form').hidden = !options?.password;
  } catch {
    $('login-password-form').hidden = true; // the token form still works
  }
}

async function logIn(form, body) {
  const submit = form.querySelector('button[type=submit]');
  submit.disabled = true;
  try {
    const s = await call('POST', `${LOGIN_API}/login`, { body });
    clearStatus();
    startSession(s);
  } catch (e) {
    showStatus(e.message, 'error', 'login');
    const secret = form.querySelector('input[type=password]');
    secret.select();
    secret.focus();
  } finally {
    submit.disabled = false;
  }
}

async function logOut() {
  const button = $('logout');
  button.disabled = true;
  try {
    await call('POST', `${LOGIN_API}/logout`);
    endSession();
    showStatus('Logged out.', 'info');
  } catch (e) {
    if (e.status === 401) endSession();
    else report(e);
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------------------------------------
// Routing and the refresh loop

/** Route name → the page's class, filled in after each class. */
const PAGES = {};
/** Route name → the page's title. */
const TITLES = { edges: 'Edges', sessions: 'Sessions', audit: 'Audit log', regions: 'Regions', usage: 'Usage' };

function routeName() {
  const m = /^#\/([a-z]+)/.exec(location.hash);
  return m && PAGES[m[1]] ? m[1] : null;
}

function route() {
  if (!session) return;
  let name = routeName();
  if (!name) {
    name = 'edges';
    history.replaceState(null, '', '#/edges');
  }
  if (page?.name === name) return;
  page?.leave();
  clearStatus();
  const root = $('app');
  root.replaceChildren();
  window.scrollTo(0, 0);
  const Kind = PAGES[name];
  page = new Kind(root);
  page.name = name;
  document.title = `${TITLES[name]} · duet admin`;
  for (const link of document.querySelectorAll('#nav a')) {
    const current = link.dataset.page === name;
    link.classList.toggle('current', current);
    if (current) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  poll();
}

/** Refreshes the page on screen now, then every REFRESH_MS while logged in. */
async function poll() {
  clearTimeout(pollTimer);
  if (!session || !page) return;
  const current = page;
  if (!document.hidden) {
    try {
      await current.serial(() => current.refresh());
      if (current === page) {
        clearStatus('poll');
        $('updated').textContent = `Updated ${fmtClock(new Date().toISOString())}`;
      }
    } catch (e) {
      if (current === page || e.status === 401) report(e, 'poll');
    }
  }
  if (session && current === page) {
    clearTimeout(pollTimer);
    pollTimer = setTimeout(poll, REFRESH_MS);
  }
}

/** A page: builds its frame once, then `refresh()` reads and shows its data. */
class Page {
  constructor() {
    this.alive = true;
    this.queue = Promise.resolve();
    this.admin = session?.scope === 'admin';
  }

  /** Runs `fn` after every earlier request of this page has finished; answers its result. */
  serial(fn) {
    const run = this.queue.then(() => (this.alive ? fn() : undefined));
    this.queue = run.catch(() => {});
    return run;
  }

  /**
   * Runs an admin's change: `button` is disabled meanwhile, the page is refreshed after, and
   * an error is shown. `change()` may answer a message for the status line.
   */
  async act(button, change) {
    if (button) button.disabled = true;
    try {
      await this.serial(async () => {
        const message = await change();
        if (message) showStatus(message, 'info');
        await this.refresh();
      });
    } catch (e) {
      report(e);
    } finally {
      if (button) button.disabled = false;
    }
  }

  leave() {
    this.alive = false;
  }
}

/**
 * A list read page by page through `next_cursor`. A refresh re-reads as many pages as are
 * shown (up to MAX_RELOAD_PAGES), so new entries appear in place and "Load more" keeps working.
 */
class PagedList {
  /** `read(cursor)` answers `{items, next_cursor}`. */
  constructor(read) {
    this.read = read;
    this.items = [];
    this.cursor = null;
    this.pages = 1;
  }

  /** Starts over at the first page (after the filters changed). */
  reset() {
    this.items = [];
    this.cursor = null;
    this.pages = 1;
  }

  async reload() {
    if (this.pages > MAX_RELOAD_PAGES) return;
    const items = [];
    let cursor = null;
    for (let i = 0; i < this.pages; i++) {
      const page = await this.read(cursor);
      items.push(...page.items);
      cursor = page.next_cursor ?? null;
      if (!cursor) break;
    }
    this.items = items;
    this.cursor = cursor;
  }

  async more() {
    if (!this.cursor) return;
    const page = await this.read(this.cursor);
    this.items.push(...page.items);
    this.cursor = page.next_cursor ?? null;
    this.pages++;
  }
}

function loadMoreButton(testid, onClick) {
  return h('button', { type: 'button', class: 'btn more', text: 'Load more', testid, hidden: true, on: { click: onClick } });
}

// ---------------------------------------------------------------------------------------------
// Edges

const EDGE_COLUMNS = [
  ['id', 'Edge'], ['region', 'Region'], ['state', 'State'], ['health', 'Health'], ['cpu', 'CPU'],
  ['lag', 'Loop lag'], ['connections', 'Connections'], ['sessions', 'Sessions'], ['build', 'Build'],
  ['heartbeat', 'Last heartbeat'], ['outbox', 'Outbox'],
];

class EdgesPage extends Page {
  constructor(root) {
    super();
    /** Edge id → its row and cells; rows are updated in place, never rebuilt. */
    this.rows = new Map();
    /** Ids of the edges whose drain form is open. */
    this.drainFormOpen = new Set();
    this.summary = h('span', { class: 'summary', testid: 'edges-summary' });
    this.body = h('tbody');
    this.empty = h('p', { class: 'empty', text: 'No edge has registered with this locator yet.', hidden: true });
    const columns = EDGE_COLUMNS.map(([, title]) => title);
    if (this.admin) columns.push('Actions');
    root.append(
      h('div', { class: 'page-head' }, h('h1', { text: 'Edges' }), this.summary),
      h('div', { class: 'table-wrap' }, h('table', { class: 'grid', testid: 'edges-table' }, headRow(...columns), this.body)),
      this.empty,
    );
  }

  async refresh() {
    const { edges } = await call('GET', `${ADMIN}/edges`);
    if (!this.alive) return;
    const sorted = [...edges].sort((a, b) => a.id.localeCompare(b.id, undefined, { numeric: true }));
    const seen = new Set();
    sorted.forEach((edge, i) => {
      let row = this.rows.get(edge.id);
      if (!row) {
        row = this.newRow(edge.id);
        this.rows.set(edge.id, row);
      }
      this.fillRow(row, edge);
      seen.add(edge.id);
      const there = this.body.children[i] ?? null;
      if (there !== row.tr) this.body.insertBefore(row.tr, there);
    });
    for (const [id, row] of this.rows) {
      if (seen.has(id)) continue;
      row.tr.remove();
      this.rows.delete(id);
      this.drainFormOpen.delete(id);
    }
    this.empty.hidden = sorted.length > 0;
    const count = (pred) => sorted.filter(pred).length;
    const parts = [`${sorted.length} ${sorted.length === 1 ? 'edge' : 'edges'}`, `${count((e) => e.health === 'up')} up`];
    for (const state of ['suspended', 'draining']) {
      const n = count((e) => e.admin_state === state);
      if (n) parts.push(`${n} ${state}`);
    }
    const down = count((e) => e.health !== 'up');
    if (down) parts.push(`${down} not up`);
    this.summary.textContent = parts.join(' · ');
  }

  newRow(id) {
    const tr = h('tr', { testid: 'edge-row', data: { edgeId: id } });
    const cells = {};
    const names = EDGE_COLUMNS.map(([name]) => name);
    if (this.admin) names.push('actions');
    for (const name of names) {
      cells[name] = h('td', { class: `col-${name}` });
      tr.append(cells[name]);
    }
    return { tr, cells, edge: null };
  }

  /** Brings a row up to date with `e`, touching only the cells whose content changed. */
  fillRow(row, e) {
    row.edge = e;
    row.tr.dataset.state = e.admin_state;
    row.tr.dataset.health = e.health;
    const c = row.cells;
    const key = (...parts) => JSON.stringify(parts);

    fill(c.id, key(e.id, e.public_url), () => h('span', { class: 'mono', text: e.id, title: e.public_url, testid: 'edge-id' }));
    fill(c.region, key(e.region, e.region_override, e.reported_region), () => [
      h('span', { text: e.region, testid: 'edge-region' }),
      e.region_override ? h('div', { class: 'sub', text: `override; reports ${e.reported_region}` }) : null,
    ]);

    const deadline = e.admin_state === 'draining' ? e.drain_deadline : null;
    const remaining = deadline ? fromNow(deadline) : '';
    fill(c.state, key(e.admin_state, deadline, remaining), () => [
      badge(e.admin_state, 'edge-state'),
      deadline ? h('div', { class: 'sub', title: `Remaining sessions end at ${fmtTime(deadline)}`, testid: 'edge-drain-deadline', data: { deadline } },
        `until ${fmtClock(deadline)}`, h('br'), remaining) : null,
    ]);

    const placing = e.available || e.health !== 'up' || e.admin_state !== 'active';
    fill(c.health, key(e.health, placing), () => [
      badge(e.health, 'edge-health'),
      placing ? null : h('div', { class: 'sub warn', text: 'no new sessions', title: 'Placement passes this edge by now: it is at capacity or overloaded.' }),
    ]);

    const load = e.load ?? {};
    const cpu = Number(load.cpu) || 0;
    fill(c.cpu, key(Math.round(cpu * 100)), () => [
      h('meter', { min: 0, max: 1, low: 0.6, high: 0.85, optimum: 0, value: Math.min(1, cpu), title: 'Share of the cores the edge may use' }),
      h('span', { class: 'num', text: `${Math.round(cpu * 100)} %`, testid: 'edge-cpu' }),
    ]);
    fill(c.lag, key(load.loop_lag_ms), () => h('span', { class: load.loop_lag_ms > 100 ? 'num warn' : 'num', text: `${fmtNum(load.loop_lag_ms)} ms`, testid: 'edge-loop-lag' }));

    const cap = e.capacity ?? {};
    const ofMax = (n, max) => (max > 0 ? `${fmtNum(n)} / ${fmtNum(max)}` : fmtNum(n));
    fill(c.connections, key(load.connections, cap.max_connections), () => h('span', { class: 'num', text: ofMax(load.connections, cap.max_connections), testid: 'edge-connections' }));
    fill(c.sessions, key(load.sessions, cap.max_sessions), () => h('span', { class: 'num', text: ofMax(load.sessions, cap.max_sessions), testid: 'edge-sessions' }));
    fill(c.build, key(e.build), () => h('span', { class: 'mono small', text: orDash(e.build), testid: 'edge-build' }));
    const beat = ago(e.last_heartbeat_at);
    fill(c.heartbeat, key(beat), () => h('span', { text: beat, title: fmtTime(e.last_heartbeat_at), testid: 'edge-heartbeat' }));

    const ob = e.outbox ?? {};
    const dropped = (ob.dropped_audit ?? 0) + (ob.dropped_metrics ?? 0);
    fill(c.outbox, key(ob.depth, ob.oldest_age_ms, dropped), () => [
      h('span', {
        class: 'num',
        text: fmtNum(ob.depth),
        title: `Entries not yet stored by a locator; oldest ${fmtDuration(ob.oldest_age_ms ?? 0)} old. Last sequence ${ob.last_seq ?? dash}.`,
        testid: 'edge-outbox',
      }),
      dropped ? h('div', { class: 'sub warn', text: `${fmtNum(dropped)} dropped`, title: `audit ${ob.dropped_audit}, metrics ${ob.dropped_metrics} since the edge started` }) : null,
    ]);

    if (c.actions) {
      fill(c.actions, key(e.admin_state, this.drainFormOpen.has(e.id)), () => (this.drainFormOpen.has(e.id) ? this.drainForm(row) : this.buttons(row)));
    }
  }

  buttons(row) {
    const { id, admin_state: state } = row.edge;
    const suspend = h('button', {
      type: 'button', class: 'btn btn-small', text: 'Suspend', testid: 'suspend-button', disabled: state === 'suspended',
      title: 'Keep its sessions; give it new ones only when no other edge can take them',
      on: { click: () => this.act(suspend, async () => {
        await call('POST', edgePath(id, 'suspend'));
        return `Edge ${id} suspended: it keeps its sessions and gets new ones only when no other edge can take them.`;
      }) },
    });
    const resume = h('button', {
      type: 'button', class: 'btn btn-small', text: 'Resume', testid: 'resume-button', disabled: state === 'active',
      title: 'Take new sessions again (cancels a drain)',
      on: { click: () => this.act(resume, async () => {
        await call('POST', edgePath(id, 'resume'));
        return `Edge ${id} resumed: it takes new sessions again.`;
      }) },
    });
    const drain = h('button', {
      type: 'button', class: 'btn btn-small', text: 'Drain…', testid: 'drain-button', disabled: state === 'draining',
      title: 'Stop new sessions and end the remaining ones at a deadline',
      on: { click: () => this.openDrainForm(row, true) },
    });
    return h('div', { class: 'actions' }, suspend, resume, drain);
  }

  openDrainForm(row, open) {
    if (open) this.drainFormOpen.add(row.edge.id);
    else this.drainFormOpen.delete(row.edge.id);
    this.fillRow(row, row.edge);
    const input = row.cells.actions.querySelector('input');
    if (input) {
      input.focus();
      input.select();
    } else {
      row.cells.actions.querySelector('button:not([disabled])')?.focus();
    }
  }

  drainForm(row) {
    const id = row.edge.id;
    const seconds = h('input', {
      type: 'number', min: 1, max: MAX_DRAIN_SECONDS, step: 1, value: String(DEFAULT_DRAIN_SECONDS), required: true,
      class: 'input-seconds', testid: 'drain-seconds', 'aria-label': 'Drain deadline in seconds',
      on: { keydown: (ev) => ev.key === 'Escape' && this.openDrainForm(row, false) },
    });
    const confirm = h('button', { type: 'submit', class: 'btn btn-small btn-warn', text: 'Drain', testid: 'drain-confirm' });
    const form = h('form', {
      class: 'inline-form', testid: 'drain-form',
      on: { submit: (ev) => {
        ev.preventDefault();
        const deadlineSeconds = Number(seconds.value);
        this.act(confirm, async () => {
          const edge = await call('POST', edgePath(id, 'drain'), { body: { deadline_seconds: deadlineSeconds } });
          this.drainFormOpen.delete(id);
          const until = edge?.drain_deadline ? ` at ${fmtTime(edge.drain_deadline)}` : ` in ${fmtDuration(deadlineSeconds * 1000)}`;
          return `Edge ${id} is draining: its remaining sessions end${until}.`;
        });
      } },
    },
    h('span', { class: 'small', text: 'end sessions in' }), seconds, h('span', { class: 'small', text: 's' }), confirm,
    h('button', { type: 'button', class: 'btn btn-small btn-quiet', text: 'Cancel', testid: 'drain-cancel', on: { click: () => this.openDrainForm(row, false) } }));
    return form;
  }
}
PAGES.edges = EdgesPage;

// ---------------------------------------------------------------------------------------------
// Sessions

class SessionsPage extends Page {
  constructor(root) {
    super();
    this.query = { state: 'live', edge: '', team: '' };
    this.list = new PagedList(async (cursor) => {
      const page = await call('GET', `${ADMIN}/sessions`, { query: { ...this.query, limit: SESSIONS_PAGE, cursor } });
      return { items: page.sessions, next_cursor: page.next_cursor };
    });
    /** The session whose detail is open, and the last rendering of the list and detail. */
    this.selected = null;
    this.shownList = null;
    this.shownDetail = null;

    this.stateButtons = ['live', 'ended'].map((state) => h('button', {
      type: 'button', class: 'seg', text: state === 'live' ? 'Live' : 'Ended', testid: `sessions-${state}`,
      'aria-pressed': String(state === 'live'), data: { state },
      on: { click: () => this.setQuery({ state }) },
    }));
    const edge = h('input', { type: 'text', placeholder: 'any', spellcheck: false, testid: 'sessions-filter-edge' });
    const team = h('input', { type: 'text', placeholder: 'any', spellcheck: false, testid: 'sessions-filter-team' });
    const filters = h('form', {
      class: 'filters', testid: 'sessions-filters',
      on: { submit: (ev) => {
        ev.preventDefault();
        this.setQuery({ edge: edge.value.trim(), team: team.value.trim() });
      } },
    },
    h('div', { class: 'seg-group', role: 'group', 'aria-label': 'Session state' }, this.stateButtons),
    field('Edge', edge), field('Team', team),
    h('button', { type: 'submit', class: 'btn', text: 'Apply', testid: 'sessions-apply' }));

    this.summary = h('span', { class: 'summary', testid: 'sessions-summary' });
    this.body = h('tbody');
    this.more = loadMoreButton('sessions-more', () => this.act(this.more, () => this.list.more()));
    this.detail = h('aside', { class: 'detail', testid: 'session-detail', hidden: true });
    root.append(
      h('div', { class: 'page-head' }, h('h1', { text: 'Sessions' }), this.summary),
      filters,
      h('div', { class: 'split' },
        h('div', { class: 'split-main' },
          h('div', { class: 'table-wrap' }, h('table', { class: 'grid clickable', testid: 'sessions-table' },
            headRow('Session', 'Edge', 'Team', 'Created', 'Started', 'Ended', 'End reason', 'Participants'), this.body)),
          this.more),
        this.detail),
    );
  }

  setQuery(change) {
    if (change.state) {
      for (const b of this.stateButtons) b.setAttribute('aria-pressed', String(b.dataset.state === change.state));
    }
    this.act(null, () => {
      Object.assign(this.query, change);
      this.list.reset();
      this.selected = null;
    });
  }

  async refresh() {
    const [, detail] = await Promise.all([
      this.list.reload(),
      this.selected ? this.readDetail(this.selected) : null,
    ]);
    if (!this.alive) return;
    this.renderList();
    this.renderDetail(detail);
  }

  /** The session's detail, or `{missing: id}` when it is gone. */
  async readDetail(id) {
    try {
      return await call('GET', `${ADMIN}/sessions/${seg(id)}`);
    } catch (e) {
      if (e.status === 404) return { missing: id };
      throw e;
    }
  }

  select(id) {
    this.act(null, () => {
      this.selected = this.selected === id ? null : id;
    });
  }

  renderList() {
    const items = this.list.items;
    const key = JSON.stringify([items, this.selected, this.list.cursor]);
    this.more.hidden = !this.list.cursor;
    const state = this.query.state === 'live' ? 'live' : 'ended';
    this.summary.textContent = `${items.length}${this.list.cursor ? '+' : ''} ${state} ${items.length === 1 ? 'session' : 'sessions'}`;
    if (key === this.shownList) return;
    this.shownList = key;
    if (!items.length) {
      this.body.replaceChildren(h('tr', { class: 'empty-row' }, h('td', { colSpan: 8, text: `No ${state} session matches.` })));
      return;
    }
    this.body.replaceChildren(...items.map((s) => h('tr', {
      testid: 'session-row', data: { sessionId: s.id }, tabIndex: 0,
      class: s.id === this.selected ? 'selected' : '',
      on: {
        click: () => this.select(s.id),
        keydown: (ev) => (ev.key === 'Enter' || ev.key === ' ') && (ev.preventDefault(), this.select(s.id)),
      },
    },
    h('td', { class: 'mono', text: s.id }),
    h('td', { class: 'mono', text: orDash(s.edge_id) }),
    h('td', { text: orDash(s.team) }),
    h('td', { class: 'nowrap', text: fmtTime(s.created_at), title: s.created_at }),
    h('td', { class: 'nowrap', text: fmtTime(s.started_at), title: s.started_at ?? '' }),
    h('td', { class: 'nowrap', text: fmtTime(s.ended_at), title: s.ended_at ?? '' }),
    h('td', { text: orDash(s.end_reason) }),
    h('td', { class: 'num', text: fmtNum(s.participant_count) }))));
  }

  renderDetail(detail) {
    const key = JSON.stringify(detail);
    if (key === this.shownDetail) return;
    this.shownDetail = key;
    this.detail.hidden = !detail;
    if (!detail) {
      this.detail.replaceChildren();
      return;
    }
    const close = h('button', { type: 'button', class: 'btn btn-quiet btn-small', text: 'Close', testid: 'session-detail-close', on: { click: () => this.select(this.selected) } });
    if (detail.missing) {
      this.detail.replaceChildren(h('div', { class: 'detail-head' }, h('h2', { text: 'Session' }), close),
        h('p', { class: 'empty', text: `Session ${detail.missing} is not known (any more).` }));
      return;
    }
    const s = detail.session;
    const row = (title, value) => [h('dt', { text: title }), h('dd', {}, value)];
    const participants = detail.participants ?? [];
    this.detail.replaceChildren(
      h('div', { class: 'detail-head' }, h('h2', {}, 'Session ', h('span', { class: 'mono', text: s.id, testid: 'session-detail-id' })), close),
      h('dl', { class: 'facts' },
        row('State', badge(s.ended_at ? 'ended' : 'live')),
        row('Edge', h('span', { class: 'mono', text: orDash(s.edge_id) })),
        row('Team', orDash(s.team)),
        row('Created', fmtTime(s.created_at)),
        row('Started', fmtTime(s.started_at)),
        row('Ended', fmtTime(s.ended_at)),
        row('End reason', orDash(s.end_reason)),
        row('Host approves joins', s.require_approval ? 'yes' : 'no'),
        row('Max participants', s.max_participants ?? 'no limit')),
      h('h3', { text: `Participants (${participants.length})` }),
      participants.length
        ? h('div', { class: 'table-wrap' }, h('table', { class: 'grid compact', testid: 'participants-table' },
          headRow('#', 'Role', 'Name', 'User', 'Joined'),
          h('tbody', {}, participants.map((p) => h('tr', { testid: 'participant-row', data: { participantId: String(p.participant_id) } },
            h('td', { class: 'num', text: p.participant_id }),
            h('td', {}, badge(p.role)),
            h('td', { text: orDash(p.display_name) }),
            h('td', { class: 'mono', text: orDash(p.user_id) }),
            h('td', { class: 'nowrap', text: fmtClock(p.created_at), title: fmtTime(p.created_at) }))))))
        : h('p', { class: 'empty', text: 'Nobody has joined.' }),
    );
  }
}
PAGES.sessions = SessionsPage;

// ---------------------------------------------------------------------------------------------
// Audit log

/** A datetime-local value (local time, no zone) as RFC 3339 in UTC; '' stays ''. */
function localToRfc3339(value) {
  if (!value) return '';
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}

class AuditPage extends Page {
  constructor(root) {
    super();
    /** The filters applied (the inputs may hold edits not yet applied). */
    this.query = {};
    this.list = new PagedList(async (cursor) => {
      const page = await call('GET', `${ADMIN}/audit`, { query: { ...this.query, order: 'desc', limit: AUDIT_PAGE, cursor } });
      return { items: page.entries, next_cursor: page.next_cursor };
    });
    this.shown = null;

    const kinds = h('datalist', { id: 'audit-kinds' }, AUDIT_KINDS.map((k) => h('option', { value: k })));
    const input = (name, props = {}) => h('input', { type: 'text', name, spellcheck: false, placeholder: 'any', testid: `audit-filter-${name}`, ...props });
    this.inputs = {
      kind: input('kind', { list: 'audit-kinds' }),
      actor: input('actor'),
      edge: input('edge'),
      session: input('session'),
      from: h('input', { type: 'datetime-local', name: 'from', step: 1, testid: 'audit-filter-from' }),
      to: h('input', { type: 'datetime-local', name: 'to', step: 1, testid: 'audit-filter-to' }),
    };
    const i = this.inputs;
    const form = h('form', {
      class: 'filters', testid: 'audit-filters',
      on: {
        submit: (ev) => {
          ev.preventDefault();
          this.apply();
        },
        reset: () => setTimeout(() => this.apply()), // after the inputs are cleared
      },
    },
    field('Kind', i.kind), field('Actor', i.actor), field('Edge', i.edge), field('Session', i.session),
    field('From', i.from), field('To', i.to),
    h('div', { class: 'filter-buttons' },
      h('button', { type: 'submit', class: 'btn btn-primary', text: 'Apply', testid: 'audit-apply' }),
      h('button', { type: 'reset', class: 'btn btn-quiet', text: 'Clear', testid: 'audit-clear' })),
    kinds);

    this.summary = h('span', { class: 'summary', testid: 'audit-summary' });
    this.body = h('tbody');
    this.more = loadMoreButton('audit-more', () => this.act(this.more, () => this.list.more()));
    root.append(
      h('div', { class: 'page-head' }, h('h1', { text: 'Audit log' }), this.summary),
      form,
      h('div', { class: 'table-wrap' }, h('table', { class: 'grid', testid: 'audit-table' },
        headRow('Time', 'Kind', 'Actor', 'Edge', 'Session', 'Detail'), this.body)),
      this.more,
    );
  }

  apply() {
    const i = this.inputs;
    const query = {
      kind: i.kind.value.trim(),
      actor: i.actor.value.trim(),
      edge: i.edge.value.trim(),
      session: i.session.value.trim(),
      from: localToRfc3339(i.from.value),
      to: localToRfc3339(i.to.value),
    };
    this.act(null, () => {
      this.query = query;
      this.list.reset();
    });
  }

  async refresh() {
    await this.list.reload();
    if (!this.alive) return;
    const items = this.list.items;
    this.more.hidden = !this.list.cursor;
    this.summary.textContent = `${items.length}${this.list.cursor ? '+' : ''} ${items.length === 1 ? 'entry' : 'entries'}, newest first`;
    const key = JSON.stringify([items, this.list.cursor]);
    if (key === this.shown) return;
    this.shown = key;
    if (!items.length) {
      this.body.replaceChildren(h('tr', { class: 'empty-row' }, h('td', { colSpan: 6, text: 'No audit entry matches.' })));
      return;
    }
    this.body.replaceChildren(...items.map((a) => {
      const who = [a.participant_id != null ? `participant ${a.participant_id}` : null, a.user_id ? `user ${a.user_id}` : null].filter(Boolean).join(' · ');
      return h('tr', { testid: 'audit-row', data: { auditId: String(a.id), kind: a.kind } },
        h('td', { class: 'nowrap', text: fmtTime(a.at), title: `${a.at} (stored ${a.stored_at})`, testid: 'audit-time' }),
        h('td', { class: 'mono', text: a.kind, testid: 'audit-kind' }),
        h('td', { class: 'mono', text: orDash(a.actor), testid: 'audit-actor' }),
        h('td', { class: 'mono', text: orDash(a.edge_id), testid: 'audit-edge' }),
        h('td', { class: 'mono', text: orDash(a.session_id), testid: 'audit-session' }),
        h('td', { testid: 'audit-detail' }, a.detail, who ? h('div', { class: 'sub', text: who }) : null));
    }));
  }
}
PAGES.audit = AuditPage;

// ---------------------------------------------------------------------------------------------
// Regions and rules

const MATCHER_EXAMPLES = { cidr: '10.0.0.0/8', country: 'GB', continent: 'EU' };

class RegionsPage extends Page {
  constructor(root) {
    super();
    this.shown = {};
    this.facts = h('dl', { class: 'facts wide', testid: 'regions-facts' });
    this.regionsBody = h('tbody');
    this.rulesBody = h('tbody');
    this.regionNames = h('datalist', { id: 'region-names' });

    const parts = [
      h('div', { class: 'page-head' }, h('h1', { text: 'Regions' })),
      this.facts,
      h('h2', { text: 'Regions' }),
      h('div', { class: 'table-wrap' }, h('table', { class: 'grid', testid: 'regions-table' }, headRow('Region', 'Edges', 'Falls back to'), this.regionsBody)),
      h('h2', { text: 'Placement rules' }),
      h('p', { class: 'hint', text: 'A client goes to the region of the longest CIDR rule containing its address, else the rule for its GeoIP country, else for its continent, else the default region.' }),
      h('div', { class: 'table-wrap' }, h('table', { class: 'grid', testid: 'rules-table' },
        headRow('Rule', 'Kind', 'Match', 'Region', 'Created', ...(this.admin ? [''] : [])), this.rulesBody)),
    ];
    if (this.admin) parts.push(h('div', { class: 'forms' }, this.ruleForm(), this.fallbackForm()), this.regionNames);
    root.append(...parts);
  }

  ruleForm() {
    const kind = h('select', { name: 'kind', testid: 'rule-kind' },
      h('option', { value: 'cidr', text: 'CIDR' }), h('option', { value: 'country', text: 'Country' }), h('option', { value: 'continent', text: 'Continent' }));
    const matcher = h('input', { type: 'text', name: 'match', required: true, spellcheck: false, placeholder: MATCHER_EXAMPLES.cidr, testid: 'rule-matcher' });
    const region = h('input', { type: 'text', name: 'region', required: true, spellcheck: false, placeholder: 'eu', list: 'region-names', testid: 'rule-region' });
    kind.addEventListener('change', () => {
      matcher.placeholder = MATCHER_EXAMPLES[kind.value];
    });
    const submit = h('button', { type: 'submit', class: 'btn btn-primary', text: 'Add rule', testid: 'rule-add' });
    return h('form', {
      class: 'card form-card', testid: 'rule-form',
      on: { submit: (ev) => {
        ev.preventDefault();
        // The API names the field `match` (a Rust keyword is why the code says matcher).
        const body = { kind: kind.value, match: matcher.value.trim(), region: region.value.trim() };
        this.act(submit, async () => {
          const rule = await call('POST', `${ADMIN}/regions/rules`, { body });
          matcher.value = '';
          return `Rule ${rule.id} added: ${rule.kind} ${ruleMatch(rule)} → ${rule.region}.`;
        });
      } },
    },
    h('h3', { text: 'Add a rule' }), field('Kind', kind), field('Match', matcher), field('Region', region), submit);
  }

  fallbackForm() {
    const region = h('input', { type: 'text', name: 'region', required: true, spellcheck: false, placeholder: 'uk', list: 'region-names', testid: 'fallback-region' });
    const order = h('input', { type: 'text', name: 'fallback', spellcheck: false, placeholder: 'eu, us', testid: 'fallback-list' });
    const submit = h('button', { type: 'submit', class: 'btn btn-primary', text: 'Set fallback', testid: 'fallback-submit' });
    return h('form', {
      class: 'card form-card', testid: 'fallback-form',
      on: { submit: (ev) => {
        ev.preventDefault();
        const name = region.value.trim();
        const fallback = order.value.split(/[\s,]+/).filter(Boolean);
        this.act(submit, async () => {
          await call('PUT', `${ADMIN}/regions/${seg(name)}/fallback`, { body: { fallback } });
          return fallback.length ? `Region ${name} now falls back to ${fallback.join(', ')}.` : `Region ${name} has no fallback order now.`;
        });
      } },
    },
    h('h3', { text: 'Set a fallback order' }), field('Region', region), field('Falls back to, in order', order),
    h('p', { class: 'hint', text: 'Comma-separated region names; empty clears the order.' }), submit);
  }

  async refresh() {
    const view = await call('GET', `${ADMIN}/regions`);
    if (!this.alive) return;
    this.renderFacts(view);
    this.renderRegions(view.regions ?? []);
    this.renderRules(view.rules ?? []);
  }

  changed(part, value) {
    const key = JSON.stringify(value);
    if (this.shown[part] === key) return false;
    this.shown[part] = key;
    return true;
  }

  renderFacts(view) {
    if (!this.changed('facts', [view.default_region, view.geoip])) return;
    const g = view.geoip;
    const geoip = g
      ? [h('span', { text: g.database_type }), h('span', { class: 'sub', text: ` built ${fmtTime(new Date(g.build_epoch * 1000).toISOString())} · ` }), h('span', { class: 'mono small', text: g.path })]
      : h('span', { class: 'muted', text: 'none configured: only CIDR rules and the default region place clients' });
    this.facts.replaceChildren(
      h('dt', { text: 'Default region' }), h('dd', {}, h('span', { class: 'mono', text: view.default_region, testid: 'default-region' })),
      h('dt', { text: 'GeoIP database' }), h('dd', { testid: 'geoip' }, geoip),
    );
  }

  renderRegions(regions) {
    if (!this.changed('regions', regions)) return;
    this.regionNames.replaceChildren(...regions.map((r) => h('option', { value: r.name })));
    if (!regions.length) {
      this.regionsBody.replaceChildren(h('tr', { class: 'empty-row' }, h('td', { colSpan: 3, text: 'No region yet.' })));
      return;
    }
    this.regionsBody.replaceChildren(...regions.map((r) => h('tr', { testid: 'region-row', data: { region: r.name } },
      h('td', { class: 'mono', text: r.name }),
      h('td', { class: 'mono', text: r.edges?.length ? r.edges.join(', ') : dash }),
      h('td', { class: 'mono', text: r.fallback?.length ? r.fallback.join(' → ') : dash, testid: 'region-fallback' }))));
  }

  renderRules(rules) {
    if (!this.changed('rules', rules)) return;
    const columns = this.admin ? 6 : 5;
    if (!rules.length) {
      this.rulesBody.replaceChildren(h('tr', { class: 'empty-row' }, h('td', { colSpan: columns, text: 'No rule: every client goes to the default region (or the one it asks for).' })));
      return;
    }
    this.rulesBody.replaceChildren(...rules.map((r) => {
      const cells = [
        h('td', { class: 'num', text: r.id }),
        h('td', { text: r.kind }),
        h('td', { class: 'mono', text: ruleMatch(r), testid: 'rule-match' }),
        h('td', { class: 'mono', text: r.region }),
        h('td', { class: 'nowrap', text: fmtTime(r.created_at) }),
      ];
      if (this.admin) {
        const remove = h('button', {
          type: 'button', class: 'btn btn-small btn-danger', text: 'Remove', testid: 'rule-remove',
          on: { click: () => this.act(remove, async () => {
            await call('DELETE', `${ADMIN}/regions/rules/${seg(String(r.id))}`);
            return `Rule ${r.id} removed (${r.kind} ${ruleMatch(r)} → ${r.region}).`;
          }) },
        });
        cells.push(h('td', { class: 'actions-cell' }, remove));
      }
      return h('tr', { testid: 'rule-row', data: { ruleId: String(r.id), match: ruleMatch(r) } }, cells);
    }));
  }
}
PAGES.regions = RegionsPage;

/** A rule's matcher: the API names it `match`; `matcher` is read too. */
const ruleMatch = (r) => r.match ?? r.matcher ?? '';

// ---------------------------------------------------------------------------------------------
// Usage

const USAGE_SERIES = [
  ['users_online', 'Users online', 'chart-users'],
  ['sessions', 'Sessions', 'chart-sessions'],
  ['connections', 'Connections', 'chart-connections'],
];

class UsagePage extends Page {
  constructor(root) {
    super();
    this.range = '1h';
    this.shown = null;
    const select = h('select', { testid: 'usage-range', 'aria-label': 'Period', on: { change: () => {
      const range = select.value;
      this.act(null, () => {
        this.range = range;
      });
    } } }, Object.entries(USAGE_RANGES).map(([value, r]) => h('option', { value, text: r.label })));
    select.value = this.range;
    this.charts = h('div', { class: 'charts', testid: 'usage-charts' });
    this.note = h('p', { class: 'hint warn', testid: 'usage-truncated', hidden: true,
      text: 'More participants were online in this period than one answer reads: users online is a lower bound.' });
    root.append(h('div', { class: 'page-head' }, h('h1', { text: 'Usage' }), select), this.note, this.charts);
  }

  async refresh() {
    const range = USAGE_RANGES[this.range];
    const to = serverNow();
    const from = to - range.ms;
    const usage = await call('GET', `${ADMIN}/usage`, {
      query: { from: new Date(from).toISOString(), to: new Date(to).toISOString(), step_seconds: range.step },
    });
    if (!this.alive) return;
    this.note.hidden = !usage.truncated;
    const points = usage.points ?? [];
    const key = JSON.stringify([this.range, points]);
    if (key === this.shown) return;
    this.shown = key;
    this.charts.replaceChildren(...USAGE_SERIES.map(([name, title, testid]) => chartCard(points, name, title, testid, from, to, range.ms > 86400e3)));
  }
}
PAGES.usage = UsagePage;

/** 1, 2, 5, 10, 20, 50... the smallest at or above `v` (at least 1). */
function niceCeil(v) {
  if (v <= 1) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * magnitude).find((n) => n >= v);
}

function chartLabel(ms, withDay) {
  const d = new Date(ms);
  const clock = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return withDay ? `${d.toLocaleDateString(undefined, { weekday: 'short' })} ${d.getDate()}, ${clock}` : clock;
}

/** A line chart of `points[*][name]` over [from, to], as SVG built element by element. */
function chartCard(points, name, title, testid, from, to, withDay) {
  const series = points.map((p) => ({ t: Date.parse(p.at), v: Number(p[name]) || 0 })).filter((p) => !Number.isNaN(p.t));
  const latest = series.length ? series[series.length - 1].v : null;
  const peak = series.length ? Math.max(...series.map((p) => p.v)) : null;
  const caption = h('figcaption', {},
    h('span', { class: 'chart-title', text: title }),
    h('span', { class: 'chart-stats', text: series.length ? `now ${fmtNum(latest)} · peak ${fmtNum(peak)}` : '' }));
  if (!series.length) {
    return h('figure', { class: 'chart-card', testid }, caption, h('p', { class: 'empty', text: 'No usage recorded in this period.' }));
  }

  const W = 640; const H = 180; const L = 44; const R = 14; const T = 12; const B = 26;
  const max = niceCeil(peak);
  const x = (t) => L + ((t - from) / (to - from)) * (W - L - R);
  const y = (v) => T + (1 - v / max) * (H - T - B);
  const chart = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': `${title}: now ${latest}, peak ${peak}` });
  for (const v of [0, max / 2, max]) {
    chart.append(
      svg('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), class: v === 0 ? 'axis' : 'gridline' }),
      svg('text', { x: L - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'tick', text: fmtNum(v) }),
    );
  }
  for (const [t, anchor] of [[from, 'start'], [(from + to) / 2, 'middle'], [to, 'end']]) {
    chart.append(svg('text', { x: x(t), y: H - 8, 'text-anchor': anchor, class: 'tick', text: chartLabel(t, withDay) }));
  }
  const line = series.map((p, i) => `${i ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(' ');
  const first = series[0];
  const last = series[series.length - 1];
  chart.append(
    svg('path', { d: `${line} L${x(last.t).toFixed(1)},${y(0)} L${x(first.t).toFixed(1)},${y(0)} Z`, class: 'area' }),
    svg('path', { d: line, class: 'line' }),
    svg('circle', { cx: x(last.t), cy: y(last.v), r: 3, class: 'dot' }),
  );
  // Hover targets: one invisible band per point, titled with its time and value.
  const band = Math.max(2, (W - L - R) / Math.max(series.length, 1));
  for (const p of series) {
    chart.append(svg('rect', { x: x(p.t) - band / 2, y: T, width: band, height: H - T - B, class: 'hover' },
      svg('title', { text: `${fmtTime(new Date(p.t).toISOString())}: ${fmtNum(p.v)}` })));
  }
  return h('figure', { class: 'chart-card', testid, data: { points: String(series.length) } }, caption, chart);
}

// ---------------------------------------------------------------------------------------------
// Start

async function boot() {
  $('login-token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    logIn(ev.currentTarget, { token: $('login-token').value.trim() });
  });
  $('login-password-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    logIn(ev.currentTarget, { username: $('login-username').value.trim(), password: $('login-password').value });
  });
  $('logout').addEventListener('click', logOut);
  $('status-close').addEventListener('click', () => clearStatus());
  window.addEventListener('hashchange', route);
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) poll();
  });
  try {
    startSession(await call('GET', `${LOGIN_API}/session`));
  } catch (e) {
    showLogin();
    if (e.status !== 401) showStatus(e.message, 'error', 'session');
  }
}

boot();
