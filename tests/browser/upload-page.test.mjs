// upload-page.test.mjs — the upload page (GET /) in a real browser: headless
// Chromium (Debian's /usr/bin/chromium) driven by playwright-core, against
// the real imgpipe-broker, two imgpipe-resizers and an imgpipe-frontend
// with API keys on, all on free loopback ports.
//
// Why: the page is the API as a person meets it: an upload with progress,
// a job going queued -> processing -> done, thumbnails fetched with the
// key, a bad file's error in words. Only a browser runs its JavaScript;
// only the real programs give the answers it must show.
//
// Checks, in order: / without a key (ETag, no-cache); an upload without the
// key shows the 401; the key in sessionStorage; photos go waiting >
// uploading (progress to the whole body) > queued > done with thumbnails of
// the right size and format and a download link; bad files end failed with
// the server's message; a dropped file; the download itself; a job caught
// running shows processing; (NEW_OPTIONS: sizes, contain, auto); no request
// off the origin, only public routes, the key in no URL, no JS error; the
// screenshot; Clear; a reload revalidates (304) and keeps the key.
//
// Usage (tests/browser/run.sh calls it):
//   node upload-page.test.mjs BUILD_DIR OUT_DIR
// env: IMGP_CORPUS (default SOURCE/../shared/corpus): photos and bad files
// from it when present; otherwise the browser makes them (canvas).
// Prints "ok - ..." / "not ok - ..." per check, what it observed, and ends
// with "N passed, N failed"; exit 0 when nothing failed. Saves
// OUT_DIR/upload-page.png. Every wait has a deadline; nothing asserts on
// time.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const source = path.resolve(here, '../..');
const build = path.resolve(process.argv[2] || path.join(source, 'build'));
const out = path.resolve(process.argv[3] || path.join(build, 'browser'));
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const KEY = 'br0wSeRkEy-0123456789abcdefGHIJKL';   // the page's API key (test only)
// The checks of the newer options, all on by default; a list in
// IMGP_BROWSER_NEW_OPTIONS runs only those named: "sizes" (several boxes,
// the status JSON's thumbnails list), "contain" (fit=contain, transparent
// border), "auto" (format=auto served as AVIF to this browser's Accept).
const NEW_OPTIONS = (process.env.IMGP_BROWSER_NEW_OPTIONS ?? 'sizes,contain,auto').split(',').filter(Boolean);
const START_MS = 30000;         // the processes come up
const JOBS_MS = 90000;          // every card of a batch reaches done or failed
const SLOW_SIDE = 4000;         // the slow PNG: 16 MP of 16-bit RGBA a resizer must unfilter

let passed = 0, failed = 0;
function check(ok, what, detail) {
  if (ok) passed++; else failed++;
  console.log(`${ok ? 'ok' : 'not ok'} - ${what}${detail ? ` (${detail})` : ''}`);
  return ok;
}
const note = (text) => console.log(`# ${text}`);

// --- The processes ----------------------------------------------------------

// Free loopback ports: bound all at once (so they differ), then released.
async function freePorts(count) {
  const servers = await Promise.all(Array.from({ length: count }, () => new Promise((ok, no) => {
    const s = net.createServer();
    s.once('error', no);
    s.listen(0, '127.0.0.1', () => ok(s));
  })));
  const ports = servers.map((s) => s.address().port);
  await Promise.all(servers.map((s) => new Promise((ok) => s.close(ok))));
  return ports;
}

const children = [];
function start(name, exe, args, dir) {
  const log = fs.openSync(path.join(dir, `${name}.log`), 'w');
  const child = spawn(path.join(build, exe), args, { stdio: ['ignore', log, log] });
  child.logPath = path.join(dir, `${name}.log`);
  child.label = name;
  children.push(child);
  return child;
}

async function stopAll() {
  await Promise.all(children.map((c) => new Promise((ok) => {
    if (c.exitCode !== null || c.signalCode !== null) return ok();
    const kill = setTimeout(() => c.kill('SIGKILL'), 10000);
    c.once('exit', () => { clearTimeout(kill); ok(); });
    c.kill('SIGTERM');
  })));
}
// No program outlives the test: killed at exit, and on the SIGTERM of
// run.sh's timeout (a signal skips 'exit' handlers otherwise).
process.on('exit', () => children.forEach((c) => { try { c.kill('SIGKILL'); } catch (_) { } }));
for (const signal of ['SIGTERM', 'SIGINT'])
  process.on(signal, () => {
    console.log(`not ok - stopped by ${signal}`);
    process.exit(1);
  });

async function waitFor(what, deadlineMs, cond) {
  const end = Date.now() + deadlineMs;
  for (;;) {
    const dead = children.find((c) => c.exitCode !== null || c.signalCode !== null);
    if (dead) throw new Error(`${dead.label} exited while waiting for ${what}: see ${dead.logPath}`);
    if (await cond()) return;
    if (Date.now() > end) throw new Error(`no ${what} within ${deadlineMs} ms`);
    await new Promise((ok) => setTimeout(ok, 50));
  }
}

async function startStack(dir) {
  const [intake, status, jobs, http] = await freePorts(4);
  const ep = (p) => `tcp://127.0.0.1:${p}`;
  fs.writeFileSync(path.join(dir, 'keys'), `page ${KEY}\n`);
  fs.mkdirSync(path.join(dir, 'data'));
  // The processing check stops the resizers for a moment: the broker must
  // not count them lost (and re-queue the job) meanwhile.
  start('broker', 'broker/imgpipe-broker', ['--intake', ep(intake), '--status', ep(status),
        '--jobs', ep(jobs), '--data-dir', path.join(dir, 'data'), '--heartbeat-timeout-ms', '60000'], dir);
  for (const i of [1, 2])
    start(`resizer${i}`, 'resizer/imgpipe-resizer', ['--jobs', ep(jobs)], dir);
  start('frontend', 'http-frontend/imgpipe-frontend', ['--listen', `127.0.0.1:${http}`,
        '--intake', ep(intake), '--status', ep(status), '--threads', '64',
        '--api-keys', path.join(dir, 'keys')], dir);
  const base = `http://127.0.0.1:${http}`;
  // /readyz: the broker answers and a resizer is live.
  await waitFor('200 from /readyz', START_MS, async () => {
    try { return (await fetch(`${base}/readyz`)).status === 200; } catch (_) { return false; }
  });
  return base;
}

// --- Fixtures ----------------------------------------------------------------

// Photos and bad files: from the corpus when there is one, each with the
// size the thumbnail comes from; else null (the browser makes them).
function corpusFixtures() {
  const corpus = process.env.IMGP_CORPUS || path.join(source, '..', 'shared', 'corpus');
  const want = ['photos/p01_ColdRipple_1280x800.jpg', 'photos/p06_friends_by_Aitzol_Berasategi.jpg',
                'formats/png_rgba_transparent.png', 'bad/jpeg_truncated_half.jpg', 'bad/text.png'];
  let manifest;
  try { manifest = fs.readFileSync(path.join(corpus, 'MANIFEST.tsv'), 'utf8'); } catch (_) { return null; }
  const rows = new Map(manifest.split('\n').map((l) => l.split('\t')).map((f) => [f[0], f]));
  if (!want.every((p) => rows.has(p) && fs.existsSync(path.join(corpus, p)))) return null;
  return want.map((p) => {
    const [, format, width, height, , expect] = rows.get(p);
    return { name: path.basename(p), buffer: fs.readFileSync(path.join(corpus, p)),
             mimeType: format === 'png' ? 'image/png' : format === 'jpeg' ? 'image/jpeg' : 'application/octet-stream',
             width: +width || 0, height: +height || 0, ok: expect === 'ok' };
  });
}

// The same kinds of files drawn by the browser: a JPEG photo-like
// landscape, a PNG portrait with alpha, the JPEG cut in half, text.
async function madeFixtures(page) {
  const made = await page.evaluate(async () => {
    async function draw(w, h, type, alpha) {
      const c = document.createElement('canvas');
      c.width = w; c.height = h;
      const g = c.getContext('2d');
      const grad = g.createLinearGradient(0, 0, w, h);
      grad.addColorStop(0, '#24476b'); grad.addColorStop(1, '#e0a458');
      g.fillStyle = grad; g.fillRect(0, 0, w, h);
      for (let i = 0; i < 400; i++) {     // detail, so the JPEG is not trivial
        g.fillStyle = `hsla(${(i * 37) % 360},70%,60%,${alpha ? 0.5 : 1})`;
        g.fillRect((i * 97) % w, (i * 53) % h, 7 + (i % 23), 5 + (i % 17));
      }
      if (alpha) g.clearRect(0, 0, w / 4, h / 4);
      const blob = await new Promise((ok) => c.toBlob(ok, type, 0.9));
      return Array.from(new Uint8Array(await blob.arrayBuffer()));
    }
    return { jpeg: await draw(1280, 800, 'image/jpeg', false), png: await draw(600, 900, 'image/png', true) };
  });
  const jpeg = Buffer.from(made.jpeg), png = Buffer.from(made.png);
  return [
    { name: 'landscape.jpg', mimeType: 'image/jpeg', buffer: jpeg, width: 1280, height: 800, ok: true },
    { name: 'portrait-alpha.png', mimeType: 'image/png', buffer: png, width: 600, height: 900, ok: true },
    { name: 'truncated.jpg', mimeType: 'image/jpeg', buffer: jpeg.subarray(0, jpeg.length >> 1), width: 0, height: 0, ok: false },
    { name: 'notes.png', mimeType: 'image/png', buffer: Buffer.from('this is text, not an image\n'), width: 0, height: 0, ok: false },
  ];
}

// A w x h PNG of one colour, 16-bit RGBA, every row Paeth-filtered: a few
// hundred kB that a resizer takes about a second to decode (PNG has no
// shrink-on-load), so a test can catch its job while it runs. (The
// harness's h_make_flat_png, written out by hand: node has no encoder.)
async function slowPng(w, h) {
  const table = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => {
    let c = 0xffffffff;
    for (const b of buf) c = table[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const len = Buffer.alloc(4), sum = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    sum.writeUInt32BE(crc(body));
    return Buffer.concat([len, body, sum]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0); ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 16; ihdr[9] = 6;                  // 16 bits, RGBA
  // Paeth of a flat image: the first pixel as it is, zeros everywhere else.
  const first = Buffer.alloc(1 + w * 8), other = Buffer.alloc(1 + w * 8);
  first[0] = other[0] = 4;
  [10000, 30000, 50000, 65535].forEach((v, i) => first.writeUInt16BE(v, 1 + 2 * i));
  const deflate = zlib.createDeflate({ level: 9 }), parts = [];
  deflate.on('data', (d) => parts.push(d));
  for (let y = 0; y < h; y++)
    if (!deflate.write(y ? other : first)) await once(deflate, 'drain');
  deflate.end();
  await once(deflate, 'end');
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
                        chunk('IHDR', ihdr), chunk('IDAT', Buffer.concat(parts)), chunk('IEND', Buffer.alloc(0))]);
}

// What fit=inside makes of w x h in a box (no enlarging), as libvips
// rounds it (the nearest pixel; a side is never 0).
function inside(w, h, bw, bh) {
  const scale = Math.min(bw / w, bh / h, 1);
  return [Math.max(1, Math.round(w * scale)), Math.max(1, Math.round(h * scale))];
}

// --- The page ----------------------------------------------------------------

// Set the options and pick the files (or drop them on the drop zone, as a
// drag from the desktop does); returns the index of the first new card.
async function pick(page, files, opts, how = 'pick') {
  const before = await page.locator('.card').count();
  for (const [id, value] of Object.entries(opts))
    await page.locator(`#${id}`).evaluate((el, v) => {
      el.value = v;
      el.dispatchEvent(new Event('change'));
    }, String(value));
  if (how === 'drop')
    await page.locator('#drop').evaluate((zone, list) => {
      const dt = new DataTransfer();
      for (const f of list)
        dt.items.add(new File([Uint8Array.from(atob(f.data), (c) => c.charCodeAt(0))], f.name, { type: f.mimeType }));
      for (const type of ['dragover', 'drop'])
        zone.dispatchEvent(new DragEvent(type, { dataTransfer: dt, bubbles: true, cancelable: true }));
    }, files.map(({ name, mimeType, buffer }) => ({ name, mimeType, data: buffer.toString('base64') })));
  else
    await page.locator('#files').setInputFiles(files.map(({ name, mimeType, buffer }) => ({ name, mimeType, buffer })));
  return before;
}

// Set the options, pick (or drop) the files, and wait until every new
// card is final.
async function batch(page, files, opts, how) {
  return results(page, await pick(page, files, opts, how));
}

// Wait until every card from index `before` on is final; what each shows.
async function results(page, before) {
  const cards = page.locator('.card');
  await page.waitForFunction((n) => {
    const all = [...document.querySelectorAll('.card')].slice(n);
    return all.length > 0 && all.every((c) => c.dataset.state === 'done' || c.dataset.state === 'failed');
  }, before, { timeout: JOBS_MS, polling: 100 });
  const result = [];
  for (let i = before; i < await cards.count(); i++) {
    const card = cards.nth(i);
    result.push(await card.evaluate((c) => ({
      file: c.dataset.file,
      state: c.dataset.state,
      seen: [...(c.seen || []), c.dataset.state].filter((s, i, all) => s !== all[i - 1]).join('>'),
      sent: c.dataset.sent || '',
      error: c.querySelector('.error').textContent,
      thumbs: [...c.querySelectorAll('img.thumb')].map((img) => ({
        natural: [img.naturalWidth, img.naturalHeight],
        // alpha at the middle of the left edge and at the centre
        alpha: (() => {
          const cv = document.createElement('canvas');
          cv.width = img.naturalWidth; cv.height = img.naturalHeight;
          const g = cv.getContext('2d');
          g.drawImage(img, 0, 0);
          const y = img.naturalHeight >> 1;
          return [g.getImageData(0, y, 1, 1).data[3], g.getImageData(img.naturalWidth >> 1, y, 1, 1).data[3]];
        })(),
        said: [+img.dataset.width, +img.dataset.height],
        format: img.dataset.format,
        link: img.closest('figure').querySelector('a[download]')?.download || '',
      })),
    })));
  }
  return result;
}

// A job caught while it runs: its card must say processing. The slow
// PNG's job is watched through the API; as soon as the broker says
// processing, the resizers are stopped (SIGSTOP), so it stays so until the
// page has shown it (its next ?wait=1 poll), then they go on (SIGCONT).
async function processing(page, base) {
  const file = { name: 'slow.png', mimeType: 'image/png', buffer: await slowPng(SLOW_SIDE, SLOW_SIDE) };
  const before = await pick(page, [file], { sizes: '', width: 200, height: 200, fit: 'inside', format: 'png' });
  await page.waitForFunction((n) => document.querySelectorAll('.card')[n]?.dataset.id, before,
                             { timeout: JOBS_MS, polling: 10 });
  const id = await page.locator('.card').nth(before).getAttribute('data-id');
  const resizers = children.filter((c) => c.label.startsWith('resizer'));
  let status = 'queued';
  for (const end = Date.now() + JOBS_MS; status === 'queued' && Date.now() < end; ) {
    const resp = await fetch(`${base}/v1/images/${id}`, { headers: { Authorization: `Bearer ${KEY}` } });
    status = (await resp.json()).status;
  }
  let shown = false;
  if (status === 'processing') {
    resizers.forEach((c) => c.kill('SIGSTOP'));
    try {
      await page.waitForFunction((n) => document.querySelectorAll('.card')[n].dataset.state === 'processing',
                                 before, { timeout: 20000, polling: 50 });
      shown = true;
    } catch (_) {
    } finally {
      resizers.forEach((c) => c.kill('SIGCONT'));
    }
  }
  const [card] = await results(page, before);
  const t = card.thumbs[0];
  check(shown && card.seen === 'waiting>uploading>queued>processing>done' && t
        && t.natural[0] === 200 && t.natural[1] === 200,
        `${file.name} ${SLOW_SIDE}x${SLOW_SIDE} (${file.buffer.length} B) caught running: its card showed processing, then done with 200x200`,
        `API said ${status}; states ${card.seen}; ${t ? t.natural.join('x') : card.error}`);
}

// The options of issue 11 named in NEW_OPTIONS.
async function newOptions(page, photos) {
  const clear = { sizes: '', fit: 'inside' };
  if (NEW_OPTIONS.includes('sizes')) {
    const f = photos[0];
    const [card] = await batch(page, [f], { ...clear, width: 200, height: 200, sizes: '100x100,400x300', format: 'jpeg' });
    const want = [[200, 200], [100, 100], [400, 300]].map(([w, h]) => inside(f.width, f.height, w, h));
    const got = card.thumbs.map((t) => t.natural);
    check(card.state === 'done' && got.length === 3
          && got.every((g, i) => Math.abs(g[0] - want[i][0]) <= 1 && Math.abs(g[1] - want[i][1]) <= 1
                                 && g[0] === card.thumbs[i].said[0] && g[1] === card.thumbs[i].said[1])
          && card.thumbs.every((t) => t.format === 'jpeg'),
          `${f.name} sizes=200x200,100x100,400x300 -> three JPEG thumbnails ${want.map((w) => w.join('x')).join(', ')}`,
          `${card.state} ${got.map((g) => g.join('x')).join(', ')} ${card.error}`);
  }
  if (NEW_OPTIONS.includes('contain')) {
    const f = photos.find((p) => p.height > p.width) || photos[0];
    const [card] = await batch(page, [f], { ...clear, width: 160, height: 160, fit: 'contain', format: 'png' });
    const t = card.thumbs[0];
    check(card.state === 'done' && t && t.natural[0] === 160 && t.natural[1] === 160
          && t.alpha[0] === 0 && t.alpha[1] === 255,
          `${f.name} 160x160 contain PNG -> exactly 160x160, transparent border, opaque centre`,
          t ? `${t.natural.join('x')} alpha edge/centre ${t.alpha.join('/')}` : card.error);
  }
  if (NEW_OPTIONS.includes('auto')) {
    const f = photos[0];
    const [card] = await batch(page, [f], { ...clear, width: 200, height: 200, format: 'auto' });
    const t = card.thumbs[0];
    check(card.state === 'done' && t && t.format === 'avif',
          `${f.name} format=auto -> AVIF for a browser whose Accept lists image/avif first`,
          t ? `${t.format} ${t.natural.join('x')}` : card.error);
  }
}

async function run() {
  fs.mkdirSync(out, { recursive: true });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imgp-browser-'));
  note(`processes' logs in ${dir}`);
  const base = await startStack(dir);
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    // --no-sandbox: CI runs as root, where Chromium's sandbox will not start.
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
    const page = await context.newPage();
    const requests = [];
    page.on('request', (r) => requests.push(r.url()));
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(String(e)));

    const first = await page.goto(`${base}/`);
    check(first.status() === 200 && /^"[0-9a-f]{40}"$/.test(first.headers().etag || '')
          && first.headers()['cache-control'] === 'no-cache',
          'GET / without a key: 200 with an ETag and Cache-Control: no-cache',
          `${first.status()} etag=${first.headers().etag}`);

    // Every state each card has shown, in order: card.seen holds the
    // states it left (a record's old value), the current one is added
    // when read.
    await page.evaluate(() => new MutationObserver((changes) => {
      for (const m of changes)
        if (m.oldValue !== null) (m.target.seen || (m.target.seen = [])).push(m.oldValue);
    }).observe(document.getElementById('grid'),
               { subtree: true, attributeFilter: ['data-state'], attributeOldValue: true }));

    const fixtures = corpusFixtures() || await madeFixtures(page);
    note(`fixtures: ${fixtures.map((f) => `${f.name} ${f.width}x${f.height} ${f.buffer.length} B`).join(', ')}`);
    const photos = fixtures.filter((f) => f.ok);
    const bad = fixtures.filter((f) => !f.ok);

    // No key yet: the API says 401 and the card says so.
    const [nokey] = await batch(page, [photos[0]], { width: 200, height: 200, fit: 'inside', format: 'png' });
    check(nokey.state === 'failed' && /API key/i.test(nokey.error),
          'an upload without the key fails with the server\'s 401 message on its card', nokey.error);

    await page.locator('#key').fill(KEY);
    const stored = await page.evaluate(() => sessionStorage.getItem('imgpipe-api-key'));
    check(stored === KEY, 'the key is kept in sessionStorage');

    // Batch 1: every fixture, 200x200 inside, WebP.
    const one = await batch(page, fixtures, { width: 200, height: 200, fit: 'inside', format: 'webp' });
    for (const f of photos) {
      const card = one.find((c) => c.file === f.name);
      const want = inside(f.width, f.height, 200, 200);
      const t = card && card.thumbs[0];
      const [sent, size] = card ? card.sent.split('/').map(Number) : [0, 1];
      check(sent === size && size > f.buffer.length,
            `${f.name}: the upload progress bar got the browser's progress events to the whole body`, card && card.sent);
      const ok = card && card.state === 'done' && card.thumbs.length === 1 && t.format === 'webp'
        && t.natural[0] === t.said[0] && t.natural[1] === t.said[1]
        && Math.abs(t.natural[0] - want[0]) <= 1 && Math.abs(t.natural[1] - want[1]) <= 1
        && t.link.endsWith('.webp');
      note(`${f.name}: states ${card && card.seen}; upload progress ${card && card.sent}`);
      check(card && /^waiting>uploading>queued>(processing>)?done$/.test(card.seen),
            `${f.name}: the card went waiting > uploading > queued [> processing] > done`, card && card.seen);
      check(ok, `${f.name} ${f.width}x${f.height} -> done, a WebP thumbnail of ${want.join('x')} (200x200 inside) with a download link`,
            card ? `state=${card.state} shown ${t ? t.natural.join('x') : '-'} status says ${t ? t.said.join('x') : '-'} ${t ? t.format : ''} ${t ? t.link : ''} ${card.error}` : 'no card');
    }
    for (const f of bad) {
      const card = one.find((c) => c.file === f.name);
      check(card && card.state === 'failed' && card.error.length > 0 && card.thumbs.length === 0,
            `${f.name} (bad) -> failed with its error on the card`, card ? `"${card.error}"` : 'no card');
    }

    // Batch 2: the first photo again, 120x90 cover, PNG: exactly the box.
    // Batch 2: the first photo again, dropped on the page, 120x90 cover,
    // PNG: exactly the box. Its download link gives the PNG itself.
    const [cover] = await batch(page, [photos[0]], { width: 120, height: 90, fit: 'cover', format: 'png' }, 'drop');
    const ct = cover.thumbs[0];
    check(cover.state === 'done' && ct && ct.format === 'png' && ct.natural[0] === 120 && ct.natural[1] === 90,
          `${photos[0].name} dropped on the page, 120x90 cover PNG -> exactly 120x90`,
          ct ? `${ct.natural.join('x')} ${ct.format}` : cover.error);
    const [download] = await Promise.all([page.waitForEvent('download'),
                                          page.locator('.card a[download]').last().click()]);
    const saved = fs.readFileSync(await download.path());
    check(download.suggestedFilename() === ct.link && saved.subarray(1, 4).toString() === 'PNG'
          && saved.readUInt32BE(16) === 120 && saved.readUInt32BE(20) === 90,
          'its download link saves that 120x90 PNG', `${download.suggestedFilename()} ${saved.length} B`);

    await processing(page, base);
    if (NEW_OPTIONS.length)
      await newOptions(page, photos);

    // Only the public API, from this origin; the key never in a URL.
    const foreign = requests.filter((u) => !u.startsWith(base + '/') && !u.startsWith('blob:') && !u.startsWith('data:'));
    check(foreign.length === 0, 'no request leaves the frontend\'s origin (no external assets)', foreign.join(' '));
    const api = requests.filter((u) => u.startsWith(base + '/')).map((u) => new URL(u).pathname);
    const unknown = api.filter((p) => !/^\/$|^\/v1\/images(\/[0-9a-f]{32}(\/thumbnail)?)?$/.test(p));
    check(unknown.length === 0, 'the page calls only /, POST /v1/images, /v1/images/{id}[/thumbnail]', unknown.join(' '));
    check(!requests.some((u) => u.includes(KEY)), 'the API key is in no URL');
    check(pageErrors.length === 0, 'no JavaScript error on the page', pageErrors.join(' | '));
    note(`requests: ${api.length} to the frontend (${requests.filter((u) => u.startsWith('blob:')).length} blob URLs shown)`);

    const shot = path.join(out, 'upload-page.png');
    await page.screenshot({ path: shot, fullPage: true });
    check(fs.statSync(shot).size > 0, `screenshot saved: ${shot}`);

    await page.locator('#clear').click();
    const left = await page.locator('.card').count();
    check(left === 0, '"Clear finished" removes every finished card', `${left} left`);

    // Reloaded: the browser revalidates the page (If-None-Match) and the
    // frontend answers 304 (Chromium reports the cached 200 to the page,
    // so the frontend's own count of 304s says it), and the key is still
    // in the tab.
    const count304 = async () => {
      const text = await (await fetch(`${base}/metrics`)).text();
      const m = text.match(/^imgpipe_http_requests_total\{route="other",status="304"\} (\d+)/m);
      return m ? +m[1] : 0;
    };
    const before304 = await count304();
    const again = await page.reload();
    const asked = (await again.request().allHeaders())['if-none-match'];
    const after304 = await count304();
    const key = await page.locator('#key').inputValue();
    check(asked === first.headers().etag && after304 === before304 + 1 && key === KEY,
          'reloaded: revalidated with If-None-Match, the frontend answered 304, the key still in the tab',
          `If-None-Match ${asked}, 304s ${before304} -> ${after304}, key ${key === KEY ? 'kept' : 'lost'}`);
  } finally {
    await browser.close();
    await stopAll();
  }
  if (failed === 0) fs.rmSync(dir, { recursive: true, force: true });
  else note(`logs kept in ${dir}`);
}

try {
  await run();
} catch (err) {
  check(false, 'the browser test ran to its end', String(err && err.stack || err));
  await stopAll();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
