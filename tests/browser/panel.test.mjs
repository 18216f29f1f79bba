// Drives the admin panel in a real browser (Debian's chromium through playwright-core) against
// a running router with fake nodes. tests/admin_panel.rs starts everything and runs this script;
// it exits 0 when every step passed, 1 with the failing step's message otherwise.
//
// Environment:
//   ADMIN_URL       the admin listener, e.g. http://127.0.0.1:41234
//   API_URL         the bot API listener
//   ADMIN_NAME, ADMIN_SECRET   an admin key of the router
//   NEW_NODE_URL, NEW_NODE_AUTH a fake node the router does not know yet, and its uid:token
//   BAD_NODE_URL    a URL where no TS3AudioBot answers
//   SCREENSHOT_DIR  where the PNGs go (default target/screenshots)
//   CHROMIUM        the browser binary (default /usr/bin/chromium)
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const env = (name, dflt) => {
  const v = process.env[name] ?? dflt;
  if (v === undefined || v === '') {
    console.error(`panel test: the environment variable ${name} is not set`);
    process.exit(2);
  }
  return v;
};

const ADMIN_URL = env('ADMIN_URL').replace(/\/$/, '');
const API_URL = env('API_URL').replace(/\/$/, '');
const ADMIN = { name: env('ADMIN_NAME'), secret: env('ADMIN_SECRET') };
const NEW_NODE = { name: 'node-added', url: env('NEW_NODE_URL'), auth: env('NEW_NODE_AUTH') };
const BAD_NODE_URL = env('BAD_NODE_URL');
const SHOTS = env('SCREENSHOT_DIR', 'target/screenshots');
const CHROMIUM = env('CHROMIUM', '/usr/bin/chromium');
const WAIT = 20_000;

mkdirSync(SHOTS, { recursive: true });

const basic = (name, secret) => 'Basic ' + Buffer.from(`${name}:${secret}`).toString('base64');

/** The admin API called from Node with the admin key (the test's view of the truth). */
async function adminApi(method, path, body) {
  const res = await fetch(ADMIN_URL + '/admin/api' + path, {
    method,
    headers: { Authorization: basic(ADMIN.name, ADMIN.secret), 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path} answered ${res.status}: ${text}`);
  return text ? JSON.parse(text) : null;
}

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

let page;
let step = '';
const problems = [];
const passed = [];

async function run(name, fn) {
  step = name;
  const t0 = Date.now();
  console.log(`panel test: ${name} …`);
  await fn();
  passed.push(name);
  console.log(`panel test: ${name}: ok (${Date.now() - t0} ms)`);
}

async function shot(name, opts = {}) {
  const path = join(SHOTS, `${name}.png`);
  await page.screenshot({ path, fullPage: opts.fullPage ?? false });
  console.log(`panel test: screenshot ${path}`);
}

/** Goes to a page of the panel and waits for its first refresh to land. */
async function go(hash, ready) {
  await page.evaluate((h) => { location.hash = h; }, hash);
  await page.locator(ready).first().waitFor({ timeout: WAIT });
}

/** The bot ids the bots page lists (all on one page, no filter). */
async function listedBotIds() {
  return page.$$eval('#bots-body tr[data-bot]', (rows) => rows.map((r) => r.dataset.bot).sort());
}

/**
 * Waits for a message to show: the element and every box around it visible, with text (a
 * message box the panel hid may still hold an earlier step's text).
 */
async function waitForText(locator, what) {
  await page.waitForFunction((el) => {
    for (let e = el; e; e = e.parentElement) if (e.hidden) return false;
    return el && el.textContent.trim().length > 0;
  },
    await locator.elementHandle({ timeout: WAIT }), { timeout: WAIT })
    .catch(() => { throw new Error(`no message appeared: ${what}`); });
  return (await locator.textContent()).trim();
}

/**
 * Waits for the panel's progress box of the operation labelled `label` to leave "running";
 * fails at once with the panel's message when the API refused to start it.
 */
async function waitForOp(label, what) {
  const handle = await page.waitForFunction((l) => {
    const op = [...document.querySelectorAll('#ops .op')].find((el) => el.textContent.includes(l));
    if (op) return { op: true };
    const flash = document.querySelector('#flash');
    if (flash && !flash.hidden && flash.textContent.includes(l)) {
      return { refused: document.querySelector('#flash-text').textContent };
    }
    return null;
  }, label, { timeout: WAIT });
  const seen = await handle.jsonValue();
  assert(!seen.refused, `${what} was refused: ${seen.refused}`);
  await shot(`${what.replace(/[^a-z0-9]+/gi, '-').toLowerCase()}-progress`);
  const box = await page.waitForFunction((l) => {
    const op = [...document.querySelectorAll('#ops .op')].find((el) => el.textContent.includes(l));
    return op && op.dataset.state && op.dataset.state !== 'running' ? op : null;
  }, label, { timeout: 60_000 }).catch(() => { throw new Error(`${what} did not end within 60 s`); });
  const el = box.asElement();
  return {
    state: await el.getAttribute('data-state'),
    done: await el.getAttribute('data-done'),
    total: await el.getAttribute('data-total'),
    text: (await el.textContent()).trim(),
  };
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});

let failed = null;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  page = await context.newPage();
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
  });
  // Destructive buttons ask first; the test says yes.
  page.on('dialog', (d) => d.accept());

  await run('the panel loads and asks for a login', async () => {
    const res = await page.goto(ADMIN_URL + '/admin/', { waitUntil: 'load' });
    assert(res && res.ok(), `GET /admin/ answered ${res && res.status()}`);
    await page.locator('#login-form').waitFor({ state: 'visible', timeout: WAIT });
    const focused = await page.evaluate(() => document.activeElement && document.activeElement.id);
    assert(focused === 'login-name', `the key name field has no focus (focus on ${focused})`);
    await shot('login');
  });

  await run('a wrong secret is refused in words', async () => {
    await page.fill('#login-name', ADMIN.name);
    await page.fill('#login-secret', 'not-the-secret');
    await page.click('#login-submit');
    const msg = await waitForText(page.locator('#login-error'), 'login error');
    assert(/\w{3,}/.test(msg), `login error is not words: ${msg}`);
  });

  await run('log in (keyboard only)', async () => {
    await page.fill('#login-name', ADMIN.name);
    await page.fill('#login-secret', ADMIN.secret);
    await page.focus('#login-secret');
    await page.keyboard.press('Enter');
    await page.locator('#nav').waitFor({ state: 'visible', timeout: WAIT });
    const who = await page.textContent('#who-name');
    assert(who.includes(ADMIN.name), `the header does not name the admin: ${who}`);
  });

  await run('the dashboard shows every node and the totals', async () => {
    await go('#/', '#dash-nodes [data-node]');
    const nodes = await adminApi('GET', '/nodes');
    await page.waitForFunction((n) => document.querySelectorAll('#dash-nodes [data-node]').length === n,
      nodes.length, { timeout: WAIT });
    for (const n of nodes) {
      const card = page.locator(`#dash-nodes [data-node="${n.name}"]`);
      await card.waitFor({ timeout: WAIT });
      const text = await card.textContent();
      assert(text.includes(`${n.capacity}`), `card of ${n.name} lacks its capacity: ${text}`);
    }
    const ov = await adminApi('GET', '/overview');
    await page.waitForFunction((b) =>
      document.querySelector('[data-total="bots"] .total-value').textContent === String(b),
    ov.bots, { timeout: WAIT });
    await page.locator('#dash-nodes [data-node][data-healthy="true"]').first().waitFor({ timeout: WAIT });
    await shot('dashboard');
  });

  await run('a node agent\'s figures show on its card and row, other nodes show none', async () => {
    const nodes = await adminApi('GET', '/nodes');
    const withAgent = nodes.filter((n) => n.agent);
    assert(withAgent.length > 0, 'no node has an agent');
    for (const n of nodes) {
      const sel = `#dash-nodes [data-node="${n.name}"] .node-agent`;
      if (n.agent) {
        await page.locator(`#dash-nodes [data-node="${n.name}"][data-agent-fresh="true"]`).waitFor({ timeout: WAIT });
        const text = await page.textContent(sel);
        assert(/CPU \d+ %/.test(text) && /memory \d+ % free/.test(text) && /load \d/.test(text),
          `the card of ${n.name} lacks its agent's figures: ${text}`);
      } else {
        assert(await page.locator(sel).isHidden(), `the card of ${n.name} shows an agent it has not`);
      }
    }
    await go('#/nodes', '#nodes-body tr[data-node]');
    const n = withAgent[0];
    const cell = page.locator(`#nodes-body tr[data-node="${n.name}"] .load-agent`);
    await cell.waitFor({ timeout: WAIT });
    await page.waitForFunction((name) => /CPU \d+ %/.test(document.querySelector(
      `#nodes-body tr[data-node="${name}"] .load-agent`).textContent), n.name, { timeout: WAIT });
    const penalty = await page.textContent(`#nodes-body tr[data-node="${n.name}"] .load-penalty`);
    assert(/penalty \d+\.\d{3}/.test(penalty), `the row of ${n.name} lacks its penalty: ${penalty}`);
  });

  await run('a node with a bad URL is refused in words', async () => {
    await go('#/nodes', '#nodes-body tr[data-node]');
    await page.fill('#node-add-name', 'node-bad');
    await page.fill('#node-add-url', BAD_NODE_URL);
    await page.fill('#node-add-auth', 'x:y');
    await page.click('#node-add-submit');
    const msg = await waitForText(page.locator('#node-add-error'), 'add-node error for a bad URL');
    assert(msg.length > 10 && /[a-z]{3,}/i.test(msg), `the refusal is not in words: ${msg}`);
    console.log(`panel test:   refusal shown: ${msg}`);
    assert((await page.locator('#nodes-body tr[data-node="node-bad"]').count()) === 0,
      'the refused node is listed');
    await shot('nodes-refused');
  });

  await run('add a node and see it turn healthy', async () => {
    await page.fill('#node-add-name', NEW_NODE.name);
    await page.fill('#node-add-url', NEW_NODE.url);
    await page.fill('#node-add-auth', NEW_NODE.auth);
    await page.fill('#node-add-capacity', '50');
    await page.click('#node-add-submit');
    await page.locator('#node-add-ok').waitFor({ state: 'visible', timeout: WAIT });
    await page.locator(`#nodes-body tr[data-node="${NEW_NODE.name}"][data-healthy="true"]`)
      .waitFor({ timeout: WAIT });
    assert(await page.locator('#node-add-error').isHidden(), 'an error is still shown after the add');
    await shot('nodes');
  });

  await run('edit a node (capacity)', async () => {
    await page.click(`#nodes-body tr[data-node="${NEW_NODE.name}"] button[data-action="edit"]`);
    await page.fill('#node-edit-capacity', '60');
    await page.click('#node-edit-submit');
    await page.waitForFunction((n) => {
      const tr = document.querySelector(`#nodes-body tr[data-node="${n}"] .bots`);
      return tr && /\/ 60\b/.test(tr.textContent);
    }, NEW_NODE.name, { timeout: WAIT });
    const n = await adminApi('GET', `/nodes/${NEW_NODE.name}`);
    assert(n.capacity === 60, `capacity after the edit: ${n.capacity}`);
  });

  let secret = '';
  const keyName = 'panel-test-key';
  await run('create a key and see its secret once', async () => {
    await go('#/keys', '#keys-body tr[data-apikey]');
    await page.fill('#key-name', keyName);
    await page.selectOption('#key-role', 'user');
    await page.selectOption('#key-scope', 'own');
    await page.fill('#key-max-bots', '1');
    await page.click('#key-create-submit');
    await page.locator('#key-secret').waitFor({ state: 'visible', timeout: WAIT });
    secret = await page.inputValue('#key-secret-value');
    assert(secret.length >= 8, `the secret shown is too short: ${JSON.stringify(secret)}`);
    await page.click('#key-copy');
    const copied = await waitForText(page.locator('#key-copy-result'), 'copy result');
    assert(/copied|selected/i.test(copied), `copy said: ${copied}`);
    await page.locator(`#keys-body tr[data-apikey="${keyName}"]`).waitFor({ timeout: WAIT });
    const listed = await page.textContent('#keys-body');
    assert(!listed.includes(secret), 'the key list shows the secret');
    const k = (await adminApi('GET', '/keys')).find((x) => x.name === keyName);
    assert(k && k.scope === 'own' && k.max_bots === 1, `the key as made: ${JSON.stringify(k)}`);
    const shown = await page.textContent(`#keys-body tr[data-apikey="${keyName}"] .tenancy`);
    assert(/its own bots/.test(shown) && /at most 1/.test(shown), `the key's row says: ${shown}`);
    await shot('keys');
  });

  await run('the new key works on the bot API', async () => {
    const res = await fetch(API_URL + '/api/bot/list', { headers: { Authorization: basic(keyName, secret) } });
    assert(res.status === 200, `GET /api/bot/list with the new key answered ${res.status}: ${await res.text()}`);
  });

  await run('limit where the key may be used from', async () => {
    await page.click(`#keys-body tr[data-apikey="${keyName}"] button[data-action="edit"]`);
    await page.locator('#key-edit-form').waitFor({ state: 'visible', timeout: WAIT });
    assert(await page.inputValue('#key-edit-max-bots') === '1', 'the edit form does not show max bots 1');
    await page.fill('#key-edit-max-bots', '');
    await page.fill('#key-edit-allow-from', '10.0.0.0/8');
    await page.click('#key-edit-submit');
    await page.waitForFunction((n) => {
      const td = document.querySelector(`#keys-body tr[data-apikey="${n}"] .tenancy`);
      return td && td.textContent.includes('from 10.0.0.0/8');
    }, keyName, { timeout: WAIT });
    const k = (await adminApi('GET', '/keys')).find((x) => x.name === keyName);
    assert(k.max_bots === null && k.allow_from.join() === '10.0.0.0/8', `the key as edited: ${JSON.stringify(k)}`);
    const res = await fetch(API_URL + '/api/bot/list', { headers: { Authorization: basic(keyName, secret) } });
    assert(res.status === 401, `GET /api/bot/list from loopback answered ${res.status}`);
  });

  await run('revoke the key and see it refused', async () => {
    await page.locator('#key-secret-done').click();
    assert(await page.locator('#key-secret').isHidden(), 'the secret is still shown');
    await page.click(`#keys-body tr[data-apikey="${keyName}"] button[data-action="revoke"]`);
    await page.locator(`#keys-body tr[data-apikey="${keyName}"]`).waitFor({ state: 'detached', timeout: WAIT });
    const res = await fetch(API_URL + '/api/bot/list', { headers: { Authorization: basic(keyName, secret) } });
    assert(res.status === 401, `GET /api/bot/list with the revoked key answered ${res.status}`);
  });

  let before = [];
  const evacuee = 'node-0';
  await run('find a bot by search', async () => {
    await go('#/bots', '#bots-body tr[data-bot]');
    await page.selectOption('#bots-per-page', '200');
    const all = (await adminApi('GET', '/bots?per_page=200')).bots;
    assert(all.length > 0, 'the cluster has no bots');
    await page.waitForFunction((n) => document.querySelectorAll('#bots-body tr[data-bot]').length === n,
      all.length, { timeout: WAIT });
    before = await listedBotIds();
    assert(JSON.stringify(before) === JSON.stringify(all.map((b) => String(b.id)).sort()),
      `the bots page lists ${before} but the API has ${all.map((b) => b.id)}`);
    const target = all.find((b) => b.server) || all[0];
    const q = target.server || String(target.id);
    await page.fill('#bots-q', q);
    await page.press('#bots-q', 'Enter');
    // Wait for the search's answer, not the list before it (which also holds the target):
    // every row shown matches the query.
    await page.waitForFunction(([id, q]) => {
      const rows = [...document.querySelectorAll('#bots-body tr[data-bot]')];
      return rows.length >= 1 && rows.some((r) => r.dataset.bot === String(id))
        && rows.every((r) => r.textContent.includes(q));
    }, [target.id, q], { timeout: WAIT });
    const rows = await page.$$eval('#bots-body tr[data-bot]', (rs) => rs.map((r) => r.textContent));
    assert(rows.length < all.length || all.length === 1,
      `searching ${q} still lists all ${rows.length} bots`);
    for (const r of rows) assert(r.includes(q), `a row that does not match ${q}: ${r}`);
    await shot('bots-search');
    await page.fill('#bots-q', '');
    await page.press('#bots-q', 'Enter');
    await page.waitForFunction((n) => document.querySelectorAll('#bots-body tr[data-bot]').length === n,
      all.length, { timeout: WAIT });
    await shot('bots');
  });

  await run(`evacuate ${evacuee} and watch its bots move with their ids`, async () => {
    const onIt = (await adminApi('GET', `/bots?node=${evacuee}&per_page=200`)).bots;
    assert(onIt.length > 0, `${evacuee} has no bots to evacuate`);
    await go('#/nodes', `#nodes-body tr[data-node="${evacuee}"]`);
    await page.click(`#nodes-body tr[data-node="${evacuee}"] button[data-action="evacuate"]`);
    const { state, done, total, text } = await waitForOp(`Evacuate ${evacuee}`, `evacuate ${evacuee}`);
    assert(state === 'done', `the evacuation ended ${state}: ${text}`);
    assert(done === total && Number(total) === onIt.length,
      `the evacuation moved ${done} of ${total}, ${evacuee} had ${onIt.length}: ${text}`);
    await page.locator(`#nodes-body tr[data-node="${evacuee}"][data-bots="0"]`).waitFor({ timeout: WAIT });
    await shot('nodes-evacuated');
    await go('#/bots', '#bots-body tr[data-bot]');
    await page.waitForFunction((n) => document.querySelectorAll('#bots-body tr[data-bot]').length === n,
      before.length, { timeout: WAIT });
    const after = await listedBotIds();
    assert(JSON.stringify(after) === JSON.stringify(before),
      `the bot ids changed: before ${before}, after ${after}`);
    const still = await page.locator(`#bots-body tr[data-bot][data-node="${evacuee}"]`).count();
    assert(still === 0, `${still} bots are still listed on ${evacuee}`);
    for (const b of onIt) {
      const where = await page.getAttribute(`#bots-body tr[data-bot="${b.id}"]`, 'data-node');
      assert(where && where !== evacuee, `bot ${b.id} is on ${where}`);
    }
  });

  await run('move a bot to the added node', async () => {
    // A bot that is not on the added node already (the evacuation may have put some there).
    const id = await page.evaluate((name) => {
      const tr = [...document.querySelectorAll('#bots-body tr[data-bot]')]
        .find((r) => r.dataset.node !== name);
      return tr ? tr.dataset.bot : null;
    }, NEW_NODE.name);
    assert(id !== null, `every bot is on ${NEW_NODE.name} already`);
    const row = `#bots-body tr[data-bot="${id}"]`;
    await page.selectOption(`${row} select.move-to`, NEW_NODE.name);
    await page.click(`${row} button[data-action="move"]`);
    const { state, text } = await waitForOp(`Move bot ${id} to ${NEW_NODE.name}`, `move bot ${id}`);
    assert(state === 'done', `the move ended ${state}: ${text}`);
    await page.locator(`${row}[data-node="${NEW_NODE.name}"]`).waitFor({ timeout: WAIT });
    const after = await listedBotIds();
    assert(JSON.stringify(after) === JSON.stringify(before), `the bot ids changed: ${before} → ${after}`);
  });

  await run('put a node in maint', async () => {
    await go('#/nodes', '#nodes-body tr[data-node="node-1"]');
    await page.click('#nodes-body tr[data-node="node-1"] button[data-action="maint"]');
    await page.locator('#nodes-body tr[data-node="node-1"][data-state="maint"]').waitFor({ timeout: WAIT });
    const n = await adminApi('GET', '/nodes/node-1');
    assert(n.state === 'maint', `node-1 is ${n.state}`);
    await go('#/', '#dash-nodes [data-node="node-1"][data-state="maint"]');
  });

  await run('removing a config-file node is refused in words', async () => {
    await go('#/nodes', '#nodes-body tr[data-node="node-2"]');
    await page.click('#nodes-body tr[data-node="node-2"] button[data-action="remove"]');
    const msg = await waitForText(page.locator('#flash-text'), 'refusal to remove node-2');
    assert(/node-2/.test(msg) && msg.length > 30, `the refusal is not in words: ${msg}`);
    console.log(`panel test:   refusal shown: ${msg}`);
    assert((await page.locator('#nodes-body tr[data-node="node-2"]').count()) === 1, 'node-2 is gone');
    await page.click('#flash-close');
  });

  await run(`removing ${NEW_NODE.name} while it holds a bot is refused in words`, async () => {
    const n = await adminApi('GET', `/nodes/${NEW_NODE.name}`);
    assert(n.bots > 0, `${NEW_NODE.name} holds no bots (the move step put one there)`);
    await page.click(`#nodes-body tr[data-node="${NEW_NODE.name}"] button[data-action="remove"]`);
    const msg = await waitForText(page.locator('#flash-text'), `refusal to remove ${NEW_NODE.name}`);
    assert(msg.includes(NEW_NODE.name) && msg.length > 30, `the refusal is not in words: ${msg}`);
    console.log(`panel test:   refusal shown: ${msg}`);
    await shot('nodes-remove-refused');
    assert((await page.locator(`#nodes-body tr[data-node="${NEW_NODE.name}"]`).count()) === 1,
      `${NEW_NODE.name} is gone`);
    await page.click('#flash-close');
  });

  await run('the audit trail lists the changes', async () => {
    await go('#/audit', '#audit-body tr[data-seq]');
    const text = await page.textContent('#audit-body');
    assert(text.includes(keyName), `the audit trail does not mention the key ${keyName}`);
    assert(text.includes(NEW_NODE.name), `the audit trail does not mention ${NEW_NODE.name}`);
    await shot('audit');
  });

  await run('the dashboard fits a phone (375 px)', async () => {
    await go('#/', '#dash-nodes [data-node]');
    await page.setViewportSize({ width: 375, height: 812 });
    await page.waitForTimeout(300);
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    assert(width <= 376, `the dashboard is ${width} px wide at 375 px`);
    await shot('dashboard-phone', { fullPage: true });
    await go('#/nodes', '#nodes-body tr[data-node]');
    const w2 = await page.evaluate(() => document.documentElement.scrollWidth);
    assert(w2 <= 376, `the nodes page is ${w2} px wide at 375 px`);
    await shot('nodes-phone', { fullPage: true });
    await page.setViewportSize({ width: 1280, height: 800 });
  });

  await run('log out', async () => {
    await page.click('#logout');
    await page.locator('#login-form').waitFor({ state: 'visible', timeout: WAIT });
    const status = await page.evaluate(async () =>
      (await fetch('/admin/api/session', { credentials: 'same-origin' })).status);
    assert(status === 401, `GET /admin/api/session after logout answered ${status}`);
    await page.reload();
    await page.locator('#login-form').waitFor({ state: 'visible', timeout: WAIT });
  });

  // The router's own 401 on the session check after logout shows as a console error in
  // chromium ("Failed to load resource"); those are expected, anything else is not.
  const real = problems.filter((p) => !/Failed to load resource/.test(p));
  assert(real.length === 0, `the page reported errors:\n  ${real.join('\n  ')}`);
} catch (e) {
  failed = e;
  if (page) await shot('failure', { fullPage: true }).catch(() => {});
} finally {
  await browser.close().catch(() => {});
}

if (failed) {
  console.error(`panel test FAILED at "${step}": ${failed.message}`);
  if (problems.length) console.error(`the page reported:\n  ${problems.join('\n  ')}`);
  console.error(`${passed.length} passed, 1 failed`);
  process.exit(1);
}
console.log(`${passed.length} passed, 0 failed`);
