// Drives the locator's admin dashboard in a real Chromium, the way an admin would, against a
// running locator with two edges; the Rust e2e harness starts them and runs this script.
//
//   cd tests/browser && npm ci && node dashboard.mjs
//
// Environment: DUET_LOCATOR_URL (http://127.0.0.1:PORT), DUET_ADMIN_TOKEN (the bootstrap admin
// token, principal `token:root`), DUET_DASHBOARD_USER and DUET_DASHBOARD_PASSWORD (the configured
// dashboard login), DUET_LOCATOR_BIN (the duet-locator binary, also the admin CLI), CHROMIUM
// (default /usr/bin/chromium).
//
// Checks, in order: token login (and a refused one); suspend and resume from the UI, with the
// audit entry naming `token:root`; a change made through the CLI showing on the open Edges page
// without a reload; drain with a deadline; adding and removing a region rule; CSRF and Origin
// checks on the cookie (from Node, not the browser); logout ending the server-side session;
// username/password login. Also: the CSP header is sent and the page breaks none of it, and no
// script error happens.
//
// Every wait is for a condition, bounded; the whole run is bounded by OVERALL_TIMEOUT_MS. Prints
// "dashboard test: ok" and exits 0 when everything passed, else prints the step that failed and
// exits 1.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { chromium } from 'playwright-core';

/** The whole run, browser start included; the harness gives the script 90 s. */
const OVERALL_TIMEOUT_MS = 85_000;
/** One wait for something the page shows after an action (a request or two away). */
const STEP_TIMEOUT_MS = 10_000;
/** A change made elsewhere must show within a few seconds: the dashboard re-reads every 2 s. */
const LIVE_UPDATE_TIMEOUT_MS = 8_000;
/** One CLI call or one request from Node. */
const CLI_TIMEOUT_MS = 15_000;
const HTTP_TIMEOUT_MS = 5_000;
const BROWSER_LAUNCH_TIMEOUT_MS = 30_000;
const SESSION_COOKIE = 'duet_dashboard';
const EVIL_ORIGIN = 'http://evil.example';
const TEST_CIDR = '10.99.0.0/16';
const TEST_REGION = 'eu';
const DRAIN_SECONDS = 600;

let step = 'reading the environment';
let browser = null;

/** Prints why the run failed and exits 1, closing the browser first (briefly). */
async function fail(message) {
  console.error(`dashboard test: FAILED during "${step}": ${message}`);
  if (browser) await Promise.race([browser.close().catch(() => {}), new Promise((r) => setTimeout(r, 3000))]);
  process.exit(1);
}

function env(name, fallback) {
  const value = process.env[name] || fallback;
  if (!value) {
    console.error(`dashboard test: FAILED: ${name} is not set`);
    process.exit(1);
  }
  return value;
}

const LOCATOR = env('DUET_LOCATOR_URL').replace(/\/+$/, '');
const ADMIN_TOKEN = env('DUET_ADMIN_TOKEN');
const DASHBOARD_USER = env('DUET_DASHBOARD_USER');
const DASHBOARD_PASSWORD = env('DUET_DASHBOARD_PASSWORD');
const LOCATOR_BIN = env('DUET_LOCATOR_BIN');
const CHROMIUM = env('CHROMIUM', '/usr/bin/chromium');

setTimeout(() => fail(`overall timeout of ${OVERALL_TIMEOUT_MS / 1000} s`), OVERALL_TIMEOUT_MS);
process.on('unhandledRejection', (e) => fail(`unhandled rejection: ${e?.stack ?? e}`));

/** Runs one step of the scenario; its name is what a failure reports. */
async function run(name, fn) {
  step = name;
  const started = Date.now();
  await fn();
  console.log(`  ok: ${name} (${Date.now() - started} ms)`);
}

// ---------------------------------------------------------------------------------------------
// Page helpers

/** Matches exactly `text` (whitespace around it aside). */
const exactly = (text) => new RegExp(`^\\s*${text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}\\s*$`);

const edgeRow = (page, id) => page.locator(`[data-testid="edge-row"][data-edge-id="${id}"]`);

/** Waits for `locator` to be visible; on timeout says what was awaited and what is shown. */
async function see(locator, what, timeout = STEP_TIMEOUT_MS) {
  try {
    await locator.first().waitFor({ state: 'visible', timeout });
  } catch {
    throw new Error(`did not see ${what} within ${timeout / 1000} s${await statusLine(locator.page())}`);
  }
}

/** Waits for `locator` to be gone. */
async function seeGone(locator, what, timeout = STEP_TIMEOUT_MS) {
  try {
    await locator.first().waitFor({ state: 'detached', timeout });
  } catch {
    throw new Error(`${what} was still shown after ${timeout / 1000} s${await statusLine(locator.page())}`);
  }
}

/** The dashboard's status line, for failure messages. */
async function statusLine(page) {
  const status = page.getByTestId('status');
  const text = (await status.isVisible()) ? await status.innerText() : '';
  return text ? ` (status line: "${text.trim()}")` : '';
}

/** Waits for an edge's admin state badge to read `state`. */
async function seeEdgeState(page, id, state, timeout = STEP_TIMEOUT_MS) {
  const badge = edgeRow(page, id).getByTestId('edge-state');
  try {
    await badge.filter({ hasText: exactly(state) }).waitFor({ timeout });
  } catch {
    const shown = (await badge.count()) ? await badge.innerText() : 'no row for it';
    throw new Error(`edge ${id} should show state "${state}" within ${timeout / 1000} s, shows "${shown}"${await statusLine(page)}`);
  }
}

/** Waits for exactly `n` edge rows and answers their ids, in the order shown. */
async function edgeIds(page, n) {
  try {
    await page.waitForFunction((count) => document.querySelectorAll('[data-testid="edge-row"]').length === count, n, { timeout: STEP_TIMEOUT_MS });
  } catch {
    const shown = await page.getByTestId('edge-row').count();
    throw new Error(`the Edges page should list ${n} edges, lists ${shown}${await statusLine(page)}`);
  }
  return page.getByTestId('edge-row').evaluateAll((rows) => rows.map((r) => r.dataset.edgeId));
}

async function goTo(page, name) {
  await page.getByTestId(`nav-${name}`).click();
  await page.waitForFunction((hash) => location.hash === hash, `#/${name}`, { timeout: STEP_TIMEOUT_MS });
}

async function logInWithToken(page, token) {
  await page.getByTestId('login-token').fill(token);
  await page.getByTestId('login-submit').click();
}

async function logOut(page) {
  await page.getByTestId('logout').click();
  await see(page.getByTestId('login-token'), 'the login screen after logging out');
  assert.equal(await page.getByTestId('nav').isVisible(), false, 'the navigation should be hidden once logged out');
}

/** Collects what must not happen on the page: script errors and CSP violations. */
function watchPage(page) {
  const problems = [];
  page.on('pageerror', (e) => problems.push(`script error: ${e.message}`));
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    // An error answer (401 before login, the refused login) is logged by Chromium as a failed
    // load; the dashboard handles those.
    if (/Failed to load resource/.test(msg.text())) return;
    problems.push(`console error: ${msg.text()}`);
  });
  return problems;
}

// ---------------------------------------------------------------------------------------------
// Outside the browser: the CLI, and requests from Node

/** Runs the admin CLI against the locator; answers its stdout. */
function cli(...args) {
  return new Promise((resolve, reject) => {
    execFile(
      LOCATOR_BIN,
      [...args, '--url', LOCATOR],
      { env: { ...process.env, DUET_ADMIN_TOKEN: ADMIN_TOKEN }, timeout: CLI_TIMEOUT_MS },
      (error, stdout, stderr) => {
        if (error) reject(new Error(`duet-locator ${args.join(' ')} failed: ${error.message}; stderr: ${stderr.trim()}`));
        else resolve(stdout);
      },
    );
  });
}

/** One HTTP request from Node (no browser: no cookie jar, no automatic Origin). */
function http(method, path, headers = {}, body = undefined) {
  const url = new URL(path.replace(/^\//, ''), `${LOCATOR}/`);
  const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
  const allHeaders = { ...headers };
  if (body !== undefined) allHeaders['Content-Length'] = Buffer.byteLength(body);
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers: allHeaders, timeout: HTTP_TIMEOUT_MS }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json = null;
        try {
          json = text ? JSON.parse(text) : null;
        } catch {
          json = null;
        }
        resolve({ status: res.statusCode, text, json });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path} timed out`)));
    req.on('error', reject);
    req.end(body);
  });
}

function expectStatus(answer, status, what) {
  assert.equal(answer.status, status, `${what}: expected HTTP ${status}, got ${answer.status} ${answer.text}`);
}

/** A refusal with the API's error shape and code `forbidden`. */
function expectForbidden(answer, what) {
  expectStatus(answer, 403, what);
  assert.equal(answer.json?.error?.code, 'forbidden', `${what}: expected error code "forbidden", got ${answer.text}`);
  assert.ok(answer.json?.error?.message, `${what}: the refusal should carry a message`);
}

// ---------------------------------------------------------------------------------------------
// The scenario

async function main() {
  step = 'starting Chromium';
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-background-networking'],
    timeout: BROWSER_LAUNCH_TIMEOUT_MS,
  });
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  const problems = watchPage(page);
  let first;
  let second;

  await run('open the dashboard; a wrong token is refused; log in with the admin token', async () => {
    const response = await page.goto(`${LOCATOR}/dashboard`);
    assert.equal(response?.status(), 200, `GET /dashboard answered ${response?.status()}`);
    const csp = response.headers()['content-security-policy'] ?? '';
    for (const directive of ["default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"]) {
      assert.ok(csp.includes(directive), `the dashboard's Content-Security-Policy should include ${directive}; it is "${csp}"`);
    }
    await see(page.getByTestId('login-token'), 'the login screen');

    await logInWithToken(page, `${ADMIN_TOKEN}-wrong`);
    await see(page.getByTestId('status').filter({ hasText: /\S/ }), 'an error message for a wrong token');
    assert.equal(await page.getByTestId('nav').isVisible(), false, 'a wrong token must not log in');

    await logInWithToken(page, ADMIN_TOKEN);
    await see(page.getByTestId('principal').filter({ hasText: exactly('token:root') }), 'the principal token:root in the top bar');
    await see(page.getByTestId('logout'), 'the Log out button');
    [first, second] = await edgeIds(page, 2);
    for (const id of [first, second]) {
      await seeEdgeState(page, id, 'active');
      await see(edgeRow(page, id).getByTestId('edge-health').filter({ hasText: exactly('up') }), `edge ${id} healthy ("up")`);
    }
  });

  await run('suspend the first edge from the UI; the audit log names token:root; resume it', async () => {
    await edgeRow(page, first).getByTestId('suspend-button').click();
    await seeEdgeState(page, first, 'suspended');

    await goTo(page, 'audit');
    await page.getByTestId('audit-filter-kind').fill('edge_suspended');
    await page.getByTestId('audit-filter-edge').fill(first);
    await page.getByTestId('audit-filter-actor').fill('token:root');
    await page.getByTestId('audit-apply').click();
    const entry = page.locator('[data-testid="audit-row"][data-kind="edge_suspended"]')
      .filter({ has: page.getByTestId('audit-actor').filter({ hasText: exactly('token:root') }) })
      .filter({ has: page.getByTestId('audit-edge').filter({ hasText: exactly(first) }) });
    await see(entry, `an edge_suspended audit entry for ${first} by token:root`);

    await goTo(page, 'edges');
    await edgeRow(page, first).getByTestId('resume-button').click();
    await seeEdgeState(page, first, 'active');
  });

  await run('a suspend through the CLI shows on the open Edges page without a reload', async () => {
    // Survives only if the page is not reloaded.
    await page.evaluate(() => {
      window.duetTestMark = true;
    });
    await cli('edges', 'suspend', second);
    await seeEdgeState(page, second, 'suspended', LIVE_UPDATE_TIMEOUT_MS);
    await cli('edges', 'resume', second);
    await seeEdgeState(page, second, 'active', LIVE_UPDATE_TIMEOUT_MS);
    assert.equal(await page.evaluate(() => window.duetTestMark), true, 'the page was reloaded');
  });

  await run(`drain the first edge from the UI with a ${DRAIN_SECONDS} s deadline; resume it`, async () => {
    const row = edgeRow(page, first);
    await row.getByTestId('drain-button').click();
    await row.getByTestId('drain-seconds').fill(String(DRAIN_SECONDS));
    await row.getByTestId('drain-confirm').click();
    await seeEdgeState(page, first, 'draining');
    const deadline = row.getByTestId('edge-drain-deadline');
    await see(deadline, `the drain deadline of ${first}`);
    const at = Date.parse(await deadline.getAttribute('data-deadline'));
    const inSeconds = (at - Date.now()) / 1000;
    assert.ok(inSeconds > DRAIN_SECONDS - 60 && inSeconds <= DRAIN_SECONDS + 5,
      `the drain deadline should be about ${DRAIN_SECONDS} s away, is ${Math.round(inSeconds)} s`);

    await row.getByTestId('resume-button').click();
    await seeEdgeState(page, first, 'active');
    await seeGone(deadline, 'the drain deadline after resuming');
  });

  await run(`add the region rule ${TEST_CIDR} -> ${TEST_REGION}, see it, remove it`, async () => {
    await goTo(page, 'regions');
    await page.getByTestId('rule-kind').selectOption('cidr');
    await page.getByTestId('rule-matcher').fill(TEST_CIDR);
    await page.getByTestId('rule-region').fill(TEST_REGION);
    await page.getByTestId('rule-add').click();
    const rule = page.locator(`[data-testid="rule-row"][data-match="${TEST_CIDR}"]`);
    await see(rule, `the rule ${TEST_CIDR} in the rules table`);
    assert.match(await rule.innerText(), new RegExp(`\\b${TEST_REGION}\\b`), `the rule ${TEST_CIDR} should map to ${TEST_REGION}`);
    await rule.getByTestId('rule-remove').click();
    await seeGone(rule, `the rule ${TEST_CIDR} after removing it`);
  });

  let cookie;
  await run('the login cookie needs the CSRF token and a same-origin Origin', async () => {
    const cookies = await context.cookies(LOCATOR);
    const found = cookies.find((c) => c.name === SESSION_COOKIE);
    assert.ok(found, `no ${SESSION_COOKIE} cookie; the page has ${cookies.map((c) => c.name).join(', ') || 'none'}`);
    assert.equal(found.httpOnly, true, `${SESSION_COOKIE} should be HttpOnly`);
    assert.equal(found.sameSite, 'Strict', `${SESSION_COOKIE} should be SameSite=Strict`);
    cookie = `${SESSION_COOKIE}=${found.value}`;

    // The cookie alone is enough to read: the refusals below are about CSRF, not the cookie.
    expectStatus(await http('GET', '/api/v1/admin/edges', { Cookie: cookie }), 200, 'GET /edges with the cookie');
    const session = await http('GET', '/dashboard/api/session', { Cookie: cookie });
    expectStatus(session, 200, 'GET /dashboard/api/session with the cookie');
    const csrf = session.json?.csrf;
    assert.ok(csrf, `the session should carry a csrf token: ${session.text}`);

    const suspend = `/api/v1/admin/edges/${encodeURIComponent(first)}/suspend`;
    expectForbidden(await http('POST', suspend, { Cookie: cookie }), 'a suspend with the cookie but no X-CSRF-Token');
    expectForbidden(
      await http('POST', suspend, { Cookie: cookie, 'X-CSRF-Token': csrf, Origin: EVIL_ORIGIN }),
      `a suspend with the cookie and CSRF token from Origin ${EVIL_ORIGIN}`,
    );
    expectForbidden(
      await http('POST', '/dashboard/api/login', { 'Content-Type': 'application/json', Origin: EVIL_ORIGIN }, JSON.stringify({ token: ADMIN_TOKEN })),
      `a login from Origin ${EVIL_ORIGIN}`,
    );
    const edges = await http('GET', '/api/v1/admin/edges', { Cookie: cookie });
    const state = edges.json?.edges?.find((e) => e.id === first)?.admin_state;
    assert.equal(state, 'active', `the refused suspends must change nothing, but ${first} is ${state}`);
  });

  await run('log out: the login screen shows and the old cookie is dead', async () => {
    await goTo(page, 'edges');
    await logOut(page);
    expectStatus(await http('GET', '/dashboard/api/session', { Cookie: cookie }), 401, 'GET /dashboard/api/session with the logged-out cookie');
    expectStatus(await http('GET', '/api/v1/admin/edges', { Cookie: cookie }), 401, 'GET /edges with the logged-out cookie');
    await page.reload();
    await see(page.getByTestId('login-token'), 'the login screen after a reload');
  });

  await run('log in with username and password; see the edges; log out', async () => {
    await see(page.getByTestId('login-password-form'), 'the username and password form');
    await page.getByTestId('login-username').fill(DASHBOARD_USER);
    await page.getByTestId('login-password').fill(DASHBOARD_PASSWORD);
    await page.getByTestId('login-password-submit').click();
    await see(page.getByTestId('principal').filter({ hasText: exactly(`user:${DASHBOARD_USER}`) }), `the principal user:${DASHBOARD_USER}`);
    await edgeIds(page, 2);
    await logOut(page);
  });

  await run('the page broke no CSP rule and had no script error', async () => {
    assert.deepEqual(problems, [], `problems on the page:\n  ${problems.join('\n  ')}`);
  });

  await browser.close();
  browser = null;
}

try {
  await main();
  console.log('dashboard test: ok');
  process.exit(0);
} catch (e) {
  await fail(e?.message ?? String(e));
}
