'use strict';

// The reference for t/23-json.t: what prom-client itself answers.
//
//   NODE_PATH=build/node/node_modules \
//       node t/js/prom-client-json.js SCHEMA BATCHES
//
// SCHEMA is a metrics.json in Playarr's format; every entry is registered
// on prom-client's default registry as Playarr's MetricsManager does
// (name, help, labelNames, buckets).  BATCHES is a JSON file holding an
// array of batches, each an array of updates in the push format
// ({"metric", "op", "labels", "value"}); they are applied with the
// MetricsManager calls (counter.inc, gauge.inc/dec/set, histogram.observe,
// metric.reset).  After each batch the script records
// `await register.getMetricsAsJSON()`; it prints the array of these
// snapshots, one JSON document on stdout.

const fs = require('fs');
const client = require('prom-client');
const { makeMetric } = require('./playarr-metric.js');

const [schemaFile, batchesFile] = process.argv.slice(2);

if (!schemaFile || !batchesFile) {
    console.error('usage: prom-client-json.js SCHEMA BATCHES');
    process.exit(2);
}

const schema = JSON.parse(fs.readFileSync(schemaFile, 'utf8'));
const batches = JSON.parse(fs.readFileSync(batchesFile, 'utf8'));
const register = client.register;
const byKey = new Map();

register.clear();

for (const [key, def] of Object.entries(schema.metrics)) {
    const metric = makeMetric(client, key, def, register);

    const entry = { type: def.type, metric };
    byKey.set(key, entry);
    byKey.set(def.name, entry);
}

function apply(u) {
    const entry = byKey.get(u.metric);

    if (!entry) {
        throw new Error(`unknown metric ${u.metric}`);
    }

    const { type, metric } = entry;
    const labels = u.labels || {};

    switch (u.op) {
    case 'inc':
        metric.inc(labels, u.value === undefined ? 1 : u.value);
        break;
    case 'dec':
        metric.dec(labels, u.value === undefined ? 1 : u.value);
        break;
    case 'set':
        metric.set(labels, u.value);
        break;
    case 'observe':
        metric.observe(labels, u.value);
        break;
    case 'reset':
        metric.reset();
        break;
    default:
        throw new Error(`unknown op ${u.op} for a ${type}`);
    }
}

(async () => {
    const snapshots = [];

    for (const batch of batches) {
        for (const u of batch) {
            apply(u);
        }

        // a copy: the objects returned share state with the registry
        snapshots.push(JSON.parse(JSON.stringify(
            await register.getMetricsAsJSON())));
    }

    process.stdout.write(JSON.stringify(snapshots) + '\n');
})().catch((err) => {
    console.error(err && err.stack ? err.stack : String(err));
    process.exit(1);
});
