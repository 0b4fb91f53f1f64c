/* The Plexus web console: plain DOM code over the admin API of the host that serves it. The token
 * lives in sessionStorage (this tab only) and travels in the Authorization header of each call,
 * never in a URL. Every page refreshes itself while it is shown. */
'use strict';

(function () {
  const TOKEN_KEY = 'plexus.admin.token';
  const PAGE_SIZE = 50;
  const OVERVIEW_MS = 2000;
  const PAGE_MS = 5000;
  const LIVE_MAX_ROWS = 500;
  const LIVE_MAX_HELD = 2000;

  const $ = (id) => document.getElementById(id);
  const state = {
    page: null,
    timer: null,
    status: null,
    prev: null,      /* the previous counter sample: {at, counters} */
    rates: {},       /* key -> events per second */
    dlq: {offset: 0, total: 0, rows: [], selected: new Set(), filter: {}, open: null},
    live: {abort: null, paused: false, held: [], dropped: 0},
  };

  /* --- the API ---------------------------------------------------------------------------- */

  class AuthError extends Error {}

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  async function api(method, path, body, raw) {
    const headers = {Authorization: 'Bearer ' + token()};
    const init = {method, headers, cache: 'no-store'};
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    if (raw && raw.signal) {
      init.signal = raw.signal;
    }
    const res = await fetch(path, init);
    if (res.status === 401) {
      throw new AuthError('The token was refused.');
    }
    if (raw) {
      return res;
    }
    const text = await res.text();
    let doc = null;
    try {
      doc = text ? JSON.parse(text) : null;
    } catch (e) {
      doc = text;
    }
    return {status: res.status, ok: res.ok, doc};
  }

  async function apiJson(method, path, body) {
    const r = await api(method, path, body);
    if (!r.ok) {
      const msg = r.doc && r.doc.error ? r.doc.error : 'HTTP ' + r.status;
      throw new Error(method + ' ' + path.split('?')[0] + ': ' + msg);
    }
    return r.doc;
  }

  /* Runs an action of a page; a refused token logs out, other errors show in the banner. */
  async function guarded(fn) {
    try {
      const v = await fn();
      $('banner').hidden = true;
      return v;
    } catch (e) {
      if (e instanceof AuthError) {
        logout(e.message);
      } else if (e.name !== 'AbortError') {
        $('banner').textContent = e.message;
        $('banner').hidden = false;
      }
      return undefined;
    }
  }

  /* --- small DOM helpers ------------------------------------------------------------------ */

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') {
        e.className = v;
      } else if (k === 'text') {
        e.textContent = v;
      } else if (k.startsWith('on')) {
        e.addEventListener(k.slice(2), v);
      } else if (v !== undefined && v !== null) {
        e.setAttribute(k, v);
      }
    }
    for (const kid of kids) {
      e.append(kid instanceof Node ? kid : document.createTextNode(kid === null ? '' : String(kid)));
    }
    return e;
  }

  function svg(tag, attrs, ...kids) {
    const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'text') {
        e.textContent = v;
      } else {
        e.setAttribute(k, v);
      }
    }
    kids.forEach((k) => e.append(k));
    return e;
  }

  function td(text, cls) {
    return el('td', {class: cls}, text === undefined || text === null ? '' : text);
  }

  function fmtTime(ms) {
    if (!ms) {
      return '';
    }
    const d = new Date(ms);
    const pad = (n, w) => String(n).padStart(w || 2, '0');
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' +
           pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds()) + '.' +
           pad(d.getMilliseconds(), 3);
  }

  function fmtRate(r) {
    if (r === undefined) {
      return '–';
    }
    return r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2);
  }

  function fmtDuration(s) {
    s = Math.floor(s);
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    return h ? h + 'h' + m + 'm' : m ? m + 'm' + (s % 60) + 's' : s + 's';
  }

  function replaceRows(tbody, rows) {
    tbody.replaceChildren(...rows);
  }

  /* --- confirmation ----------------------------------------------------------------------- */

  function confirmAction(text, okLabel) {
    const dlg = $('confirm');
    $('confirm-text').textContent = text;
    $('confirm-ok').textContent = okLabel || 'Confirm';
    return new Promise((resolve) => {
      dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), {once: true});
      dlg.returnValue = 'cancel';
      dlg.showModal();
    });
  }

  /* --- overview --------------------------------------------------------------------------- */

  /* Prometheus text -> [{name, labels, value}] */
  function parseMetrics(text) {
    const out = [];
    for (const line of text.split('\n')) {
      if (!line || line[0] === '#') {
        continue;
      }
      const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
      if (!m) {
        continue;
      }
      const labels = {};
      const re = /(\w+)="((?:[^"\\]|\\.)*)"/g;
      let l;
      while ((l = re.exec(m[2] || '')) !== null) {
        labels[l[1]] = l[2].replace(/\\n/g, '\n').replace(/\\(.)/g, '$1');
      }
      out.push({name: m[1], labels, value: Number(m[3])});
    }
    return out;
  }

  /* The counters the graph's rates come from, keyed "src:NAME", "pipe:NAME", "sink:NAME"
   * (deliveries done) and "retry:SINK" (retries and timeouts). */
  function counters(samples) {
    const c = {};
    const add = (k, v) => {
      c[k] = (c[k] || 0) + v;
    };
    for (const s of samples) {
      if (s.name === 'plexus_events_received_total') {
        add('src:' + s.labels.source, s.value);
      } else if (s.name === 'plexus_deliveries_total') {
        if (s.labels.outcome === 'done') {
          add('pipe:' + s.labels.pipeline, s.value);
          add('sink:' + s.labels.sink, s.value);
        } else if (s.labels.outcome === 'retry' || s.labels.outcome === 'timeout') {
          add('retry:' + s.labels.sink, s.value);
        }
      }
    }
    return c;
  }

  function updateRates(c) {
    const now = performance.now();
    if (state.prev) {
      const dt = (now - state.prev.at) / 1000;
      const rates = {};
      for (const k of new Set([...Object.keys(c), ...Object.keys(state.prev.counters)])) {
        rates[k] = dt > 0 ? Math.max(0, (c[k] || 0) - (state.prev.counters[k] || 0)) / dt : 0;
      }
      state.rates = rates;
    }
    state.prev = {at: now, counters: c};
  }

  /* ok, retrying or failing: how a sink or a source is doing now. */
  function health(inst, st) {
    if (!inst || inst.state !== 'running') {
      return 'failing';
    }
    const sink = ((st.dispatcher || {}).sinks || []).find((s) => s.sink === inst.name);
    if (sink && sink.failing) {
      return 'failing';
    }
    if ((state.rates['retry:' + inst.name] || 0) > 0 ||
        (inst.kind.includes('sink') && inst.last_error)) {
      return 'retrying';
    }
    return 'ok';
  }

  function node(x, y, w, h, cls, id, lines) {
    const g = svg('g', {class: 'node ' + cls, id, transform: 'translate(' + x + ',' + y + ')'});
    g.append(svg('rect', {width: w, height: h, rx: 6}));
    lines.forEach((ln, i) => {
      g.append(svg('text', {x: 10, y: 17 + i * 15, class: ln.cls || '', text: ln.text}));
    });
    if (lines.title) {
      g.append(svg('title', {text: lines.title}));
    }
    return g;
  }

  function drawGraph(st) {
    const insts = st.instances || [];
    const byName = Object.fromEntries(insts.map((i) => [i.name, i]));
    const pipes = st.pipelines || [];
    const sources = insts.filter((i) => i.kind.includes('source'));
    const sinks = insts.filter((i) => i.kind.includes('sink'));
    const pending = (st.spool && st.spool.pending) || {};
    const W = 230, H = 50, GAP = 12, TOP = 34, X = [16, 330, 644];
    const rows = Math.max(sources.length, pipes.length, sinks.length, 1);
    const height = TOP + rows * (H + GAP) + 10;
    const root = svg('svg', {width: X[2] + W + 16, height, role: 'img',
                             'aria-label': 'sources, pipelines and sinks'});
    ['Sources', 'Pipelines', 'Sinks'].forEach((t, i) => {
      root.append(svg('text', {x: X[i], y: 20, class: 'col-title', text: t}));
    });
    const pos = {};
    const place = (list, col, prefix) => {
      const off = (rows - list.length) * (H + GAP) / 2;
      list.forEach((item, i) => {
        pos[prefix + item.name] = {x: X[col], y: TOP + off + i * (H + GAP)};
      });
    };
    place(sources, 0, 'src:');
    place(pipes, 1, 'pipe:');
    place(sinks, 2, 'sink:');
    const edges = svg('g', {});
    const nodes = svg('g', {});
    root.append(edges, nodes);
    const edge = (a, b, busy) => {
      if (!a || !b) {
        return;
      }
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
      edges.append(svg('path', {class: 'edge' + (busy ? ' busy' : ''),
                                d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`}));
    };
    for (const p of pipes) {
      const prate = state.rates['pipe:' + p.name] || 0;
      const froms = p.from === '*' ? sources.map((s) => s.name) : [p.from];
      froms.forEach((f) => edge(pos['src:' + f], pos['pipe:' + p.name], prate > 0));
      p.to.forEach((t) => edge(pos['pipe:' + p.name], pos['sink:' + t.sink], prate > 0));
    }
    for (const s of sources) {
      const p = pos['src:' + s.name];
      const lines = [{text: s.name, cls: 'name'},
                     {text: s.plugin + ' ' + (s.version || '?') + ' · gen ' + (s.generation ?? '–'),
                      cls: 'sub'},
                     {text: fmtRate(state.rates['src:' + s.name]) + ' events/s', cls: 'rate'}];
      lines.title = s.last_error || s.state;
      nodes.append(node(p.x, p.y, W, H + 0, health(s, st), 'node-src-' + s.name, lines));
    }
    for (const pl of pipes) {
      const p = pos['pipe:' + pl.name];
      const types = pl.types && pl.types.length ? pl.types.join(', ') : 'any type';
      const lines = [{text: pl.name, cls: 'name'},
                     {text: 'from ' + pl.from + ' · ' + types, cls: 'sub'},
                     {text: fmtRate(state.rates['pipe:' + pl.name]) + ' delivered/s', cls: 'rate'}];
      nodes.append(node(p.x, p.y, W, H, 'ok', 'node-pipe-' + pl.name, lines));
    }
    for (const s of sinks) {
      const p = pos['sink:' + s.name];
      const lines = [{text: s.name, cls: 'name'},
                     {text: s.plugin + ' ' + (s.version || '?') + ' · gen ' + (s.generation ?? '–'),
                      cls: 'sub'},
                     {text: fmtRate(state.rates['sink:' + s.name]) + ' /s · backlog ' +
                            (pending[s.name] ?? 0), cls: 'rate'}];
      lines.title = s.last_error || s.state;
      nodes.append(node(p.x, p.y, W, H, health(s, st), 'node-sink-' + s.name, lines));
    }
    $('graph').replaceChildren(root);
  }

  function drawSummary(st) {
    const sp = st.spool || {};
    const d = st.dispatcher || {};
    const card = (label, value, id) => el('div', {class: 'card', id},
                                          el('b', {}, value), el('span', {class: 'muted'}, label));
    let rin = 0;
    for (const [k, v] of Object.entries(state.rates)) {
      if (k.startsWith('src:')) {
        rin += v;
      }
    }
    $('summary').replaceChildren(
        card('events in / s', fmtRate(state.prev && Object.keys(state.rates).length ? rin : undefined),
             'sum-rate'),
        card('events received', (st.events || {}).received ?? 0, 'sum-received'),
        card('backlog', sp.pending_total ?? 0, 'sum-backlog'),
        card('dead letters', sp.dead_letters ?? 0, 'sum-dead'),
        card('delivered', d.delivered ?? 0, 'sum-delivered'),
        card('reloads ok / failed', (st.reload || {}).ok + ' / ' + (st.reload || {}).failed,
             'sum-reloads'));
  }

  function drawInstances(st) {
    const pending = (st.spool && st.spool.pending) || {};
    replaceRows($('instances').tBodies[0], (st.instances || []).map((i) => {
      const rate = i.kind.includes('source') ? state.rates['src:' + i.name]
                                             : state.rates['sink:' + i.name];
      return el('tr', {class: health(i, st), 'data-instance': i.name},
                td(i.name), td(i.kind), td(i.plugin), td(i.version), td(i.generation, 'num'),
                td(i.state), td(i.kind.includes('sink') ? pending[i.name] ?? 0 : '', 'num'),
                td(fmtRate(rate), 'num'), td(i.last_error, 'err'));
    }));
  }

  async function refreshOverview() {
    const [st, metrics] = await Promise.all([
      apiJson('GET', '/admin/status'),
      api('GET', '/metrics').then((r) => (r.ok && typeof r.doc === 'string' ? r.doc : '')),
    ]);
    state.status = st;
    updateRates(counters(parseMetrics(metrics)));
    const cl = st.cluster || {};
    $('host-line').textContent = 'plexus ' + st.version + ' · ' + (cl.host_id || '') + ' · up ' +
                                 fmtDuration(st.uptime_seconds || 0) +
                                 (st.ready ? '' : ' · not ready');
    drawSummary(st);
    drawGraph(st);
    drawInstances(st);
  }

  /* The status, for the pages that only need names. */
  async function ensureStatus() {
    if (!state.status) {
      state.status = await apiJson('GET', '/admin/status');
    }
    return state.status;
  }

  function fillSelect(sel, options, keepFirst) {
    const old = sel.value;
    const first = keepFirst ? [sel.options[0]] : [];
    sel.replaceChildren(...first, ...options.map(([v, t]) => el('option', {value: v}, t)));
    if ([...sel.options].some((o) => o.value === old)) {
      sel.value = old;
    }
  }

  /* --- dead letters ----------------------------------------------------------------------- */

  function localMs(input) {
    return input.value ? String(new Date(input.value).getTime()) : '';
  }

  function dlqQuery(extra) {
    const f = state.dlq.filter;
    const q = new URLSearchParams();
    for (const k of ['sink', 'pipeline', 'reason', 'since', 'until']) {
      if (f[k]) {
        q.set(k, f[k]);
      }
    }
    for (const [k, v] of Object.entries(extra)) {
      q.set(k, v);
    }
    return '/admin/dlq?' + q.toString();
  }

  async function refreshDlq() {
    const st = await ensureStatus();
    fillSelect($('f-sink'), st.instances.filter((i) => i.kind.includes('sink'))
                                        .map((i) => [i.name, i.name]), true);
    fillSelect($('f-pipeline'), st.pipelines.map((p) => [p.name, p.name]), true);
    const d = state.dlq;
    const doc = await apiJson('GET', dlqQuery({offset: d.offset, limit: PAGE_SIZE}));
    d.total = doc.total;
    if (d.offset > 0 && d.offset >= d.total) {
      d.offset = Math.max(0, Math.floor((d.total - 1) / PAGE_SIZE) * PAGE_SIZE);
      return refreshDlq();
    }
    d.rows = doc.dead_letters;
    const ids = new Set(d.rows.map((r) => r.id));
    for (const id of [...d.selected]) {
      if (!ids.has(id)) {
        d.selected.delete(id);
      }
    }
    replaceRows($('dlq-table').tBodies[0], d.rows.map((r) => {
      const box = el('input', {type: 'checkbox', 'aria-label': 'select ' + r.id});
      box.checked = d.selected.has(r.id);
      box.addEventListener('click', (ev) => {
        ev.stopPropagation();
        if (box.checked) {
          d.selected.add(r.id);
        } else {
          d.selected.delete(r.id);
        }
        dlqButtons();
      });
      return el('tr', {class: 'clickable', 'data-id': r.id, onclick: () => guarded(() => openDead(r.id))},
                el('td', {}, box), td(r.id, 'num'), td(fmtTime(r.died_at)), td(r.pipeline),
                td(r.sink), td(r.type), td(r.reason, 'err'), td(r.attempts, 'num'));
    }));
    const first = d.total ? d.offset + 1 : 0;
    $('dlq-range').textContent = first + '–' + (d.offset + d.rows.length) + ' of ' + d.total;
    $('dlq-prev').disabled = d.offset === 0;
    $('dlq-next').disabled = d.offset + d.rows.length >= d.total;
    dlqButtons();
  }

  function dlqButtons() {
    const n = state.dlq.selected.size;
    $('dlq-replay-sel').disabled = n === 0;
    $('dlq-purge-sel').disabled = n === 0;
    $('dlq-replay-sel').textContent = 'Replay selected' + (n ? ' (' + n + ')' : '');
    $('dlq-purge-sel').textContent = 'Purge selected' + (n ? ' (' + n + ')' : '');
    $('dlq-all').checked = n > 0 && state.dlq.rows.every((r) => state.dlq.selected.has(r.id));
  }

  async function openDead(id) {
    const r = await apiJson('GET', '/admin/dlq/' + id);
    state.dlq.open = id;
    $('dlq-detail-title').textContent = 'Dead letter ' + r.id;
    const fields = [['event', r.event_id], ['type', r.type], ['source', r.source],
                    ['pipeline', r.pipeline], ['sink', r.sink], ['action', r.action || '–'],
                    ['event time', fmtTime(r.time)], ['died', fmtTime(r.died_at)],
                    ['attempts', r.attempts], ['reason', r.reason]];
    $('dlq-detail-fields').replaceChildren(...fields.flatMap(([k, v]) => [el('dt', {}, k),
                                                                           el('dd', {}, v)]));
    replaceRows($('dlq-history').tBodies[0], (r.history || []).map((h) =>
        el('tr', {}, td(h.attempt, 'num'), td(fmtTime(h.at)), td(h.error, 'err'))));
    $('dlq-payload').textContent = JSON.stringify(r.payload, null, 2);
    $('dlq-detail').hidden = false;
    $('dlq-detail').scrollIntoView({block: 'nearest'});
  }

  /* Replays or purges `what`: {ids:[...]} or "all" (every dead letter the filter selects). */
  async function dlqAct(verb, what) {
    const d = state.dlq;
    const f = d.filter;
    let body, count;
    if (what === 'all') {
      if (f.pipeline || f.reason || f.since || f.until) {
        const doc = await apiJson('GET', dlqQuery({offset: 0, limit: 0}));
        body = {ids: doc.dead_letters.map((r) => r.id)};
        count = body.ids.length;
      } else {
        body = f.sink ? {all: true, sink: f.sink} : {all: true};
        count = d.total;
      }
      if (!count) {
        $('dlq-message').textContent = 'No dead letter to ' + verb + '.';
        return;
      }
    } else {
      body = what;
      count = what.ids.length;
    }
    const scope = what === 'all' ? (Object.values(f).some(Boolean) ? ' matching the filter' : '')
                                 : '';
    const text = (verb === 'replay' ? 'Replay ' : 'Purge ') + count + ' dead letter' +
                 (count === 1 ? '' : 's') + scope + '?' +
                 (verb === 'purge' ? ' They are deleted for good.' : ' They are delivered again.');
    if (!await confirmAction(text, verb === 'replay' ? 'Replay' : 'Purge')) {
      return;
    }
    const doc = await apiJson('POST', '/admin/dlq/' + verb, body);
    $('dlq-message').textContent = verb === 'replay' ? 'Replayed ' + doc.replayed + '.'
                                                     : 'Purged ' + doc.purged + '.';
    d.selected.clear();
    if (d.open && (what === 'all' || (what.ids || []).includes(d.open))) {
      $('dlq-detail').hidden = true;
      d.open = null;
    }
    await refreshDlq();
  }

  function initDlq() {
    $('dlq-filter').addEventListener('submit', (ev) => {
      ev.preventDefault();
      state.dlq.filter = {sink: $('f-sink').value, pipeline: $('f-pipeline').value,
                          reason: $('f-reason').value.trim(), since: localMs($('f-since')),
                          until: localMs($('f-until'))};
      state.dlq.offset = 0;
      state.dlq.selected.clear();
      guarded(refreshDlq);
    });
    $('dlq-prev').addEventListener('click', () => {
      state.dlq.offset = Math.max(0, state.dlq.offset - PAGE_SIZE);
      guarded(refreshDlq);
    });
    $('dlq-next').addEventListener('click', () => {
      state.dlq.offset += PAGE_SIZE;
      guarded(refreshDlq);
    });
    $('dlq-all').addEventListener('change', () => {
      for (const r of state.dlq.rows) {
        if ($('dlq-all').checked) {
          state.dlq.selected.add(r.id);
        } else {
          state.dlq.selected.delete(r.id);
        }
      }
      guarded(refreshDlq);
    });
    const sel = () => ({ids: [...state.dlq.selected]});
    $('dlq-replay-sel').addEventListener('click', () => guarded(() => dlqAct('replay', sel())));
    $('dlq-purge-sel').addEventListener('click', () => guarded(() => dlqAct('purge', sel())));
    $('dlq-replay-all').addEventListener('click', () => guarded(() => dlqAct('replay', 'all')));
    $('dlq-purge-all').addEventListener('click', () => guarded(() => dlqAct('purge', 'all')));
    const one = () => ({ids: [state.dlq.open]});
    $('dlq-detail-replay').addEventListener('click', () => guarded(() => dlqAct('replay', one())));
    $('dlq-detail-purge').addEventListener('click', () => guarded(() => dlqAct('purge', one())));
    $('dlq-detail-close').addEventListener('click', () => {
      $('dlq-detail').hidden = true;
      state.dlq.open = null;
    });
  }

  /* --- live ------------------------------------------------------------------------------- */

  function liveRow(rec) {
    let where = '', event = '', detail = '';
    if (rec.kind === 'event') {
      where = (rec.pipelines || []).join(', ');
      event = rec.type + ' from ' + rec.source + ' ' + rec.id;
    } else if (rec.kind === 'delivery') {
      where = rec.pipeline + ' → ' + rec.sink;
      event = rec.type + ' ' + rec.event_id;
      detail = (rec.attempt ? 'attempt ' + rec.attempt : '') +
               (rec.reason ? ': ' + rec.reason : '') +
               (rec.retry_in_ms ? ' (again in ' + rec.retry_in_ms + ' ms)' : '');
    } else {
      detail = JSON.stringify(rec);
    }
    const kind = rec.kind === 'delivery' ? rec.outcome : rec.kind;
    return el('tr', {class: 'k-' + kind}, td(fmtTime(rec.at || Date.now())), td(kind), td(where),
              td(event), td(detail));
  }

  function liveShow(recs) {
    const body = $('live-table').tBodies[0];
    const rows = recs.map(liveRow).reverse();
    body.prepend(...rows);
    while (body.rows.length > LIVE_MAX_ROWS) {
      body.deleteRow(body.rows.length - 1);
    }
  }

  function liveState(text) {
    $('live-state').textContent = text;
  }

  function liveStop() {
    if (state.live.abort) {
      state.live.abort.abort();
      state.live.abort = null;
    }
    $('live-start').textContent = 'Start';
    $('live-pause').disabled = true;
  }

  async function liveStart() {
    liveStop();
    const target = $('live-target').value;
    const [kind, name] = target.split(':');
    const q = new URLSearchParams();
    if (name) {
      q.set(kind, name);
    }
    const live = state.live;
    live.paused = false;
    live.held = [];
    live.dropped = 0;
    const ctl = new AbortController();
    live.abort = ctl;
    $('live-start').textContent = 'Restart';
    $('live-pause').disabled = false;
    $('live-pause').textContent = 'Pause';
    const res = await api('GET', '/admin/tap?' + q.toString(), undefined, {signal: ctl.signal});
    if (!res.ok) {
      const t = await res.text();
      liveStop();
      throw new Error('tap: ' + t);
    }
    liveState('watching ' + (name ? kind + ' ' + name : 'everything'));
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const {done, value} = await reader.read();
      if (done) {
        break;
      }
      buf += dec.decode(value, {stream: true});
      const lines = buf.split('\n');
      buf = lines.pop();
      const recs = [];
      for (const line of lines) {
        if (!line.trim()) {
          continue;
        }
        const rec = JSON.parse(line);
        if (rec.kind === 'tap') {
          continue;
        }
        if (rec.kind === 'end') {
          liveState('ended: ' + rec.reason);
        }
        recs.push(rec);
      }
      if (live.paused) {
        live.held.push(...recs);
        if (live.held.length > LIVE_MAX_HELD) {
          live.dropped += live.held.length - LIVE_MAX_HELD;
          live.held.splice(0, live.held.length - LIVE_MAX_HELD);
        }
        liveState('paused · ' + live.held.length + ' held' +
                  (live.dropped ? ', ' + live.dropped + ' not kept' : ''));
      } else if (recs.length) {
        liveShow(recs);
      }
    }
    if (state.live.abort === ctl) {
      liveStop();
    }
  }

  function initLive() {
    $('live-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      guarded(liveStart);
    });
    $('live-pause').addEventListener('click', () => {
      const live = state.live;
      live.paused = !live.paused;
      $('live-pause').textContent = live.paused ? 'Resume' : 'Pause';
      if (live.paused) {
        liveState('paused · 0 held');
      } else {
        liveShow(live.held);
        live.held = [];
        liveState('watching');
      }
    });
    $('live-clear').addEventListener('click', () => $('live-table').tBodies[0].replaceChildren());
  }

  async function refreshLive() {
    const st = await ensureStatus();
    fillSelect($('live-target'), [['all:', 'everything'],
                                  ...st.pipelines.map((p) => ['pipeline:' + p.name, 'pipeline ' + p.name]),
                                  ...st.instances.filter((i) => i.kind.includes('sink'))
                                      .map((i) => ['sink:' + i.name, 'sink ' + i.name])], false);
  }

  /* --- reloads ---------------------------------------------------------------------------- */

  async function refreshReloads() {
    const [log, cfg] = await Promise.all([apiJson('GET', '/admin/reloads'),
                                          apiJson('GET', '/admin/config')]);
    replaceRows($('reload-table').tBodies[0], log.reloads.map((r) =>
        el('tr', {class: r.result === 'ok' ? 'ok' : 'failing'}, td(r.at),
           td(r.instance ? 'instance ' + r.instance : 'configuration'), td(r.result),
           td(r.error, 'err'))));
    if (!log.reloads.length) {
      replaceRows($('reload-table').tBodies[0],
                  [el('tr', {}, el('td', {colspan: 4, class: 'muted'}, 'No reload since the start.'))]);
    }
    $('config-view').textContent = JSON.stringify(cfg, null, 2);
  }

  function initReloads() {
    $('reload-now').addEventListener('click', () => guarded(async () => {
      if (!await confirmAction('Reload the configuration file now?', 'Reload')) {
        return;
      }
      $('reload-result').textContent = 'reloading…';
      const r = await api('POST', '/admin/reload', {});
      const doc = r.doc || {};
      $('reload-result').textContent = doc.result === 'ok' ? 'Reloaded.'
                                                           : 'Reload failed: ' + (doc.error || r.status);
      $('reload-result').className = doc.result === 'ok' ? 'message' : 'message error';
      state.status = null;
      await refreshReloads();
    }));
  }

  /* --- playground ------------------------------------------------------------------------- */

  async function refreshPlayground() {
    const st = await ensureStatus();
    fillSelect($('route-source'), [['', '(none: only from "*")'],
                                   ...st.instances.filter((i) => i.kind.includes('source'))
                                       .map((i) => [i.name, i.name])], false);
  }

  async function runRoute() {
    $('route-error').textContent = '';
    let payload;
    try {
      payload = JSON.parse($('route-payload').value);
    } catch (e) {
      $('route-error').textContent = 'The payload is not JSON: ' + e.message;
      $('route-result').hidden = true;
      return;
    }
    const body = {payload};
    if ($('route-source').value) {
      body.source = $('route-source').value;
    }
    if ($('route-type').value.trim()) {
      body.type = $('route-type').value.trim();
    }
    const r = await api('POST', '/admin/route', body);
    if (!r.ok) {
      $('route-error').textContent = (r.doc && r.doc.error) || 'HTTP ' + r.status;
      $('route-result').hidden = true;
      return;
    }
    const doc = r.doc;
    const taken = doc.pipelines.filter((p) => p.matched).length;
    $('route-summary').textContent = doc.routed
        ? 'Routed: ' + taken + ' pipeline' + (taken === 1 ? '' : 's') + ', ' +
          doc.targets.length + ' target' + (doc.targets.length === 1 ? '' : 's') +
          (doc.errors ? ', ' + doc.errors + ' failed to map' : '')
        : 'No pipeline takes this event';
    replaceRows($('route-pipelines').tBodies[0], doc.pipelines.map((p) =>
        el('tr', {class: p.matched ? 'ok' : ''}, td(p.name), td(p.matched ? 'yes' : 'no'),
           td(p.reason || ''))));
    replaceRows($('route-targets').tBodies[0], doc.targets.map((t) =>
        el('tr', {}, td(t.pipeline), td(t.sink), td(t.action),
           t.error ? td('mapping error: ' + t.error, 'err')
                   : el('td', {}, el('code', {}, JSON.stringify(t.with))))));
    $('route-result').hidden = false;
  }

  /* --- pages and session ------------------------------------------------------------------ */

  const PAGES = {
    overview: {refresh: refreshOverview, every: OVERVIEW_MS},
    dlq: {refresh: refreshDlq, every: PAGE_MS},
    live: {refresh: refreshLive, every: 0},
    reloads: {refresh: refreshReloads, every: PAGE_MS},
    playground: {refresh: refreshPlayground, every: 0},
  };

  function show(page) {
    if (!PAGES[page]) {
      page = 'overview';
    }
    state.page = page;
    for (const name of Object.keys(PAGES)) {
      $('page-' + name).hidden = name !== page;
    }
    for (const a of document.querySelectorAll('header nav a')) {
      a.classList.toggle('active', a.dataset.page === page);
    }
    clearTimeout(state.timer);
    const tick = async () => {
      if (state.page !== page || !token()) {
        return;
      }
      await guarded(PAGES[page].refresh);
      if (PAGES[page].every && state.page === page && token()) {
        state.timer = setTimeout(tick, PAGES[page].every);
      }
    };
    tick();
  }

  function logout(message) {
    liveStop();
    clearTimeout(state.timer);
    sessionStorage.removeItem(TOKEN_KEY);
    state.status = null;
    state.prev = null;
    state.rates = {};
    $('app').hidden = true;
    $('login').hidden = false;
    $('login-error').textContent = message || '';
    $('token').value = '';
    $('token').focus();
  }

  async function login(ev) {
    ev.preventDefault();
    const t = $('token').value.trim();
    if (!t) {
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, t);
    try {
      const r = await api('GET', '/admin/status');
      if (!r.ok) {
        throw new Error('The host answered ' + r.status + '.');
      }
      state.status = r.doc;
    } catch (e) {
      sessionStorage.removeItem(TOKEN_KEY);
      $('login-error').textContent = e instanceof AuthError ? 'The token was refused.' : e.message;
      return;
    }
    start();
  }

  function start() {
    $('login').hidden = true;
    $('app').hidden = false;
    show(location.hash.slice(1));
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('login-form').addEventListener('submit', login);
    $('logout').addEventListener('click', () => logout(''));
    window.addEventListener('hashchange', () => {
      if (token()) {
        show(location.hash.slice(1));
      }
    });
    $('route-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      guarded(runRoute);
    });
    initDlq();
    initLive();
    initReloads();
    if (token()) {
      start();
    } else {
      logout('');
    }
  });
})();
