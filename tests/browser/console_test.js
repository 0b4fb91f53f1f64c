/* The web console in a real browser: headless Chromium (the system's) driven by puppeteer-core
 * from tests/peers. Run by tests/integration/test_console.py, which starts the host and passes
 * what this script needs as JSON in PX_CONSOLE_TEST:
 *   {mode: "main" | "scale", url, token, chromium, shots (folder for screenshots),
 *    main: config, bad_config, bad_error, secret, in_file, crm_file, crm_down, dead_ids
 *    scale: pipelines, dead_total}
 * Every step prints "step NAME ok"; the first failure prints "FAIL ..." and exits 1. The browser
 * is closed whatever happens. */
'use strict';

const fs = require('fs');
const path = require('path');
const {createRequire} = require('module');

const P = JSON.parse(process.env.PX_CONSOLE_TEST || '{}');
const peers = createRequire(path.join(__dirname, '..', 'peers', 'package.json'));
const puppeteer = peers('puppeteer-core');
const SCALE = Number(process.env.PX_TEST_TIMEOUT_SCALE || 1);
const T = (ms) => ms * SCALE;

function check(cond, msg) {
  if (!cond) {
    throw new Error(msg);
  }
}

/* Polls fn (async) until it returns a truthy value; the value, or an error naming what. */
async function until(what, fn, ms = 20000) {
  const end = Date.now() + T(ms);
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) {
        return last;
      }
    } catch (e) {
      last = e.message;
    }
    if (Date.now() > end) {
      throw new Error('timed out waiting for ' + what + ' (last: ' + JSON.stringify(last) + ')');
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function step(name, fn) {
  const t0 = Date.now();
  await fn();
  console.log(`step ${name} ok (${Date.now() - t0} ms)`);
}

const text = (page, sel) => page.$eval(sel, (e) => e.textContent).catch(() => null);
const rows = (page, sel) => page.$$eval(sel + ' tbody tr', (r) => r.length);

async function shot(page, name) {
  fs.mkdirSync(P.shots, {recursive: true});
  await page.screenshot({path: path.join(P.shots, name + '.png'), fullPage: true});
}

async function api(method, p, body) {
  const res = await fetch(P.url + p, {
    method, headers: {Authorization: 'Bearer ' + P.token, 'Content-Type': 'application/json'},
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return {status: res.status, doc: await res.json()};
}

function appendLines(file, objs) {
  fs.appendFileSync(file, objs.map((o) => JSON.stringify(o) + '\n').join(''));
}

async function go(page, hash) {
  await page.evaluate((h) => {
    location.hash = h;
  }, hash);
  await page.waitForSelector('#page-' + hash + ':not([hidden])');
}

async function login(page, token) {
  await page.waitForSelector('#login:not([hidden])');
  await page.$eval('#token', (e) => {
    e.value = '';
  });
  await page.type('#token', token);
  await page.click('#login-button');
}

async function confirm(page, ok) {
  await page.waitForSelector('#confirm[open]');
  await page.click(ok ? '#confirm-ok' : '#confirm-cancel');
  await page.waitForSelector('#confirm:not([open])');
}

/* The rate a graph node shows, as a number (NaN while there is none yet). */
async function nodeRate(page, id) {
  const t = await text(page, '#' + id + ' text.rate');
  return t ? parseFloat(t) : NaN;
}

async function mainScenario(page, seen) {
  await step('static files need no token and carry a strict CSP', async () => {
    const res = await page.goto(P.url + '/', {waitUntil: 'load'});
    check(res.status() === 200, 'GET / answered ' + res.status());
    const csp = res.headers()['content-security-policy'] || '';
    check(csp.includes("default-src 'none'") && csp.includes("script-src 'self'") &&
          csp.includes("connect-src 'self'"), 'CSP: ' + csp);
    const st = await page.evaluate(async () => (await fetch('/admin/status')).status);
    check(st === 401, 'a data call without the token answered ' + st);
  });

  await step('a wrong token is refused', async () => {
    await login(page, 'wrong-token-0000');
    await until('the refusal', async () =>
      ((await text(page, '#login-error')) || '').includes('refused'));
    check(!(await page.$('#app:not([hidden])')), 'the console opened on a wrong token');
    check(await page.evaluate(() => sessionStorage.length === 0), 'a refused token was kept');
    await shot(page, 'login');
  });

  await step('log in and see the graph of two pipelines', async () => {
    await login(page, P.token);
    await page.waitForSelector('#app:not([hidden])');
    for (const id of ['node-src-src', 'node-pipe-archive', 'node-pipe-leads', 'node-sink-out',
                      'node-sink-crm']) {
      await page.waitForSelector('#' + id);
    }
    const n = await page.$$eval('#graph g.node[id^="node-pipe-"]', (e) => e.length);
    check(n === 2, n + ' pipelines drawn');
    const edges = await page.$$eval('#graph path.edge', (e) => e.length);
    check(edges === 4, edges + ' edges drawn (src->archive, src->leads, archive->out, leads->crm)');
    const sink = await page.$eval('#node-sink-out', (g) => g.textContent);
    check(/testsink \S+ · gen 1/.test(sink), 'sink node without plugin version and generation: ' +
          sink);
    const crm = await page.$eval('#node-sink-crm', (g) => g.getAttribute('class'));
    check(/retrying|failing/.test(crm), 'the rejecting sink is not highlighted: ' + crm);
    const out = await page.$eval('#node-sink-out', (g) => g.getAttribute('class'));
    check(/\bok\b/.test(out), 'the healthy sink is highlighted: ' + out);
    const inToken = await page.evaluate(() => [sessionStorage.getItem('plexus.admin.token'),
                                               localStorage.length]);
    check(inToken[0] === P.token && inToken[1] === 0, 'token storage: ' + JSON.stringify(inToken));
  });

  await step('the rate moves under load', async () => {
    await until('a first rate of 0', async () => (await nodeRate(page, 'node-src-src')) === 0);
    let seq = 0;
    const load = setInterval(() => {
      const batch = [];
      for (let i = 0; i < 20; i++) {
        batch.push({type: 'test.load', n: seq++});
      }
      appendLines(P.in_file, batch);
    }, 50);
    try {
      await until('a source rate above 0', async () => (await nodeRate(page, 'node-src-src')) > 0);
      await until('a sink rate above 0', async () => (await nodeRate(page, 'node-sink-out')) > 0);
      await until('an events/s card above 0', async () =>
        parseFloat(await text(page, '#sum-rate b')) > 0);
      await shot(page, 'overview');
    } finally {
      clearInterval(load);
    }
  });

  const ids = P.dead_ids.slice().sort((a, b) => a - b);
  await step('dead letters: listed, filtered, one opened', async () => {
    await go(page, 'dlq');
    await until('3 dead letters', async () => (await rows(page, '#dlq-table')) === ids.length &&
                                              (await text(page, '#dlq-range')) === '1–3 of 3');
    await page.select('#f-pipeline', 'archive');
    await page.click('#dlq-filter button[type=submit]');
    await until('an empty filter', async () => (await text(page, '#dlq-range')) === '0–0 of 0');
    await page.select('#f-pipeline', 'leads');
    await page.type('#f-reason', 'REJECT');
    await page.click('#dlq-filter button[type=submit]');
    await until('the filter by reason', async () => (await text(page, '#dlq-range')) === '1–3 of 3');
    await shot(page, 'dead-letters');
    await page.click(`#dlq-table tr[data-id="${ids[0]}"] td:nth-child(2)`);
    await page.waitForSelector('#dlq-detail:not([hidden])');
    await until('the attempts', async () => (await rows(page, '#dlq-history')) >= 1);
    const hist = await text(page, '#dlq-history tbody');
    check(hist.includes('told to reject'), 'attempt error missing: ' + hist);
    const payload = await text(page, '#dlq-payload');
    check(payload.includes('lead0@example.com'), 'payload missing: ' + payload);
    await shot(page, 'dead-letter');
  });

  await step('replay one: the sink then receives it', async () => {
    fs.rmSync(P.crm_down, {force: true});
    const event = (await api('GET', '/admin/dlq/' + ids[0])).doc.event_id;
    await page.click('#dlq-detail-replay');
    await confirm(page, true);
    await until('the replay message', async () =>
      (await text(page, '#dlq-message')) === 'Replayed 1.');
    await until('the delivery to crm', async () => fs.existsSync(P.crm_file) &&
        fs.readFileSync(P.crm_file, 'utf8').split('\n').filter(Boolean).map(JSON.parse)
          .some((l) => l.event === event && l.outcome === 'ok'));
    await until('2 dead letters left', async () => (await text(page, '#dlq-range')) === '1–2 of 2');
  });

  await step('purge: cancelled, then all confirmed', async () => {
    await page.click('#dlq-purge-all');
    await confirm(page, false);
    check((await api('GET', '/admin/dlq')).doc.total === 2, 'a cancelled purge purged');
    await page.click('#dlq-all');
    await until('2 selected', async () =>
      (await text(page, '#dlq-purge-sel')) === 'Purge selected (2)');
    await page.click('#dlq-purge-sel');
    await confirm(page, true);
    await until('the purge message', async () => (await text(page, '#dlq-message')) === 'Purged 2.');
    await until('an empty list', async () => (await text(page, '#dlq-range')) === '0–0 of 0');
    check((await api('GET', '/admin/dlq')).doc.total === 0, 'dead letters left after the purge');
  });

  await step('live: the tap of a pipeline, paused and resumed', async () => {
    await go(page, 'live');
    await page.waitForSelector('#live-target option[value="pipeline:archive"]');
    await page.select('#live-target', 'pipeline:archive');
    await page.click('#live-start');
    await until('the tap', async () => ((await text(page, '#live-state')) || '').startsWith('watching'));
    appendLines(P.in_file, [0, 1, 2].map((n) => ({type: 'test.live', n})));
    await until('3 events and 3 deliveries', async () =>
      (await page.$$eval('#live-table tbody tr.k-event', (r) => r.length)) >= 3 &&
      (await page.$$eval('#live-table tbody tr.k-ok', (r) => r.length)) >= 3);
    const leads = await text(page, '#live-table tbody');
    check(!leads.includes('crm'), 'a pipeline tap shows another pipeline');
    await page.click('#live-pause');
    const shown = await rows(page, '#live-table');
    appendLines(P.in_file, [3, 4].map((n) => ({type: 'test.live', n})));
    await until('held records', async () => /paused · [1-9]\d* held/.test(await text(page, '#live-state')));
    check(await rows(page, '#live-table') === shown, 'rows were added while paused');
    await shot(page, 'live');
    await page.click('#live-pause');
    await until('the held records shown', async () => (await rows(page, '#live-table')) > shown);
  });

  await step('reloads: a failed reload shows its error; the configuration is masked', async () => {
    await go(page, 'reloads');
    await until('the configuration', async () =>
      ((await text(page, '#config-view')) || '').includes('"pipelines"'));
    const cfg = await text(page, '#config-view');
    check(!cfg.includes(P.secret) && !cfg.includes(P.token), 'a secret in the configuration view');
    check(cfg.includes('"secret_token": "***"'), 'the secret option is not masked');
    const good = fs.readFileSync(P.config, 'utf8');
    fs.writeFileSync(P.config, P.bad_config);
    try {
      await page.click('#reload-now');
      await confirm(page, true);
      await until('the failure', async () =>
        ((await text(page, '#reload-result')) || '').startsWith('Reload failed'));
      // the history refreshes after the result line: wait for its row
      const first = await until('the failed reload in the history', async () => {
        const row = await page.$eval('#reload-table tbody tr', (r) => r.textContent);
        return row.includes('failed') ? row : null;
      });
      check(first.includes(P.bad_error), 'history row: ' + first);
      await shot(page, 'reloads');
    } finally {
      fs.writeFileSync(P.config, good);
    }
  });

  await step('playground: the route of an event', async () => {
    await go(page, 'playground');
    await page.waitForSelector('#route-source option[value="src"]');
    await page.select('#route-source', 'src');
    await page.type('#route-type', 'lead.new');
    await page.$eval('#route-payload', (e) => {
      e.value = '{"email": "pg@example.com"}';
    });
    await page.click('#route-run');
    await until('the result', async () =>
      ((await text(page, '#route-summary')) || '').startsWith('Routed: 1 pipeline, 1 target'));
    const targets = await text(page, '#route-targets tbody');
    check(targets.includes('crm') && targets.includes('pg@example.com'), 'targets: ' + targets);
    const pipes = await text(page, '#route-pipelines tbody');
    check(pipes.includes('archive') && pipes.includes('is not'), 'pipelines: ' + pipes);
    await shot(page, 'playground');
  });

  await step('the token never left the Authorization header', async () => {
    check(seen.requests.every((u) => !u.includes(P.token)), 'the token in a URL');
    /* data: URLs are the browser's own (the date input's icon): nothing goes out for them */
    const net = seen.requests.filter((u) => !u.startsWith('data:'));
    check(net.every((u) => u.startsWith(P.url)), 'a request elsewhere: ' +
          net.find((u) => !u.startsWith(P.url)));
    check(seen.csp.length === 0, 'CSP violations: ' + seen.csp.join('; '));
  });
}

async function scaleScenario(page, seen) {
  await page.goto(P.url + '/', {waitUntil: 'load'});
  await step('log in with a ' + P.pipelines + '-pipeline configuration', async () => {
    await login(page, P.token);
    await until('every pipeline drawn', async () =>
      (await page.$$eval('#graph g.node[id^="node-pipe-"]', (e) => e.length)) === P.pipelines);
    await shot(page, 'overview-scale');
  });
  await step(P.dead_total + ' dead letters, a page at a time', async () => {
    const t0 = Date.now();
    await go(page, 'dlq');
    await until('the first page', async () =>
      (await text(page, '#dlq-range')) === `1–50 of ${P.dead_total}`);
    console.log(`first page of ${P.dead_total} shown in ${Date.now() - t0} ms`);
    check(await rows(page, '#dlq-table') === 50, 'not 50 rows on a page');
    const t1 = Date.now();
    await page.click('#dlq-next');
    await until('the second page', async () =>
      (await text(page, '#dlq-range')) === `51–100 of ${P.dead_total}`);
    console.log(`next page in ${Date.now() - t1} ms`);
    await page.select('#f-pipeline', 'p01');
    await page.click('#dlq-filter button[type=submit]');
    await until('a filtered page', async () =>
      (await text(page, '#dlq-range')) === `1–50 of ${P.dead_total / 2}`);
    await shot(page, 'dead-letters-scale');
  });
  await step('refreshes without reloading the page', async () => {
    const marker = await page.evaluate(() => {
      window.notReloaded = 1;
      return document.querySelector('#sum-received b') ? 1 : 0;
    });
    await go(page, 'overview');
    const before = await text(page, '#sum-received b');
    appendLines(P.in_file, [{type: 'other.x'}]);
    await until('the received count to change', async () =>
      (await text(page, '#sum-received b')) !== before);
    check(await page.evaluate(() => window.notReloaded === 1), 'the page was reloaded');
    void marker;
  });
  check(seen.csp.length === 0, 'CSP violations: ' + seen.csp.join('; '));
}

(async () => {
  let browser = null;
  let code = 1;
  try {
    browser = await puppeteer.launch({
      executablePath: P.chromium, headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'],
    });
    const page = await browser.newPage();
    await page.setViewport({width: 1280, height: 860});
    page.setDefaultTimeout(T(20000));
    const seen = {requests: [], csp: [], errors: []};
    page.on('request', (r) => seen.requests.push(r.url()));
    page.on('console', (m) => {
      if (/Content Security Policy/i.test(m.text())) {
        seen.csp.push(m.text());
      }
    });
    page.on('pageerror', (e) => seen.errors.push(e.message));
    if (P.mode === 'scale') {
      await scaleScenario(page, seen);
    } else {
      await mainScenario(page, seen);
    }
    check(seen.errors.length === 0, 'script errors in the page: ' + seen.errors.join('; '));
    code = 0;
  } catch (e) {
    console.log('FAIL ' + (e && e.stack ? e.stack : e));
  } finally {
    if (browser) {
      await browser.close().catch(() => {});
    }
  }
  process.exit(code);
})();
