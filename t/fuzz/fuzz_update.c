
/*
 * Copyright (C) Playarr metrics module authors
 */


/*
 * The update validator and its application:
 * ngx_http_playarr_metrics_updates_parse() on the input, a push body, and
 * when it is accepted ngx_http_playarr_metrics_updates_apply(), against a
 * store with Playarr's families (docs/playarr/metrics.json); then both
 * renderers, their output checked (fuzz_check.c).
 *
 * Checked, from docs/directives.md: an accepted body holds as many updates
 * as the JSON has, each for the family its "metric" names (key or name),
 * with the operation the type allows, a finite value (not negative for a
 * counter) and exactly the family's labels, in its order, each a string
 * of at most 128 bytes without NUL (or an integer, in decimal), as the
 * JSON has them; never one of the built-in HTTP families (section 11); a
 * refused one has an error of printable ASCII only (it goes into a JSON
 * answer and into the log: section 10) and an index inside the batch;
 * every log line is printable ASCII.  After applying, every series holds
 * what a model of the operations says, a reset family shows nothing until
 * set again, and no value is infinite or NaN (section 11): the check of
 * the batch foresaw every overflow but those of a family's overflow
 * series, which the store refuses, and counts as rejected.
 *
 * The zone size, playarr_metrics_max_series and, for one input in 16, an
 * allocation that fails, come from a hash of the input.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include <math.h>
#include <jansson.h>

#include "fuzz.h"


#define FUZZ_BUCKETS  (NGX_HTTP_PLAYARR_METRICS_MAX_BUCKETS + 1)


typedef struct {
    ngx_http_playarr_metrics_series_t       *series;
    ngx_http_playarr_metrics_family_conf_t  *family;
    double                                   value;
    ngx_atomic_uint_t                        buckets[FUZZ_BUCKETS];
    ngx_uint_t                               hidden;
} fuzz_model_t;


int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_accepted(ngx_http_playarr_metrics_store_t *store,
    const uint8_t *data, size_t size, ngx_array_t *updates);
static void fuzz_check_update(ngx_http_playarr_metrics_store_t *store,
    json_t *u, ngx_http_playarr_metrics_update_t *update, size_t i);
static void fuzz_apply(ngx_pool_t *pool,
    ngx_http_playarr_metrics_store_t *store, ngx_array_t *updates);
static void fuzz_check_model(ngx_http_playarr_metrics_store_t *store,
    fuzz_model_t *m, ngx_uint_t n);
static void fuzz_printable(const char *what, u_char *p, size_t len);
static void fuzz_log_line(ngx_uint_t level, u_char *msg, size_t len);


static const char  *fuzz_ops[] = {
    "inc", "dec", "set", "observe", "reset", NULL
};

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) fuzz_playarr_families();
    (void) fuzz_min_pages();

    fuzz_log_hook = fuzz_log_line;

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                            *body;
    uint32_t                           h;
    ngx_int_t                          rc, index;
    ngx_str_t                          err;
    ngx_uint_t                         pages, max, fail;
    ngx_pool_t                        *pool;
    ngx_array_t                        updates;
    json_t                            *root;
    ngx_http_playarr_metrics_store_t  *store;

    h = fuzz_hash(data, size);

    pages = (h & 3) ? 1024 : fuzz_min_pages() + ((h >> 2) & 7);
    max = ((h >> 5) & 3) ? 10000 : 3;
    fail = ((h >> 8) & 15) ? 0 : 1 + ((h >> 12) & 63);

    pool = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, &fuzz_log);
    if (pool == NULL) {
        fuzz_fatal("ngx_create_pool() failed");
    }

    store = fuzz_store_create(pool, pages, max);
    if (store == NULL) {
        fuzz_fatal("no store in %lu pages", pages);
    }

    /* the request body, in a block of its own size */

    body = malloc(size ? size : 1);
    if (body == NULL) {
        fuzz_fatal("malloc() failed");
    }

    ngx_memcpy(body, data, size);

    err.len = 0;
    err.data = NULL;
    index = -2;

    fuzz_fail_after = fail;

    rc = ngx_http_playarr_metrics_updates_parse(pool, store, body, size,
                                                &updates, &err, &index);

    fail = (fail && fuzz_fail_after == 0);
    fuzz_fail_after = 0;

    if (ngx_memcmp(body, data, size) != 0) {
        fuzz_fatal("updates_parse() changed the body");
    }

    free(body);

    switch (rc) {

    case NGX_OK:
        fuzz_accepted(store, data, size, &updates);
        fuzz_apply(pool, store, &updates);
        break;

    case NGX_DECLINED:
        if (err.len == 0 || err.data == NULL) {
            fuzz_fatal("a refusal without a reason");
        }

        fuzz_printable("the reason of a refusal", err.data, err.len);

        root = json_loadb((char *) data, size, JSON_REJECT_DUPLICATES, NULL);

        if (index < -1
            || (index == -1 && root != NULL)
            || (index >= 0
                && (root == NULL
                    || (size_t) index >= (json_is_array(root)
                                          ? json_array_size(root) : 1))))
        {
            fuzz_fatal("a refusal with index %ld", index);
        }

        json_decref(root);
        break;

    default:
        if (rc != NGX_ERROR || !fail) {
            fuzz_fatal("updates_parse() returned %ld", rc);
        }
    }

    fuzz_store_destroy(store);
    ngx_destroy_pool(pool);

    return 0;
}


/* the updates are those of the JSON */

static void
fuzz_accepted(ngx_http_playarr_metrics_store_t *store, const uint8_t *data,
    size_t size, ngx_array_t *updates)
{
    json_t                             *root;
    size_t                              i, n;
    ngx_http_playarr_metrics_update_t  *u;

    root = json_loadb((char *) data, size, JSON_REJECT_DUPLICATES, NULL);
    if (root == NULL) {
        fuzz_fatal("accepted, but jansson refuses it");
    }

    n = json_is_array(root) ? json_array_size(root) : 1;

    if (updates->nelts != n) {
        fuzz_fatal("%zu updates accepted of %zu", updates->nelts, n);
    }

    u = updates->elts;

    for (i = 0; i < n; i++) {
        fuzz_check_update(store,
                          json_is_array(root) ? json_array_get(root, i) : root,
                          &u[i], i);
    }

    json_decref(root);
}


static void
fuzz_check_update(ngx_http_playarr_metrics_store_t *store, json_t *u,
    ngx_http_playarr_metrics_update_t *update, size_t i)
{
    u_char                                  *p, *q, *last;
    double                                   value;
    size_t                                   len;
    json_t                                  *labels, *v;
    ngx_uint_t                               k, op;
    const char                              *metric, *s;
    ngx_http_playarr_metrics_family_conf_t  *fc;
    u_char                                   num[NGX_INT64_LEN + 1];

    if (!json_is_object(u)) {
        fuzz_fatal("update %zu: not an object, yet accepted", i);
    }

    metric = json_string_value(json_object_get(u, "metric"));
    if (metric == NULL) {
        fuzz_fatal("update %zu: no \"metric\", yet accepted", i);
    }

    fc = store->families.elts;

    for (k = 0; k < store->families.nelts; k++) {
        if (ngx_strcmp(fc[k].name.data, metric) == 0
            || (fc[k].key.len && ngx_strcmp(fc[k].key.data, metric) == 0))
        {
            break;
        }
    }

    if (k == store->families.nelts || update->family != &fc[k]) {
        fuzz_fatal("update %zu: \"%s\" is not the family applied", i, metric);
    }

    if (k < NGX_HTTP_PLAYARR_METRICS_FAMILY_HTTP_COUNT) {
        fuzz_fatal("update %zu: \"%s\" is nginx's own, yet accepted", i,
                   metric);
    }

    fc = update->family;

    s = json_string_value(json_object_get(u, "op"));

    for (op = 0; s && fuzz_ops[op]; op++) {
        if (ngx_strcmp(s, fuzz_ops[op]) == 0) {
            break;
        }
    }

    if (s == NULL || fuzz_ops[op] == NULL || update->op != op) {
        fuzz_fatal("update %zu: not the \"op\" applied", i);
    }

    if (json_object_size(u)
        != 2 + (json_object_get(u, "labels") != NULL)
             + (json_object_get(u, "value") != NULL))
    {
        fuzz_fatal("update %zu: unknown fields, yet accepted", i);
    }

    if (op == NGX_HTTP_PLAYARR_METRICS_OP_RESET) {
        if (json_object_get(u, "labels") || json_object_get(u, "value")) {
            fuzz_fatal("update %zu: a reset with labels or a value", i);
        }

        return;
    }

    /* the type allows the operation */

    if (!((op == NGX_HTTP_PLAYARR_METRICS_OP_INC
           && fc->type != NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM)
          || ((op == NGX_HTTP_PLAYARR_METRICS_OP_DEC
               || op == NGX_HTTP_PLAYARR_METRICS_OP_SET)
              && fc->type == NGX_HTTP_PLAYARR_METRICS_TYPE_GAUGE)
          || (op == NGX_HTTP_PLAYARR_METRICS_OP_OBSERVE
              && fc->type == NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM)))
    {
        fuzz_fatal("update %zu: \"%s\" on a %s", i, fuzz_ops[op],
                   ngx_http_playarr_metrics_types[fc->type]);
    }

    v = json_object_get(u, "value");

    if (v == NULL) {
        if (op != NGX_HTTP_PLAYARR_METRICS_OP_INC
            && op != NGX_HTTP_PLAYARR_METRICS_OP_DEC)
        {
            fuzz_fatal("update %zu: \"%s\" without a value", i, fuzz_ops[op]);
        }

        value = 1;

    } else {
        if (!json_is_number(v)) {
            fuzz_fatal("update %zu: a value not a number", i);
        }

        value = json_number_value(v);
    }

    if (!isfinite(value) || update->value != value
        || (fc->type == NGX_HTTP_PLAYARR_METRICS_TYPE_COUNTER && value < 0))
    {
        fuzz_fatal("update %zu: the value %.17g applied as %.17g", i, value,
                   update->value);
    }

    /* the key: the label values in the family's order */

    labels = json_object_get(u, "labels");

    if ((labels ? json_object_size(labels) : 0) != fc->nlabels) {
        fuzz_fatal("update %zu: %zu labels, not %lu", i,
                   labels ? json_object_size(labels) : 0, fc->nlabels);
    }

    p = update->key;
    last = p + update->len;

    for (k = 0; k < fc->nlabels; k++) {
        v = json_object_get(labels, (char *) fc->labels[k].data);

        if (json_is_string(v)) {
            s = json_string_value(v);
            len = json_string_length(v);

        } else if (json_is_integer(v)) {
            len = snprintf((char *) num, sizeof(num), "%lld",
                           (long long) json_integer_value(v));
            s = (char *) num;

        } else {
            fuzz_fatal("update %zu: label \"%s\" neither string nor integer",
                       i, fc->labels[k].data);
        }

        if (len > NGX_HTTP_PLAYARR_METRICS_VALUE_MAX
            || ngx_strlchr((u_char *) s, (u_char *) s + len, '\0'))
        {
            fuzz_fatal("update %zu: label \"%s\" too long or with NUL", i,
                       fc->labels[k].data);
        }

        q = ngx_strlchr(p, last, NGX_HTTP_PLAYARR_METRICS_SEP);
        if (q == NULL) {
            q = last;
        }

        if ((size_t) (q - p) != len || ngx_memcmp(p, s, len) != 0) {
            fuzz_fatal("update %zu: label \"%s\" is \"%.*s\" in the key",
                       i, fc->labels[k].data, (int) (q - p), p);
        }

        if (!fuzz_utf8_valid(p, len)) {
            fuzz_fatal("update %zu: label \"%s\" not UTF-8", i,
                       fc->labels[k].data);
        }

        p = (q < last) ? q + 1 : q;

        if (k + 1 < fc->nlabels && q == last) {
            fuzz_fatal("update %zu: the key is short", i);
        }
    }

    if (p != last) {
        fuzz_fatal("update %zu: the key is long", i);
    }
}


/* updates_apply(), and a model of it to compare with */

static void
fuzz_apply(ngx_pool_t *pool, ngx_http_playarr_metrics_store_t *store,
    ngx_array_t *updates)
{
    double                                   v;
    ngx_uint_t                               i, j, k, n, b, refused;
    fuzz_model_t                            *m, *e;
    ngx_http_playarr_metrics_update_t       *u;
    ngx_http_playarr_metrics_series_t       *s;
    ngx_http_playarr_metrics_bounds_t       *bounds;
    ngx_http_playarr_metrics_family_conf_t  *fc;

    u = updates->elts;
    n = 0;
    refused = 0;

    m = malloc((updates->nelts + 1) * sizeof(fuzz_model_t));
    if (m == NULL) {
        fuzz_fatal("malloc() failed");
    }

    /*
     * The series each update goes to: found (or made) in the same order
     * as updates_apply() does, which then finds the same.
     */

    for (i = 0; i < updates->nelts; i++) {
        fc = u[i].family;

        if (u[i].op == NGX_HTTP_PLAYARR_METRICS_OP_RESET) {
            for (j = 0; j < n; j++) {
                if (m[j].family == fc) {
                    m[j].value = 0;
                    ngx_memzero(m[j].buckets, sizeof(m[j].buckets));
                    m[j].hidden = (fc->nlabels
                                   || fc->type
                                    == NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM);
                }
            }

            continue;
        }

        s = ngx_http_playarr_metrics_series(store, fc, NULL, u[i].key,
                                            u[i].len);

        for (j = 0; j < n; j++) {
            if (m[j].series == s) {
                break;
            }
        }

        e = &m[j];

        if (j == n) {
            n++;
            ngx_memzero(e, sizeof(fuzz_model_t));
            e->series = s;
            e->family = fc;
            e->hidden = s->hidden;
        }

        if (u[i].op == NGX_HTTP_PLAYARR_METRICS_OP_SET) {
            e->value = u[i].value;
            e->hidden = 0;
            continue;
        }

        v = e->value + ((u[i].op == NGX_HTTP_PLAYARR_METRICS_OP_DEC)
                        ? -u[i].value : u[i].value);

        /* the store refuses what the check could not foresee */

        if (!isfinite(v)) {
            if (s != fc->shared->overflow) {
                fuzz_fatal("update %lu would overflow \"%s\", yet accepted",
                           i, fc->name.data);
            }

            /* folding into it showed it all the same */

            refused++;
            e->hidden = 0;
            continue;
        }

        e->value = v;
        e->hidden = 0;

        if (u[i].op == NGX_HTTP_PLAYARR_METRICS_OP_OBSERVE) {
            bounds = s->bounds;

            for (b = 0; b < bounds->n && !(u[i].value <= bounds->le[b]); b++) {
                /* void */
            }

            e->buckets[b]++;
        }
    }

    ngx_http_playarr_metrics_updates_apply(store, updates,
                                           NGX_HTTP_PLAYARR_METRICS_SOURCE_PUSH,
                                           &fuzz_log);

    if (store->sh->rejected.count[NGX_HTTP_PLAYARR_METRICS_SOURCE_PUSH]
                                 [NGX_HTTP_PLAYARR_METRICS_REJECT_INVALID]
        != refused)
    {
        fuzz_fatal("%lu updates refused by the store, not %lu",
                   store->sh->rejected.count
                       [NGX_HTTP_PLAYARR_METRICS_SOURCE_PUSH]
                       [NGX_HTTP_PLAYARR_METRICS_REJECT_INVALID], refused);
    }

    fuzz_check_model(store, m, n);

    /* a series no update reached holds nothing */

    fc = store->families.elts;

    for (k = 0; k < store->families.nelts; k++) {
        for (s = fc[k].shared->head; s; s = s->sibling) {

            for (j = 0; j < n; j++) {
                if (m[j].series == s) {
                    break;
                }
            }

            if (j < n) {
                continue;
            }

            for (i = 0; i < (s->bounds ? s->bounds->n + 2 : 1); i++) {
                if (s->values[i]) {
                    fuzz_fatal("a series of \"%s\" no update reached holds "
                               "a value", fc[k].name.data);
                }
            }

            if (fc[k].nlabels && !s->hidden) {
                fuzz_fatal("a series of \"%s\" no update reached is shown",
                           fc[k].name.data);
            }
        }
    }

    free(m);

    if (fuzz_render(pool, store) != NGX_OK) {
        fuzz_fatal("a renderer failed");
    }
}


static void
fuzz_check_model(ngx_http_playarr_metrics_store_t *store, fuzz_model_t *m,
    ngx_uint_t n)
{
    double                              v;
    ngx_uint_t                          j, b;
    ngx_http_playarr_metrics_series_t  *s;

    for (j = 0; j < n; j++) {
        s = m[j].series;
        v = ngx_http_playarr_metrics_double(s->values[0]);

        if (!isfinite(v)) {
            fuzz_fatal("a series of \"%s\" holds %.17g",
                       m[j].family->name.data, v);
        }

        if (ngx_memcmp(&v, &m[j].value, sizeof(double)) != 0
            && !(v == 0 && m[j].value == 0))
        {
            fuzz_fatal("a series of \"%s\" holds %.17g, not %.17g",
                       m[j].family->name.data, v, m[j].value);
        }

        if (s->hidden != m[j].hidden) {
            fuzz_fatal("a series of \"%s\" is %s", m[j].family->name.data,
                       s->hidden ? "hidden" : "shown");
        }

        if (s->bounds == NULL) {
            continue;
        }

        for (b = 0; b <= s->bounds->n; b++) {
            if (s->values[1 + b] != m[j].buckets[b]) {
                fuzz_fatal("a series of \"%s\": bucket %lu holds %lu, "
                           "not %lu", m[j].family->name.data, b,
                           s->values[1 + b], m[j].buckets[b]);
            }
        }
    }
}


static void
fuzz_printable(const char *what, u_char *p, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (p[i] < 0x20 || p[i] > 0x7e) {
            fuzz_fatal("%s holds the byte 0x%02x: \"%.*s\"", what, p[i],
                       (int) len, p);
        }
    }
}


static void
fuzz_log_line(ngx_uint_t level, u_char *msg, size_t len)
{
    fuzz_printable("a log line", msg, len);
}
