// The ts3ab-lb admin panel: plain JavaScript, no framework, no external resources.
//
// Owns: the login/session flow (the CSRF token lives in memory only), hash routing
// (#/, #/nodes, #/bots, #/keys, #/audit), polling the API every 2 s while the page is visible,
// and following operations (evacuate, move) until they end. Does not own: any decision; every
// change is one call of the admin API (docs/admin-api.md) and its answer is shown as given.
//
// Test hooks: rows and cards carry data-node="<name>", data-bot="<id>", data-apikey="<name>",
// data-op="<id>" plus data-state/data-healthy/data-bots; forms and their error lines have ids.
'use strict';

(() => {
  const API = '/admin/api';
  const POLL_MS = 2000;
  const OP_POLL_MS = 500;

  /** What the panel knows: the session and the page shown. */
  const S = {
    me: null, // {name, role}
    csrf: null,
    page: null, // the page object shown
    route: null,
    timer: null,
    gen: 0, // bumped on every navigation, so a late answer for an old page is dropped
    nodes: [], // the last node list, for the bots page's selects
    keys: [], // the last key list, for the key edit form
    ops: new Map(), // operation id -> {box, label, timer}
  };

  // === API ===

  /** A refusal from the API, or a network failure (status 0), with a message in words. */
  class ApiError extends Error {
    constructor(status, body, message) {
      super(message);
      this.status = status;
      this.code = body && body.error;
      this.field = body && body.field;
    }
  }

  function describeStatus(res) {
    const what = {
      400: 'the request was not understood',
      401: 'not logged in, or the session ended',
      403: 'not allowed',
      404: 'not found',
      405: 'method not allowed',
      409: 'conflict',
      413: 'the request is too large',
      422: 'a value is not acceptable',
      500: 'the router had an internal error',
      502: 'bad gateway',
      503: 'the router is unavailable',
      504: 'the router did not answer in time',
    }[res.status] || res.statusText || 'error';
    return `The server answered ${res.status} (${what}) without an explanation.`;
  }

  /**
   * One API call. Resolves with the parsed JSON (null for 204), rejects with an ApiError
   * whose message is the server's `message` or a sentence about the network.
   */
  async function api(method, path, body) {
    const opts = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    if (method !== 'GET' && S.csrf) opts.headers['X-CSRF-Token'] = S.csrf;
    let res;
    try {
      res = await fetch(API + path, opts);
    } catch (e) {
      throw new ApiError(0, null,
        `Cannot reach the router's admin API (network error: ${e.message}). Is the router running?`);
    }
    const text = res.status === 204 ? '' : await res.text().catch(() => '');
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (_) { data = null; }
    }
    if (!res.ok) {
      const msg = data && typeof data.message === 'string' && data.message
        ? data.message
        : describeStatus(res);
      const err = new ApiError(res.status, data, msg);
      if (res.status === 401 && path !== '/login' && path !== '/session' && S.me) {
        sessionEnded('Your session has ended (' + msg + '). Log in again.');
      }
      throw err;
    }
    if (text && data === null) {
      throw new ApiError(res.status, null, 'The server answered with something that is not JSON.');
    }
    return data;
  }

  // === DOM helpers ===

  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

  /** h('tag.class#id', {attrs}, ...children): a small element builder. */
  function h(spec, attrs, ...kids) {
    const m = spec.match(/^([a-z0-9]+)((?:[.#][\w-]+)*)$/i);
    const el = document.createElement(m ? m[1] : spec);
    if (m && m[2]) {
      for (const part of m[2].match(/[.#][\w-]+/g)) {
        if (part[0] === '.') el.classList.add(part.slice(1));
        else el.id = part.slice(1);
      }
    }
    if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
      kids.unshift(attrs);
      attrs = null;
    }
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'text') el.textContent = v;
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : String(kid));
    }
    return el;
  }

  function setText(el, v) {
    const s = v === null || v === undefined ? '' : String(v);
    if (el.textContent !== s) el.textContent = s;
  }

  function setData(el, key, v) {
    const s = String(v);
    if (el.dataset[key] !== s) el.dataset[key] = s;
  }

  /** Shows or hides an error line under a form. */
  function showError(el, msg) {
    setText(el, msg || '');
    el.hidden = !msg;
  }

  /**
   * Keeps tbody's rows (or a container's children) in step with `items` by key, so that rows
   * are updated in place on every poll and focus, selects and half-typed input survive.
   */
  function syncRows(parent, items, key, build, update) {
    const old = new Map();
    for (const el of [...parent.children]) {
      if (el.dataset.row !== undefined) old.set(el.dataset.row, el);
    }
    let prev = null;
    for (const it of items) {
      const k = String(key(it));
      let el = old.get(k);
      if (el) old.delete(k);
      else {
        el = build(it);
        el.dataset.row = k;
      }
      update(el, it);
      const want = prev ? prev.nextSibling : parent.firstChild;
      if (want !== el) parent.insertBefore(el, want);
      prev = el;
    }
    for (const el of old.values()) el.remove();
  }

  function fmtTime(ms) {
    if (ms === null || ms === undefined || ms === 0) return '–';
    const d = new Date(ms);
    const p = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
      `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }

  function fmtLatency(ms) {
    return ms === null || ms === undefined ? '–' : `${Math.round(ms)} ms`;
  }

  const pct = (r) => `${Math.round(r * 100)} %`;

  /** A node agent's figures in one line (null for a node without an agent). */
  function fmtAgent(a) {
    if (!a) return null;
    const parts = [];
    if (a.cpu_busy_ratio !== null && a.cpu_busy_ratio !== undefined) parts.push(`CPU ${pct(a.cpu_busy_ratio)}`);
    if (a.memory_available_ratio !== null && a.memory_available_ratio !== undefined) {
      parts.push(`memory ${pct(a.memory_available_ratio)} free`);
    }
    if (a.load1 !== null && a.load1 !== undefined) parts.push(`load ${a.load1.toFixed(2)}`);
    if (a.process_up === false) parts.push('TS3AudioBot process not found');
    if (a.age_ms !== null && a.age_ms !== undefined) parts.push(`${(a.age_ms / 1000).toFixed(1)} s ago`);
    let text = parts.length ? parts.join(' · ') : 'no figures yet';
    // Placement ignores figures that are not fresh; say so, and why.
    if (!a.fresh) text += ` (not used${a.error ? `: ${a.error}` : ''})`;
    return text;
  }

  const STATUS = { 0: 'offline', 1: 'connecting', 2: 'connected' };

  /** A busy guard for a button: disabled while `fn` runs. */
  async function busy(button, fn) {
    if (button) button.disabled = true;
    try {
      return await fn();
    } finally {
      if (button) button.disabled = false;
    }
  }

  // === Messages ===

  function flash(msg, kind = 'error') {
    const box = $('#flash');
    setText($('#flash-text'), msg);
    box.className = 'flash ' + kind;
    box.hidden = false;
  }

  function clearFlash() {
    $('#flash').hidden = true;
    // Nothing of a closed message lingers for a reader of the page (or a test) to take
    // for the next one.
    setText($('#flash-text'), '');
  }

  /** The line under the header: live, or why the last refresh failed. */
  function live(msg, bad) {
    const el = $('#live');
    setText(el, msg);
    el.classList.toggle('bad', !!bad);
  }

  // === Session ===

  function showLogin(msg) {
    stopPolling();
    S.me = null;
    S.csrf = null;
    S.page = null;
    $('#boot').hidden = true;
    $('#view').hidden = true;
    $('#view').replaceChildren();
    $('#nav').hidden = true;
    $('#who').hidden = true;
    $('#ops').replaceChildren();
    for (const op of S.ops.values()) clearTimeout(op.timer);
    S.ops.clear();
    live('');
    clearFlash();
    $('#login-view').hidden = false;
    showError($('#login-error'), msg || '');
    $('#login-secret').value = '';
    $('#login-name').focus();
  }

  function sessionEnded(msg) {
    showLogin(msg);
  }

  function loggedIn(session) {
    S.me = { name: session.name, role: session.role };
    S.csrf = session.csrf;
    $('#boot').hidden = true;
    $('#login-view').hidden = true;
    $('#nav').hidden = false;
    $('#who').hidden = false;
    setText($('#who-name'), `${session.name} (${session.role})`);
    $('#view').hidden = false;
    route();
  }

  async function onLogin(ev) {
    ev.preventDefault();
    const name = $('#login-name').value.trim();
    const secret = $('#login-secret').value;
    const err = $('#login-error');
    if (!name || !secret) {
      showError(err, 'Enter the key name and its secret.');
      return;
    }
    showError(err, '');
    await busy($('#login-submit'), async () => {
      try {
        const s = await api('POST', '/login', { name, secret });
        loggedIn(s);
      } catch (e) {
        showError(err, e.status === 401
          ? `Login refused: ${e.message}`
          : e.message);
      }
    });
  }

  async function onLogout() {
    try {
      await api('POST', '/logout');
      showLogin('You are logged out.');
    } catch (e) {
      if (e.status === 401) showLogin('You are logged out.');
      else flash(`Logging out failed: ${e.message}`);
    }
  }

  async function boot() {
    $('#login-form').addEventListener('submit', onLogin);
    $('#logout').addEventListener('click', onLogout);
    $('#flash-close').addEventListener('click', clearFlash);
    window.addEventListener('hashchange', () => { if (S.me) route(); });
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden && S.page) refreshNow();
    });
    try {
      const s = await api('GET', '/session');
      loggedIn(s);
    } catch (e) {
      if (e.status === 401) showLogin('');
      else {
        // Not a "not logged in": say what went wrong and offer to try again.
        const boot = $('#boot');
        boot.replaceChildren(
          h('span.error', `The admin panel could not start: ${e.message} `),
          h('button', { type: 'button', onclick: () => location.reload() }, 'Try again'),
        );
      }
    }
  }

  // === Routing and polling ===

  const PAGES = {};

  function route() {
    const hash = location.hash || '#/';
    const path = hash.startsWith('#/') ? hash.slice(1) : '/';
    const name = path.split('?')[0].replace(/\/+$/, '') || '/';
    stopPolling();
    S.gen += 1;
    S.route = name;
    for (const a of $$('#nav a')) {
      if (a.dataset.route === name) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    const view = $('#view');
    view.replaceChildren();
    clearFlash();
    const page = PAGES[name];
    if (!page) {
      S.page = null;
      view.append(h('h1', 'Page not found'),
        h('p', 'There is no page ', h('code', hash), '. ', h('a', { href: '#/' }, 'Go to the dashboard.')));
      return;
    }
    S.page = page;
    document.title = `${page.title} · ts3ab-lb admin`;
    page.mount(view);
    refreshNow();
  }

  function stopPolling() {
    clearTimeout(S.timer);
    S.timer = null;
  }

  /** Refreshes the page now, then every POLL_MS while the document is visible. */
  async function refreshNow() {
    stopPolling();
    const gen = S.gen;
    const page = S.page;
    if (!page || !S.me) return;
    try {
      await page.refresh(gen);
      if (gen === S.gen) live(`Live · updated ${fmtTime(Date.now()).slice(11)}`);
    } catch (e) {
      if (gen === S.gen && S.me) live(`Could not refresh: ${e.message} (trying again every 2 s)`, true);
    }
    if (gen !== S.gen || !S.me) return;
    S.timer = setTimeout(() => {
      if (document.hidden) return; // visibilitychange restarts it
      refreshNow();
    }, POLL_MS);
  }

  // === Operations ===

  /**
   * Follows an operation (the 202 answer of evacuate or move): a box in #ops shows done/total
   * and each failure's reason, polled until its state is no longer "running".
   */
  function trackOp(op, label) {
    let t = S.ops.get(op.id);
    if (!t) {
      const box = h('div.op', { dataset: { op: op.id }, role: 'status' },
        h('div.op-head', h('strong.op-label', label), h('span.op-state')),
        h('progress.op-bar', { max: 1, value: 0 }),
        h('div.op-text'),
        h('ul.op-failed'),
        h('button.link.op-close', { type: 'button', hidden: true, onclick: () => {
          clearTimeout(t.timer);
          S.ops.delete(op.id);
          box.remove();
        } }, 'Dismiss'));
      t = { box, label, timer: null };
      S.ops.set(op.id, t);
      $('#ops').prepend(box);
    }
    showOp(t, op);
    const step = async () => {
      if (!S.ops.has(op.id) || !S.me) return;
      let next;
      try {
        next = await api('GET', `/operations/${encodeURIComponent(op.id)}`);
      } catch (e) {
        setText($('.op-text', t.box), `Could not read the operation: ${e.message} (trying again)`);
        t.timer = setTimeout(step, OP_POLL_MS * 4);
        return;
      }
      showOp(t, next);
      if (next.state === 'running') t.timer = setTimeout(step, OP_POLL_MS);
      else refreshNow();
    };
    if (op.state === 'running') t.timer = setTimeout(step, OP_POLL_MS);
  }

  function showOp(t, op) {
    const box = t.box;
    const failed = Array.isArray(op.failed) ? op.failed : [];
    setData(box, 'state', op.state);
    setData(box, 'done', op.done);
    setData(box, 'total', op.total);
    setData(box, 'failedCount', failed.length);
    box.classList.toggle('op-ok', op.state === 'done' && failed.length === 0);
    box.classList.toggle('op-bad', op.state === 'failed' || failed.length > 0);
    setText($('.op-state', box), op.state);
    const bar = $('.op-bar', box);
    bar.max = Math.max(op.total || 0, 1);
    bar.value = (op.done || 0) + failed.length;
    let text = `${op.done} of ${op.total} bots done`;
    if (failed.length) text += `, ${failed.length} failed`;
    if (typeof op.left === 'number' && op.state === 'running') text += `, ${op.left} left`;
    text += op.state === 'running' ? ' …' : '.';
    setText($('.op-text', box), text);
    syncRows($('.op-failed', box), failed, (f) => f.bot,
      () => h('li'), (li, f) => setText(li, `bot ${f.bot}: ${f.reason}`));
    $('.op-close', box).hidden = op.state === 'running';
  }

  async function startOp(button, method, path, body, label) {
    return busy(button, async () => {
      try {
        const op = await api(method, path, body);
        trackOp(op, label);
        return op;
      } catch (e) {
        flash(`${label}: ${e.message}`);
        return null;
      }
    });
  }

  // === Dashboard ===

  function stateBadge(state) {
    return h('span.badge.state', { dataset: { value: state } }, state);
  }

  function updateBadge(el, value, text) {
    setData(el, 'value', value);
    setText(el, text === undefined ? value : text);
  }

  PAGES['/'] = {
    title: 'Dashboard',
    mount(view) {
      view.append(
        h('h1', 'Dashboard'),
        h('section.totals#totals', { 'aria-label': 'Cluster totals' },
          ...[
            ['nodes_up', 'Nodes up'], ['bots', 'Bots'], ['capacity', 'Capacity'],
            ['reserved', 'Reserved'], ['restoring', 'Restoring'],
          ].map(([k, label]) => h('div.total', { dataset: { total: k } },
            h('span.total-value', '–'), h('span.total-label', label)))),
        h('h2', 'Nodes'),
        h('p.empty#dash-empty', { hidden: true }, 'No nodes are configured. Add one on the ',
          h('a', { href: '#/nodes' }, 'nodes page'), '.'),
        h('div.node-grid#dash-nodes'),
        h('h2', 'Recent operations'),
        h('p.empty#dash-ops-empty', { hidden: true }, 'No operations yet.'),
        h('ul.op-list#dash-ops'),
      );
    },
    async refresh(gen) {
      const [ov, nodes, ops] = await Promise.all([
        api('GET', '/overview'), api('GET', '/nodes'),
        api('GET', '/operations').catch(() => []),
      ]);
      if (gen !== S.gen) return;
      S.nodes = nodes;
      for (const el of $$('#totals .total')) {
        const k = el.dataset.total;
        let v = ov[k];
        if (k === 'nodes_up') v = `${ov.nodes_up} / ${ov.nodes}`;
        setText($('.total-value', el), v === undefined ? '–' : v);
      }
      $('#dash-empty').hidden = nodes.length > 0;
      syncRows($('#dash-nodes'), nodes, (n) => n.name, (n) => h('article.node-card', { dataset: { node: n.name } },
        h('header', h('h3.node-name', n.name),
          h('span.badge.health'), stateBadge(n.state)),
        h('div.bar', { role: 'img' }, h('div.bar-fill')),
        h('p.node-bots'),
        h('dl.node-facts',
          h('dt', 'Latency'), h('dd.node-latency'),
          h('dt', 'URL'), h('dd.node-url'),
          h('dt', 'Last error'), h('dd.node-error'),
          h('dt.node-agent-label', 'Agent'), h('dd.node-agent'),
          h('dt', 'Penalty'), h('dd.node-penalty'))),
      (card, n) => {
        setData(card, 'healthy', n.healthy);
        setData(card, 'state', n.state);
        setData(card, 'bots', n.bots);
        updateBadge($('.health', card), n.healthy ? 'up' : 'down', n.healthy ? 'healthy' : 'down');
        updateBadge($('.state', card), n.state);
        const used = n.bots + (n.reserved || 0);
        const ratio = n.capacity > 0 ? Math.min(used / n.capacity, 1) : (used > 0 ? 1 : 0);
        const fill = $('.bar-fill', card);
        fill.style.width = `${(ratio * 100).toFixed(1)}%`;
        fill.classList.toggle('full', ratio >= 0.9);
        $('.bar', card).setAttribute('aria-label', `${n.bots} of ${n.capacity} bots`);
        let bots = `${n.bots} / ${n.capacity} bots`;
        if (n.reserved) bots += ` · ${n.reserved} reserved`;
        if (n.restoring) bots += ` · ${n.restoring} restoring`;
        setText($('.node-bots', card), bots);
        setText($('.node-latency', card), fmtLatency(n.latency_ms));
        setText($('.node-url', card), n.url);
        setText($('.node-error', card), n.last_error || 'none');
        $('.node-error', card).classList.toggle('error', !!n.last_error);
        const agent = fmtAgent(n.agent);
        $('.node-agent-label', card).hidden = agent === null;
        $('.node-agent', card).hidden = agent === null;
        setText($('.node-agent', card), agent || '');
        setData(card, 'agentFresh', n.agent ? n.agent.fresh : null);
        setText($('.node-penalty', card), typeof n.penalty === 'number' ? n.penalty.toFixed(3) : '–');
      });
      const recent = (Array.isArray(ops) ? ops : []).slice(0, 8);
      $('#dash-ops-empty').hidden = recent.length > 0;
      syncRows($('#dash-ops'), recent, (o) => o.id, () => h('li'), (li, o) => {
        const failed = Array.isArray(o.failed) ? o.failed.length : 0;
        setData(li, 'state', o.state);
        setText(li, `${fmtTime(o.created_ms)} · ${o.kind} ${o.target || ''} · ${o.state} · ` +
          `${o.done}/${o.total} done${failed ? `, ${failed} failed` : ''}`);
      });
    },
  };

  // === Nodes ===

  function field(label, input, hint) {
    const id = input.id;
    return h('div.field', h('label', { for: id }, label), input, hint ? h('small.hint', hint) : null);
  }

  PAGES['/nodes'] = {
    title: 'Nodes',
    mount(view) {
      const addForm = h('form.card.form-grid#node-add-form', { novalidate: true, onsubmit: onAddNode },
        h('h2', 'Add a node'),
        field('Name', h('input#node-add-name', { name: 'name', required: true, autocomplete: 'off' })),
        field('URL', h('input#node-add-url', { name: 'url', required: true, inputmode: 'url',
          autocomplete: 'off', placeholder: 'http://10.0.0.5:58913' })),
        field('Auth', h('input#node-add-auth', { name: 'auth', autocomplete: 'off',
          placeholder: 'uid:token' }), 'The node\'s API token, as uid:token; empty for none.'),
        field('Capacity', h('input#node-add-capacity', { name: 'capacity', type: 'number', min: 0,
          step: 1, placeholder: 'default' })),
        field('State', h('select#node-add-state', { name: 'state' },
          h('option', { value: '' }, 'ready (default)'),
          h('option', { value: 'drain' }, 'drain'),
          h('option', { value: 'maint' }, 'maint'))),
        field('Agent URL', h('input#node-add-agent-url', { name: 'agent_url', inputmode: 'url',
          autocomplete: 'off', placeholder: 'http://10.0.0.5:58915' }),
          'The node\'s ts3ab-lb-agent, for load-aware placement; empty for none.'),
        field('Agent token', h('input#node-add-agent-token', { name: 'agent_token', autocomplete: 'off',
          placeholder: 'none' })),
        h('div.actions', h('button.primary#node-add-submit', { type: 'submit' }, 'Add node'),
          h('span.pending#node-add-pending', { hidden: true }, 'Checking the node…')),
        h('p.error#node-add-error', { role: 'alert', hidden: true }),
        h('p.ok#node-add-ok', { role: 'status', hidden: true }));
      const editForm = h('form.card.form-grid#node-edit-form', { novalidate: true, hidden: true,
        onsubmit: onEditNode },
        h('h2#node-edit-title', 'Edit node'),
        field('URL', h('input#node-edit-url', { name: 'url', required: true, autocomplete: 'off' })),
        field('Auth', h('input#node-edit-auth', { name: 'auth', autocomplete: 'off',
          placeholder: 'unchanged' }), 'Leave empty to keep the current token.'),
        h('div.field.check', h('input#node-edit-noauth', { type: 'checkbox', name: 'noauth' }),
          h('label', { for: 'node-edit-noauth' }, 'Remove the token (no auth)')),
        field('Capacity', h('input#node-edit-capacity', { name: 'capacity', type: 'number', min: 0, step: 1 })),
        field('Agent URL', h('input#node-edit-agent-url', { name: 'agent_url', autocomplete: 'off',
          placeholder: 'none' }), 'Empty removes the agent.'),
        field('Agent token', h('input#node-edit-agent-token', { name: 'agent_token', autocomplete: 'off',
          placeholder: 'unchanged' }), 'Leave empty to keep the current token.'),
        h('div.actions',
          h('button.primary#node-edit-submit', { type: 'submit' }, 'Save'),
          h('button#node-edit-cancel', { type: 'button', onclick: closeEdit }, 'Cancel')),
        h('p.error#node-edit-error', { role: 'alert', hidden: true }));
      view.append(
        h('h1', 'Nodes'),
        h('div.two', addForm, editForm),
        h('h2', 'All nodes'),
        h('p.empty#nodes-empty', { hidden: true }, 'No nodes yet.'),
        h('div.table-wrap', h('table.rows#nodes-table',
          h('thead', h('tr', ...['Name', 'URL', 'Health', 'State', 'Bots', 'Latency', 'Load', 'Last error', 'Actions']
            .map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody#nodes-body'))),
      );
    },
    async refresh(gen) {
      const nodes = await api('GET', '/nodes');
      if (gen !== S.gen) return;
      S.nodes = nodes;
      $('#nodes-empty').hidden = nodes.length > 0;
      syncRows($('#nodes-body'), nodes, (n) => n.name, buildNodeRow, updateNodeRow);
    },
  };

  function buildNodeRow(n) {
    const name = n.name;
    const act = (action, label, cls) => h(`button.${cls || 'small'}`, { type: 'button',
      dataset: { action }, onclick: (ev) => nodeAction(ev.currentTarget, action, name) }, label);
    return h('tr', { dataset: { node: name } },
      h('th.name', { scope: 'row', 'data-label': 'Name' }, name, h('small.origin')),
      h('td.url', { 'data-label': 'URL' }, h('span.url-text'), ' ', h('small.url-auth')),
      h('td', { 'data-label': 'Health' }, h('span.badge.health')),
      h('td', { 'data-label': 'State' }, stateBadge(n.state)),
      h('td.bots', { 'data-label': 'Bots' }),
      h('td.latency', { 'data-label': 'Latency' }),
      h('td.load', { 'data-label': 'Load' }, h('span.load-agent'), ' ', h('small.load-penalty')),
      h('td.last-error', { 'data-label': 'Last error' }),
      h('td.row-actions', { 'data-label': 'Actions' }, h('div.btns',
        act('edit', 'Edit'),
        h('span.group', { role: 'group', 'aria-label': `State of ${name}` },
          act('ready', 'Ready'), act('drain', 'Drain'), act('maint', 'Maint')),
        act('evacuate', 'Evacuate'),
        act('remove', 'Remove', 'small.danger'))));
  }

  function updateNodeRow(tr, n) {
    setData(tr, 'healthy', n.healthy);
    setData(tr, 'state', n.state);
    setData(tr, 'bots', n.bots);
    setText($('.origin', tr), n.source === 'config' ? 'config file' : 'added here');
    setText($('.url-text', tr), n.url);
    setText($('.url-auth', tr), n.has_auth ? 'token' : 'no token');
    setData($('.url-auth', tr), 'value', n.has_auth);
    updateBadge($('.health', tr), n.healthy ? 'up' : 'down', n.healthy ? 'healthy' : 'down');
    updateBadge($('.state', tr), n.state);
    let bots = `${n.bots} / ${n.capacity}`;
    if (n.reserved) bots += ` (+${n.reserved} reserved)`;
    if (n.restoring) bots += ` (${n.restoring} restoring)`;
    setText($('.bots', tr), bots);
    setText($('.latency', tr), fmtLatency(n.latency_ms));
    setText($('.load-agent', tr), fmtAgent(n.agent) || 'no agent');
    setData(tr, 'agentFresh', n.agent ? n.agent.fresh : null);
    setText($('.load-penalty', tr), typeof n.penalty === 'number' ? `penalty ${n.penalty.toFixed(3)}` : '');
    setText($('.last-error', tr), n.last_error || '–');
    for (const st of ['ready', 'drain', 'maint']) {
      const b = $(`button[data-action="${st}"]`, tr);
      b.setAttribute('aria-pressed', String(n.state === st));
    }
  }

  async function onAddNode(ev) {
    ev.preventDefault();
    const err = $('#node-add-error');
    const ok = $('#node-add-ok');
    showError(err, '');
    ok.hidden = true;
    const body = { name: $('#node-add-name').value.trim(), url: $('#node-add-url').value.trim() };
    if (!body.name || !body.url) {
      showError(err, 'A node needs a name and a URL.');
      return;
    }
    const auth = $('#node-add-auth').value.trim();
    if (auth) body.auth = auth;
    const cap = $('#node-add-capacity').value.trim();
    if (cap) {
      if (!/^\d+$/.test(cap)) {
        showError(err, 'Capacity must be a whole number.');
        return;
      }
      body.capacity = Number(cap);
    }
    const state = $('#node-add-state').value;
    if (state) body.state = state;
    const agentUrl = $('#node-add-agent-url').value.trim();
    const agentToken = $('#node-add-agent-token').value.trim();
    if (agentUrl) {
      body.agent = { url: agentUrl };
      if (agentToken) body.agent.token = agentToken;
    }
    const pending = $('#node-add-pending');
    pending.hidden = false;
    await busy($('#node-add-submit'), async () => {
      try {
        const n = await api('POST', '/nodes', body);
        ev.target.reset();
        setText(ok, `Node ${n.name} added.`);
        ok.hidden = false;
        refreshNow();
      } catch (e) {
        const why = e.code === 'node_check_failed'
          ? `The node did not pass the check: ${e.message}`
          : e.message;
        showError(err, why);
        if (e.field) {
          const input = $(`#node-add-${e.field.replace('.', '-')}`);
          if (input) input.focus();
        }
      } finally {
        pending.hidden = true;
      }
    });
  }

  let editing = null;

  function openEdit(name) {
    const n = S.nodes.find((x) => x.name === name);
    if (!n) return;
    editing = name;
    const f = $('#node-edit-form');
    f.hidden = false;
    f.dataset.node = name;
    setText($('#node-edit-title'), `Edit node ${name}`);
    $('#node-edit-url').value = n.url;
    $('#node-edit-auth').value = '';
    $('#node-edit-auth').placeholder = n.has_auth ? 'unchanged (has a token)' : 'none';
    $('#node-edit-noauth').checked = false;
    $('#node-edit-capacity').value = n.capacity;
    $('#node-edit-agent-url').value = n.agent ? n.agent.url : '';
    $('#node-edit-agent-token').value = '';
    $('#node-edit-agent-token').placeholder = n.agent && n.agent.has_token ? 'unchanged (has a token)' : 'none';
    showError($('#node-edit-error'), '');
    $('#node-edit-url').focus();
  }

  function closeEdit() {
    editing = null;
    $('#node-edit-form').hidden = true;
  }

  async function onEditNode(ev) {
    ev.preventDefault();
    const err = $('#node-edit-error');
    showError(err, '');
    const n = S.nodes.find((x) => x.name === editing);
    const body = {};
    const url = $('#node-edit-url').value.trim();
    if (!n || url !== n.url) body.url = url;
    const auth = $('#node-edit-auth').value.trim();
    if ($('#node-edit-noauth').checked) body.auth = null;
    else if (auth) body.auth = auth;
    const cap = $('#node-edit-capacity').value.trim();
    if (!/^\d+$/.test(cap)) {
      showError(err, 'Capacity must be a whole number.');
      return;
    }
    if (!n || Number(cap) !== n.capacity) body.capacity = Number(cap);
    const agentUrl = $('#node-edit-agent-url').value.trim();
    const agentToken = $('#node-edit-agent-token').value.trim();
    const hadAgent = !!(n && n.agent);
    if (!agentUrl && hadAgent) body.agent = null;
    else if (agentUrl && (!hadAgent || agentUrl !== n.agent.url || agentToken)) {
      // Without a token the agent keeps its current one.
      body.agent = { url: agentUrl };
      if (agentToken) body.agent.token = agentToken;
    }
    if (Object.keys(body).length === 0) {
      closeEdit();
      return;
    }
    await busy($('#node-edit-submit'), async () => {
      try {
        await api('PATCH', `/nodes/${encodeURIComponent(editing)}`, body);
        flash(`Node ${editing} saved.`, 'ok');
        closeEdit();
        refreshNow();
      } catch (e) {
        showError(err, e.message);
      }
    });
  }

  async function nodeAction(button, action, name) {
    const path = `/nodes/${encodeURIComponent(name)}`;
    if (action === 'edit') {
      openEdit(name);
      return;
    }
    if (action === 'evacuate') {
      if (!confirm(`Move every bot off ${name} to the other nodes?`)) return;
      await startOp(button, 'POST', `${path}/evacuate`, undefined, `Evacuate ${name}`);
      refreshNow();
      return;
    }
    await busy(button, async () => {
      try {
        if (action === 'remove') {
          if (!confirm(`Remove node ${name} from the cluster?`)) return;
          await api('DELETE', path);
          flash(`Node ${name} removed.`, 'ok');
        } else {
          await api('PATCH', path, { state: action });
          clearFlash();
        }
        refreshNow();
      } catch (e) {
        flash(action === 'remove'
          ? `Cannot remove ${name}: ${e.message}`
          : `Cannot set ${name} to ${action}: ${e.message}`);
      }
    });
  }

  // === Bots ===

  const botQuery = { q: '', node: '', status: '', page: 1, per_page: 50 };

  PAGES['/bots'] = {
    title: 'Bots',
    mount(view) {
      let debounce = null;
      const changed = () => {
        botQuery.q = $('#bots-q').value.trim();
        botQuery.node = $('#bots-node').value;
        botQuery.status = $('#bots-status').value;
        botQuery.per_page = Number($('#bots-per-page').value);
        botQuery.page = 1;
        refreshNow();
      };
      const form = h('form.card.filters#bots-filter', { role: 'search', onsubmit: (ev) => {
        ev.preventDefault();
        clearTimeout(debounce);
        changed();
      } },
      field('Search', h('input#bots-q', { type: 'search', name: 'q', value: botQuery.q,
        placeholder: 'id, nickname, server, channel…', autocomplete: 'off',
        oninput: () => { clearTimeout(debounce); debounce = setTimeout(changed, 300); } })),
      field('Node', h('select#bots-node', { name: 'node', onchange: changed },
        h('option', { value: '' }, 'all nodes'))),
      field('Status', h('select#bots-status', { name: 'status', onchange: changed },
        h('option', { value: '' }, 'any'),
        h('option', { value: '2' }, 'connected'),
        h('option', { value: '1' }, 'connecting'),
        h('option', { value: '0' }, 'offline'))),
      field('Per page', h('select#bots-per-page', { name: 'per_page', onchange: changed },
        ...[25, 50, 100, 200].map((n) => h('option', { value: n }, String(n))))),
      h('div.actions', h('button#bots-search', { type: 'submit' }, 'Search')));
      view.append(
        h('h1', 'Bots'),
        form,
        h('p.summary#bots-summary', { role: 'status' }),
        h('p.empty#bots-empty', { hidden: true }, 'No bots match.'),
        h('div.table-wrap', h('table.rows#bots-table',
          h('thead', h('tr', ...['ID', 'Node', 'Status', 'Nickname', 'Server', 'Channel', 'Template', 'Created', 'Actions']
            .map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody#bots-body'))),
        h('nav.pager', { 'aria-label': 'Pages of bots' },
          h('button#bots-prev', { type: 'button', onclick: () => { botQuery.page -= 1; refreshNow(); } }, '← Previous'),
          h('span#bots-page'),
          h('button#bots-next', { type: 'button', onclick: () => { botQuery.page += 1; refreshNow(); } }, 'Next →')),
      );
      $('#bots-status').value = botQuery.status;
      $('#bots-per-page').value = String(botQuery.per_page);
    },
    async refresh(gen) {
      const qs = new URLSearchParams();
      for (const k of ['q', 'node', 'status']) if (botQuery[k] !== '') qs.set(k, botQuery[k]);
      qs.set('page', String(botQuery.page));
      qs.set('per_page', String(botQuery.per_page));
      const [res, nodes] = await Promise.all([
        api('GET', `/bots?${qs}`),
        api('GET', '/nodes').catch(() => S.nodes),
      ]);
      if (gen !== S.gen) return;
      S.nodes = nodes;
      const names = nodes.map((n) => n.name);
      fillSelect($('#bots-node'), names, 'all nodes', botQuery.node);
      const pages = Math.max(1, Math.ceil(res.total / (res.per_page || botQuery.per_page)));
      if (res.page > pages && res.total > 0) {
        botQuery.page = pages;
        return this.refresh(gen);
      }
      const filtered = botQuery.q || botQuery.node || botQuery.status;
      const one = res.total === 1;
      setText($('#bots-summary'), `${res.total} bot${one ? '' : 's'}` +
        (filtered ? (one ? ' matches' : ' match') : ' in the cluster'));
      $('#bots-summary').dataset.total = res.total;
      $('#bots-empty').hidden = res.bots.length > 0;
      setText($('#bots-page'), `Page ${res.page} of ${pages}`);
      $('#bots-prev').disabled = res.page <= 1;
      $('#bots-next').disabled = res.page >= pages;
      syncRows($('#bots-body'), res.bots, (b) => b.id, buildBotRow, (tr, b) => updateBotRow(tr, b, names));
    },
  };

  function fillSelect(sel, names, allLabel, value) {
    const want = [allLabel === null ? null : '', ...names].filter((x) => x !== null);
    const have = [...sel.options].map((o) => o.value);
    if (have.join('\n') !== want.join('\n')) {
      const cur = sel.value || value || '';
      sel.replaceChildren(...want.map((v) => h('option', { value: v }, v === '' ? allLabel : v)));
      sel.value = want.includes(cur) ? cur : '';
    }
  }

  function buildBotRow(b) {
    const id = b.id;
    const sel = h('select.move-to', { 'aria-label': `Move bot ${id} to node` });
    return h('tr', { dataset: { bot: id } },
      h('th.id', { scope: 'row', 'data-label': 'ID' }, String(id)),
      h('td.node', { 'data-label': 'Node' }),
      h('td', { 'data-label': 'Status' }, h('span.badge.status')),
      h('td.nickname', { 'data-label': 'Nickname' }),
      h('td.server', { 'data-label': 'Server' }),
      h('td.channel', { 'data-label': 'Channel' }),
      h('td.template', { 'data-label': 'Template' }),
      h('td.created', { 'data-label': 'Created' }),
      h('td.row-actions', { 'data-label': 'Actions' }, h('div.btns',
        sel,
        h('button.small', { type: 'button', dataset: { action: 'move' }, onclick: (ev) => {
          const node = sel.value;
          if (!node) {
            flash(`Choose the node to move bot ${id} to.`);
            sel.focus();
            return;
          }
          startOp(ev.currentTarget, 'POST', `/bots/${encodeURIComponent(id)}/move`, { node },
            `Move bot ${id} to ${node}`);
        } }, 'Move'),
        h('button.small.danger', { type: 'button', dataset: { action: 'stop' }, onclick: async (ev) => {
          if (!confirm(`Stop bot ${id}?`)) return;
          await busy(ev.currentTarget, async () => {
            try {
              await api('POST', `/bots/${encodeURIComponent(id)}/stop`);
              flash(`Bot ${id} stopped.`, 'ok');
              refreshNow();
            } catch (e) {
              flash(`Cannot stop bot ${id}: ${e.message}`);
            }
          });
        } }, 'Stop'))));
  }

  function updateBotRow(tr, b, names) {
    setData(tr, 'node', b.node);
    setData(tr, 'status', b.status);
    setText($('.node', tr), b.node);
    updateBadge($('.status', tr), String(b.status), (STATUS[b.status] || `status ${b.status}`) +
      (b.restoring ? ' (restoring)' : ''));
    setText($('.nickname', tr), b.nickname || '–');
    setText($('.server', tr), b.server || '–');
    setText($('.channel', tr), b.channel === null || b.channel === undefined || b.channel === '' ? '–' : b.channel);
    setText($('.template', tr), b.template || '–');
    setText($('.created', tr), fmtTime(b.created_ms));
    const sel = $('.move-to', tr);
    const targets = names.filter((n) => n !== b.node);
    const want = ['', ...targets];
    const have = [...sel.options].map((o) => o.value);
    if (have.join('\n') !== want.join('\n')) {
      const cur = sel.value;
      sel.replaceChildren(h('option', { value: '' }, 'move to…'),
        ...targets.map((n) => h('option', { value: n }, n)));
      sel.value = targets.includes(cur) ? cur : '';
    }
  }

  // === Keys ===

  PAGES['/keys'] = {
    title: 'Keys',
    mount(view) {
      view.append(
        h('h1', 'API keys'),
        h('form.card.form-grid#key-create-form', { novalidate: true, onsubmit: onCreateKey },
          h('h2', 'Create a key'),
          field('Name', h('input#key-name', { name: 'name', required: true, autocomplete: 'off' })),
          field('Role', h('select#key-role', { name: 'role' },
            h('option', { value: 'user' }, 'user (bot API)'),
            h('option', { value: 'admin' }, 'admin (bot API and this panel)'))),
          ...tenancyFields('key'),
          h('div.actions', h('button.primary#key-create-submit', { type: 'submit' }, 'Create key')),
          h('p.error#key-create-error', { role: 'alert', hidden: true })),
        h('form.card.form-grid#key-edit-form', { novalidate: true, hidden: true, onsubmit: onEditKey },
          h('h2#key-edit-title', 'Edit key'),
          ...tenancyFields('key-edit'),
          h('div.actions',
            h('button.primary#key-edit-submit', { type: 'submit' }, 'Save'),
            h('button#key-edit-cancel', { type: 'button', onclick: closeKeyEdit }, 'Cancel')),
          h('p.error#key-edit-error', { role: 'alert', hidden: true })),
        h('section.card.secret#key-secret', { hidden: true, 'aria-labelledby': 'key-secret-title' },
          h('h2#key-secret-title', 'New key'),
          h('p', 'This is the only time the secret is shown. Copy it now and keep it safe.'),
          h('div.secret-row',
            h('label.sr-only', { for: 'key-secret-value' }, 'Secret'),
            h('input#key-secret-value', { readonly: true, spellcheck: 'false', autocomplete: 'off' }),
            h('button#key-copy', { type: 'button', onclick: copySecret }, 'Copy')),
          h('p.hint#key-copy-result', { role: 'status' }),
          h('button.link#key-secret-done', { type: 'button', onclick: () => {
            $('#key-secret-value').value = '';
            $('#key-secret').hidden = true;
          } }, 'I have stored it, hide the secret')),
        h('h2', 'All keys'),
        h('p.empty#keys-empty', { hidden: true }, 'No keys.'),
        h('div.table-wrap', h('table.rows#keys-table',
          h('thead', h('tr', ...['Name', 'Role', 'Reaches', 'Source', 'Created', 'Last used', 'Actions']
            .map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody#keys-body'))),
      );
    },
    async refresh(gen) {
      const keys = await api('GET', '/keys');
      if (gen !== S.gen) return;
      $('#keys-empty').hidden = keys.length > 0;
      S.keys = keys;
      syncRows($('#keys-body'), keys, (k) => k.name, buildKeyRow, updateKeyRow);
    },
  };

  // A key's tenancy: which bots it reaches (scope), how many it may have, from where.
  function tenancyFields(prefix) {
    return [
      field('Reaches', h(`select#${prefix}-scope`, { name: 'scope' },
        h('option', { value: 'all' }, 'all bots and templates'),
        h('option', { value: 'own' }, 'only the bots and templates it creates'))),
      field('Max bots', h(`input#${prefix}-max-bots`, { name: 'max_bots', type: 'number', min: 0, step: 1,
        placeholder: 'no limit' }), 'at once; empty: no limit'),
      field('Allowed from', h(`input#${prefix}-allow-from`, { name: 'allow_from', autocomplete: 'off',
        spellcheck: 'false', placeholder: 'anywhere' }), 'CIDR networks, e.g. 10.0.0.0/8 2001:db8::/32'),
    ];
  }

  /** The tenancy fields of a form as API fields, or an error text. */
  function tenancyBody(prefix) {
    const max = $(`#${prefix}-max-bots`).value.trim();
    if (max && !/^\d+$/.test(max)) return { error: 'Max bots must be a whole number (or empty for no limit).' };
    return {
      scope: $(`#${prefix}-scope`).value,
      max_bots: max ? Number(max) : null,
      allow_from: $(`#${prefix}-allow-from`).value.split(/[\s,]+/).filter(Boolean),
    };
  }

  function tenancyText(k) {
    const parts = [k.scope === 'own' ? 'its own bots' : 'all bots'];
    if (k.max_bots !== null && k.max_bots !== undefined) parts.push(`at most ${k.max_bots}`);
    if (k.allow_from && k.allow_from.length) parts.push(`from ${k.allow_from.join(', ')}`);
    return parts.join(' · ');
  }

  let editingKey = null;

  function openKeyEdit(name) {
    const k = (S.keys || []).find((x) => x.name === name);
    if (!k) return;
    editingKey = name;
    setText($('#key-edit-title'), `Edit key ${name}`);
    $('#key-edit-scope').value = k.scope || 'all';
    $('#key-edit-max-bots').value = k.max_bots === null || k.max_bots === undefined ? '' : String(k.max_bots);
    $('#key-edit-allow-from').value = (k.allow_from || []).join(' ');
    showError($('#key-edit-error'), '');
    $('#key-edit-form').hidden = false;
    $('#key-edit-scope').focus();
  }

  function closeKeyEdit() {
    editingKey = null;
    $('#key-edit-form').hidden = true;
  }

  async function onEditKey(ev) {
    ev.preventDefault();
    const err = $('#key-edit-error');
    showError(err, '');
    const body = tenancyBody('key-edit');
    if (body.error) {
      showError(err, body.error);
      return;
    }
    const name = editingKey;
    await busy($('#key-edit-submit'), async () => {
      try {
        await api('PATCH', `/keys/${encodeURIComponent(name)}`, body);
        flash(`Key ${name} saved.`, 'ok');
        closeKeyEdit();
        refreshNow();
      } catch (e) {
        showError(err, e.message);
      }
    });
  }

  function buildKeyRow(k) {
    const name = k.name;
    return h('tr', { dataset: { apikey: name } },
      h('th.name', { scope: 'row', 'data-label': 'Name' }, name),
      h('td.role', { 'data-label': 'Role' }),
      h('td.tenancy', { 'data-label': 'Reaches' }),
      h('td.source', { 'data-label': 'Source' }),
      h('td.created', { 'data-label': 'Created' }),
      h('td.used', { 'data-label': 'Last used' }),
      h('td.row-actions', { 'data-label': 'Actions' }, h('div.btns',
        h('small.hint.from-file', { hidden: true }, 'in the config file: change it there'),
        h('button.small', { type: 'button', dataset: { action: 'edit' }, onclick: () => openKeyEdit(name) }, 'Edit'),
        h('button.small.danger', { type: 'button', dataset: { action: 'revoke' }, onclick: async (ev) => {
          if (!confirm(`Revoke key ${name}? Requests with it will be refused at once.`)) return;
          await busy(ev.currentTarget, async () => {
            try {
              await api('DELETE', `/keys/${encodeURIComponent(name)}`);
              flash(`Key ${name} revoked.`, 'ok');
              refreshNow();
            } catch (e) {
              flash(`Cannot revoke ${name}: ${e.message}`);
            }
          });
        } }, 'Revoke'))));
  }

  function updateKeyRow(tr, k) {
    setData(tr, 'role', k.role);
    setData(tr, 'source', k.source);
    setText($('.role', tr), k.role);
    setData(tr, 'scope', k.scope);
    setText($('.tenancy', tr), tenancyText(k));
    setText($('.source', tr), k.source === 'config' ? 'config file' : 'added here');
    setText($('.created', tr), fmtTime(k.created_ms));
    setText($('.used', tr), k.last_used_ms ? fmtTime(k.last_used_ms) : 'never');
    // A config-file key cannot be deleted here (the API answers 409): say so instead.
    $('button[data-action="revoke"]', tr).hidden = k.source === 'config';
    $('button[data-action="edit"]', tr).hidden = k.source === 'config';
    $('.from-file', tr).hidden = k.source !== 'config';
  }

  async function onCreateKey(ev) {
    ev.preventDefault();
    const err = $('#key-create-error');
    showError(err, '');
    const name = $('#key-name').value.trim();
    if (!name) {
      showError(err, 'A key needs a name.');
      return;
    }
    const tenancy = tenancyBody('key');
    if (tenancy.error) {
      showError(err, tenancy.error);
      return;
    }
    if (tenancy.max_bots === null) delete tenancy.max_bots;
    await busy($('#key-create-submit'), async () => {
      try {
        const k = await api('POST', '/keys', { name, role: $('#key-role').value, ...tenancy });
        ev.target.reset();
        setText($('#key-secret-title'), `New ${k.role} key ${k.name}`);
        $('#key-secret').dataset.apikey = k.name;
        $('#key-secret-value').value = k.secret;
        setText($('#key-copy-result'), '');
        $('#key-secret').hidden = false;
        $('#key-copy').focus();
        refreshNow();
      } catch (e) {
        showError(err, e.message);
      }
    });
  }

  async function copySecret() {
    const input = $('#key-secret-value');
    const out = $('#key-copy-result');
    try {
      if (!navigator.clipboard || !window.isSecureContext) throw new Error('no clipboard');
      await navigator.clipboard.writeText(input.value);
      setText(out, 'Copied to the clipboard.');
    } catch (_) {
      // No clipboard access (plain http on another host, or denied): select the text so that
      // Ctrl+C / long-press copies it, and try the old command as well.
      input.focus();
      input.select();
      let copied = false;
      try { copied = document.execCommand('copy'); } catch (_) { copied = false; }
      setText(out, copied ? 'Copied to the clipboard.' : 'The secret is selected: press Ctrl+C (or ⌘C) to copy it.');
    }
  }

  // === Audit ===

  let auditOlder = [];

  PAGES['/audit'] = {
    title: 'Audit',
    mount(view) {
      auditOlder = [];
      view.append(
        h('h1', 'Audit trail'),
        h('p.hint', 'Every change, newest first: who, from where, what and how it ended.'),
        h('p.empty#audit-empty', { hidden: true }, 'Nothing recorded yet.'),
        h('div.table-wrap', h('table.rows#audit-table',
          h('thead', h('tr', ...['#', 'When', 'Who', 'From', 'Action', 'Target', 'Status', 'Outcome']
            .map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody#audit-body'))),
        h('div.pager', h('button#audit-older', { type: 'button', onclick: loadOlderAudit }, 'Load older entries')),
      );
    },
    async refresh(gen) {
      const rows = await api('GET', '/audit?limit=100');
      if (gen !== S.gen) return;
      showAudit(rows);
    },
  };

  let auditNewest = [];

  function showAudit(rows) {
    auditNewest = rows;
    const seen = new Set(rows.map((r) => r.seq));
    const all = rows.concat(auditOlder.filter((r) => !seen.has(r.seq)));
    $('#audit-empty').hidden = all.length > 0;
    $('#audit-older').hidden = all.length < 100;
    syncRows($('#audit-body'), all, (r) => r.seq, (r) => h('tr', { dataset: { seq: r.seq } },
      h('td.seq', { 'data-label': '#' }),
      h('td.at', { 'data-label': 'When' }),
      h('td.who', { 'data-label': 'Who' }),
      h('td.from', { 'data-label': 'From' }),
      h('td.action', { 'data-label': 'Action' }),
      h('td.target', { 'data-label': 'Target' }),
      h('td.status', { 'data-label': 'Status' }),
      h('td.outcome', { 'data-label': 'Outcome' })),
    (tr, r) => {
      setData(tr, 'action', r.action);
      tr.classList.toggle('failed', Number(r.status) >= 400);
      setText($('.seq', tr), r.seq);
      setText($('.at', tr), fmtTime(r.at_ms));
      setText($('.who', tr), r.who);
      setText($('.from', tr), r.from);
      setText($('.action', tr), r.action);
      setText($('.target', tr), r.target || '–');
      setText($('.status', tr), r.status);
      setText($('.outcome', tr), r.outcome);
    });
  }

  async function loadOlderAudit(ev) {
    const all = auditNewest.concat(auditOlder);
    if (all.length === 0) return;
    const before = Math.min(...all.map((r) => r.seq));
    await busy(ev.currentTarget, async () => {
      try {
        const rows = await api('GET', `/audit?limit=100&before=${before}`);
        auditOlder = auditOlder.concat(rows);
        showAudit(auditNewest);
        if (rows.length === 0) {
          $('#audit-older').hidden = true;
          flash('There are no older entries.', 'ok');
        }
      } catch (e) {
        flash(`Cannot load older entries: ${e.message}`);
      }
    });
  }

  // Report what would otherwise be a silent failure.
  window.addEventListener('unhandledrejection', (ev) => {
    const e = ev.reason;
    flash(`Something went wrong: ${e && e.message ? e.message : e}`);
  });

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();
