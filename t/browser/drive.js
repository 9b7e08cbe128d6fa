// t/66-browser.t's browser: Debian's chromium, driven by puppeteer-core.
//
//   node drive.js CHROMIUM BASE CROSS
//
// BASE is the nginx in front of the stand-in Playarr, CROSS a page of
// another origin.  As a logged-out visitor, a plain user and an admin
// (each logged in by the stand-in's login URL, which sets Playarr's
// httpOnly session cookie), it opens the UI page of the stand-in and
// prints what the page got and shows; then, as the admin, it opens the
// cross-site page, which posts a form to the regenerate path.  One JSON
// object a line on stdout.

'use strict';

const puppeteer = require('puppeteer-core');

const [chromium, base, cross] = process.argv.slice(2);

async function ui(page, who) {
    await page.goto(base + '/ui/playarr-ui.html', { waitUntil: 'load' });
    await page.waitForFunction(() => document.title === 'done',
                               { timeout: 20000 });

    const shown = await page.evaluate(() => ({
        requests: document.getElementById('requests').textContent,
        token: document.getElementById('token').textContent,
        error: document.getElementById('error').textContent
    }));
    const results = await page.evaluate(() => window.playarrResults);
    const cookies = (await page.cookies(base)).map(c => ({
        name: c.name, httpOnly: c.httpOnly
    }));

    console.log(JSON.stringify({ who, shown, results, cookies }));
}

async function main() {
    const browser = await puppeteer.launch({
        executablePath: chromium,
        headless: true,
        args: ['--no-sandbox', '--disable-gpu', '--disable-quic',
               '--no-first-run', '--disable-background-networking',
               '--disable-component-update', '--disable-sync',
               '--disable-dev-shm-usage']
    });

    try {
        const page = await browser.newPage();

        await ui(page, 'logged out');

        for (const who of ['user', 'admin']) {
            const r = await page.goto(base + '/api/auth/login/' + who);
            if (r.status() !== 200) {
                throw new Error('login as ' + who + ': ' + r.status());
            }
            await ui(page, who);
        }

        // the admin's browser on another site
        const r = await page.goto(cross + '/cross-site.html',
                                  { waitUntil: 'load' });
        await page.waitForFunction(
            (b) => location.href.startsWith(b), { timeout: 20000 }, base);
        const body = await page.evaluate(() => document.body.innerText);
        console.log(JSON.stringify({ who: 'cross-site', first: r.status(),
                                     url: page.url(), body }));

        await page.goto(base + '/api/auth/logout');
        await ui(page, 'logged out again');
    } finally {
        await browser.close();
    }
}

main().catch(e => {
    console.error('drive.js: ' + (e && e.stack || e));
    process.exit(1);
});
