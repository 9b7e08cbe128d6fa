'use strict';

// An unmodified Playarr's own metrics, for t/65-merge.t: prom-client's
// default registry holding every family of Playarr's metrics.json, served
// as Playarr's MetricsRouter serves them.
//
//   node t/js/app-metrics.js PORT TOKEN SCHEMA
//
//   GET /metrics        Prometheus text 0.0.4, with "Authorization: Bearer
//                       TOKEN" (401 otherwise, in Playarr's words)
//   GET /metrics/json   register.getMetricsAsJSON(), with a cookie
//                       access_token (401 otherwise, as requireAuth);
//                       answers 500 when /metrics is in mode 500
//   POST /mode/NAME     how /metrics answers from now on: ok, 404, 500,
//                       html (a 200 error page), openmetrics (prom-client's
//                       OpenMetrics output, "# EOF"), hang (never), big
//                       (a valid 17 MiB body), slow (ok after 300 ms)
//   GET /state          {"hits", "accept", "authorization"} of the last
//                       /metrics request
//
// Values: every family has series; label values hold '"', '\' and a
// newline; histograms are observed; the four HTTP families have values
// of the app's own (nginx's must win).  It prints "listening" once up.

const http = require('http');
const fs = require('fs');
const client = require('prom-client');
const { makeMetric } = require('./playarr-metric.js');

const [port, token, schemaFile] = process.argv.slice(2);

if (!port || !token || !schemaFile) {
    console.error('usage: app-metrics.js PORT TOKEN SCHEMA');
    process.exit(2);
}

const schema = JSON.parse(fs.readFileSync(schemaFile, 'utf8'));
const register = client.register;
const TRICKY = 'quote " backslash \\ newline \n end';

register.clear();

for (const [key, def] of Object.entries(schema.metrics)) {
    const labelNames = def.labelNames || [];
    const metric = makeMetric(client, key, def);

    // two series: plain label values, then tricky ones
    const plain = {};
    const tricky = {};

    for (const l of labelNames) {
        plain[l] = 'app';
        tricky[l] = TRICKY;
    }

    const sets = labelNames.length ? [plain, tricky] : [{}];

    sets.forEach((labels, i) => {
        const v = 4242 + i;

        if (def.type === 'counter') {
            metric.inc(labels, v);
        } else if (def.type === 'gauge') {
            metric.set(labels, v);
        } else {
            metric.observe(labels, 0.7);
            metric.observe(labels, 3 + i);
        }
    });
}

// OpenMetrics, as prom-client writes it for a registry of that type
const om = new client.Registry(client.Registry.OPENMETRICS_CONTENT_TYPE);
new client.Counter({
    name: 'playarr_app_om_total', help: 'an OpenMetrics counter',
    registers: [om],
}).inc(3);

let mode = 'ok';
let big = null;
const state = { hits: 0, accept: null, authorization: null };

function bigBody() {
    if (big === null) {
        const lines = ['# HELP playarr_app_big A large family',
                       '# TYPE playarr_app_big gauge'];
        let size = 0;

        for (let i = 0; size < 17 * 1024 * 1024; i++) {
            const line = `playarr_app_big{i="${i}"} ${i}`;
            lines.push(line);
            size += line.length + 1;
        }

        big = lines.join('\n') + '\n';
    }

    return big;
}

function json(res, status, body) {
    res.writeHead(status, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify(body));
}

async function metrics(req, res) {
    state.hits++;
    state.accept = req.headers.accept || null;
    state.authorization = req.headers.authorization || null;

    const auth = req.headers.authorization;

    if (!auth || !auth.startsWith('Bearer ')) {
        return json(res, 401, { error: 'Missing or invalid Authorization '
            + 'header. Expected: Authorization: Bearer <token>' });
    }

    if (auth.substring(7) !== token) {
        return json(res, 401, { error: 'Invalid metrics token' });
    }

    switch (mode) {
    case '404':
        return json(res, 404, { error: 'Not found' });
    case '500':
        return json(res, 500, { error: 'Internal server error' });
    case 'html':
        res.writeHead(200, { 'Content-Type': 'text/html' });
        return res.end('<!DOCTYPE html>\n<html><body>Playarr</body></html>\n');
    case 'openmetrics':
        res.writeHead(200, { 'Content-Type': om.contentType });
        return res.end(await om.metrics());
    case 'hang':
        return;
    case 'big':
        res.writeHead(200, { 'Content-Type': register.contentType });
        return res.end(bigBody());
    case 'slow':
        await new Promise((resolve) => setTimeout(resolve, 300));
        break;
    default:
        break;
    }

    res.writeHead(200, { 'Content-Type': register.contentType });
    res.end(await register.metrics());
}

const server = http.createServer((req, res) => {
    const url = req.url;

    if (req.method === 'GET' && url === '/metrics') {
        metrics(req, res).catch((e) => json(res, 500, { error: e.message }));

    } else if (req.method === 'GET' && url === '/metrics/json') {
        if (!/(^|;\s*)access_token=/.test(req.headers.cookie || '')) {
            return json(res, 401, { error: 'Authentication required' });
        }

        if (mode === '500') {
            return json(res, 500, { error: 'Internal server error' });
        }

        register.getMetricsAsJSON().then((m) => json(res, 200, m));

    } else if (req.method === 'POST' && url.startsWith('/mode/')) {
        mode = url.substring(6);
        json(res, 200, { mode });

    } else if (req.method === 'GET' && url === '/state') {
        json(res, 200, state);

    } else {
        json(res, 404, { error: 'Not found' });
    }
});

bigBody();

server.listen(Number(port), '127.0.0.1', () => {
    console.log('listening');
});
