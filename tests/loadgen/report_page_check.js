// Loads a `tandem bench report` page in headless Chromium and prints what a reader would see, as JSON:
// console errors, page errors, any request that would leave the machine, the canvases drawn and the
// series of every chart. Usage: node report_page_check.js PAGE.html NODE_MODULES_DIR CHROMIUM
'use strict';
const path = require('path');
const [page_path, node_modules, chromium] = process.argv.slice(2);
const { chromium: launcher } = require(path.join(node_modules, 'playwright-core'));

(async () => {
  const browser = await launcher.launch({
    executablePath: chromium,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync'],
  });
  const result = { consoleErrors: [], pageErrors: [], externalRequests: [] };
  try {
    const page = await browser.newPage();
    page.on('console', msg => { if (msg.type() === 'error') result.consoleErrors.push(msg.text()); });
    page.on('pageerror', err => result.pageErrors.push(String(err)));
    // The page must be self-contained: anything but the file itself (and data: URLs) is recorded and refused.
    await page.route('**/*', route => {
      const url = route.request().url();
      if (url.startsWith('file:') || url.startsWith('data:')) return route.continue();
      result.externalRequests.push(url);
      return route.abort();
    });
    await page.goto('file://' + path.resolve(page_path), { waitUntil: 'load' });
    await page.waitForFunction(() => window.tandemReport && window.tandemReport.ready, null, { timeout: 10000 })
      .catch(() => {});
    Object.assign(result, await page.evaluate(() => {
      const charts = {};
      const report = window.tandemReport || { charts: {} };
      for (const [id, chart] of Object.entries(report.charts)) {
        const canvas = chart.canvas;
        charts[id] = {
          type: chart.config.type,
          labels: chart.data.datasets.map(d => d.label),
          points: chart.data.datasets.map(d => d.data.filter(v => v !== null).length),
          width: canvas.width,
          height: canvas.height,
          heading: canvas.closest('section').querySelector('h2').textContent,
        };
      }
      return { ready: !!report.ready, canvases: document.querySelectorAll('canvas').length, charts };
    }));
    await page.screenshot({ path: page_path + '.png', fullPage: true });
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(result) + '\n');
})().catch(err => { console.error(err); process.exit(1); });
