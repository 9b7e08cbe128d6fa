'use strict';

// One family of Playarr's metrics.json as prom-client's object, the way
// Playarr's MetricsManager makes it; for the Node scripts of t/js/, each
// passing the prom-client it loaded.
//
//   makeMetric(client, key, def[, register])

function makeMetric(client, key, def, register) {
    const config = {
        name: def.name,
        help: def.help,
        labelNames: def.labelNames || [],
    };

    if (register) {
        config.registers = [register];
    }

    switch (def.type) {
    case 'counter':
        return new client.Counter(config);
    case 'gauge':
        return new client.Gauge(config);
    case 'histogram':
        if (def.buckets) {
            config.buckets = def.buckets;
        }
        return new client.Histogram(config);
    default:
        throw new Error(`metric ${key}: unknown type ${def.type}`);
    }
}

module.exports = { makeMetric };
