
/*
 * Copyright (C) Playarr metrics module authors
 */


/*
 * Checks of what the renderers produce, written from the formats, not
 * from the module's code:
 *
 * - Prometheus text format 0.0.4: every line is "# HELP name text",
 *   "# TYPE name type" or "name{label="value",...} value" (a label value
 *   with no raw '"' or newline, only the escapes \\ \" \n), the whole is
 *   UTF-8 and ends with a newline; each family has one HELP and one TYPE
 *   before its samples, which carry its name (a histogram's with _bucket,
 *   _sum, _count); no series twice; a histogram's buckets have increasing
 *   bounds ending in +Inf and counts that never go down, the +Inf one
 *   equal to _count; and each family of the store has exactly one sample
 *   per visible counter or gauge series, n + 3 per histogram series;
 * - JSON (prom-client's getMetricsAsJSON()): jansson parses it, rejecting
 *   duplicate keys; an array of {"name", "help", "type", "values",
 *   "aggregator"} in the store's order, with as many values as the text
 *   has samples, each {"value": number or null, "labels": {strings}}.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <math.h>
#include <jansson.h>

#include "fuzz.h"



typedef struct {
    u_char                                  *name;     /* sample name */
    size_t                                   len;
    u_char                                  *id;       /* name{labels} */
    size_t                                   id_len;
    u_char                                  *le;       /* or NULL */
    size_t                                   le_len;
    u_char                                  *value;
    size_t                                   value_len;
} fuzz_sample_t;


static u_char *fuzz_name(u_char *p, u_char *last, ngx_uint_t label);
static u_char *fuzz_labels(u_char *p, u_char *last, fuzz_sample_t *s,
    ngx_uint_t line);
static ngx_uint_t fuzz_number_ok(u_char *p, size_t len);
static double fuzz_number(u_char *p, size_t len);
static int fuzz_cmp_id(const void *a, const void *b);
static ngx_uint_t fuzz_visible(ngx_http_playarr_metrics_family_conf_t *fc,
    ngx_uint_t *series);
static void fuzz_check_histogram(fuzz_sample_t *s, ngx_uint_t n,
    ngx_uint_t line);


ngx_uint_t
fuzz_utf8_valid(u_char *p, size_t len)
{
    u_char  *last;
    size_t   n, i;
    u_char   c, lo, hi;

    last = p + len;

    while (p < last) {
        c = *p;

        if (c < 0x80) {
            p++;
            continue;
        }

        lo = 0x80;
        hi = 0xbf;

        if (c >= 0xc2 && c <= 0xdf) {
            n = 2;

        } else if (c >= 0xe0 && c <= 0xef) {
            n = 3;
            lo = (c == 0xe0) ? 0xa0 : 0x80;
            hi = (c == 0xed) ? 0x9f : 0xbf;

        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 4;
            lo = (c == 0xf0) ? 0x90 : 0x80;
            hi = (c == 0xf4) ? 0x8f : 0xbf;

        } else {
            return 0;
        }

        if ((size_t) (last - p) < n || p[1] < lo || p[1] > hi) {
            return 0;
        }

        for (i = 2; i < n; i++) {
            if (p[i] < 0x80 || p[i] > 0xbf) {
                return 0;
            }
        }

        p += n;
    }

    return 1;
}


/* the chain as one block of its exact size, checked against *len */

u_char *
fuzz_flatten(ngx_chain_t *out, off_t len)
{
    u_char       *buf, *p;
    size_t        total;
    ngx_chain_t  *cl;

    total = 0;

    for (cl = out; cl; cl = cl->next) {
        if (cl->buf->pos > cl->buf->last || cl->buf->last > cl->buf->end) {
            fuzz_fatal("a buffer of the body is inside out");
        }

        total += cl->buf->last - cl->buf->pos;

        if (cl->next == NULL
            && (!cl->buf->last_buf || !cl->buf->last_in_chain))
        {
            fuzz_fatal("the last buffer of the body is not marked last");
        }
    }

    if ((off_t) total != len) {
        fuzz_fatal("the body is %zu bytes, its length says %ld", total, len);
    }

    buf = malloc(total ? total : 1);
    if (buf == NULL) {
        fuzz_fatal("malloc() failed");
    }

    p = buf;

    for (cl = out; cl; cl = cl->next) {
        p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);
    }

    return buf;
}


/* [a-zA-Z_:][a-zA-Z0-9_:]*, no ':' in a label name */

static u_char *
fuzz_name(u_char *p, u_char *last, ngx_uint_t label)
{
    u_char  *start;

    start = p;

    while (p < last) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
            || *p == '_' || (*p == ':' && !label)
            || (p > start && *p >= '0' && *p <= '9'))
        {
            p++;
            continue;
        }

        break;
    }

    return (p == start) ? NULL : p;
}


static u_char *
fuzz_labels(u_char *p, u_char *last, fuzz_sample_t *s, ngx_uint_t line)
{
    u_char  *name, *q;

    /* p is after "{" */

    for ( ;; ) {

        if (p < last && *p == '}') {
            return p + 1;
        }

        name = p;

        p = fuzz_name(p, last, 1);
        if (p == NULL) {
            fuzz_fatal("line %lu: a bad label name", line);
        }

        if (last - p < 2 || p[0] != '=' || p[1] != '"') {
            fuzz_fatal("line %lu: no =\" after a label name", line);
        }

        q = p + 2;

        for (p = q; p < last && *p != '"'; p++) {
            if (*p == '\\') {
                if (p + 1 == last
                    || (p[1] != '\\' && p[1] != '"' && p[1] != 'n'))
                {
                    fuzz_fatal("line %lu: a bad escape in a label value",
                               line);
                }

                p++;
            }
        }

        if (p == last) {
            fuzz_fatal("line %lu: an unterminated label value", line);
        }

        if (q - name == 4 && ngx_strncmp(name, "le", 2) == 0) {
            s->le = q;
            s->le_len = p - q;
        }

        p++;

        if (p < last && *p == ',') {
            p++;

            if (p < last && *p == '}') {
                fuzz_fatal("line %lu: a trailing comma", line);
            }

            continue;
        }

        if (p < last && *p == '}') {
            return p + 1;
        }

        fuzz_fatal("line %lu: no \",\" or \"}\" after a label", line);
    }
}


/* Go's ParseFloat, restricted to what an exporter should print */

static ngx_uint_t
fuzz_number_ok(u_char *p, size_t len)
{
    u_char  *last;

    last = p + len;

    if ((len == 3 && ngx_strncmp(p, "NaN", 3) == 0)
        || (len == 4 && ngx_strncmp(p, "+Inf", 4) == 0)
        || (len == 4 && ngx_strncmp(p, "-Inf", 4) == 0))
    {
        return 1;
    }

    if (p < last && *p == '-') {
        p++;
    }

    if (p == last || *p < '0' || *p > '9') {
        return 0;
    }

    while (p < last && *p >= '0' && *p <= '9') {
        p++;
    }

    if (p < last && *p == '.') {
        p++;

        if (p == last || *p < '0' || *p > '9') {
            return 0;
        }

        while (p < last && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    if (p < last && (*p == 'e' || *p == 'E')) {
        p++;

        if (p < last && (*p == '+' || *p == '-')) {
            p++;
        }

        if (p == last || *p < '0' || *p > '9') {
            return 0;
        }

        while (p < last && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    return p == last;
}


static double
fuzz_number(u_char *p, size_t len)
{
    char  buf[64];

    if (len >= sizeof(buf)) {
        fuzz_fatal("a number of %zu bytes", len);
    }

    if (len == 4 && ngx_strncmp(p, "+Inf", 4) == 0) {
        return HUGE_VAL;
    }

    ngx_memcpy(buf, p, len);
    buf[len] = '\0';

    return strtod(buf, NULL);
}


static int
fuzz_cmp_id(const void *a, const void *b)
{
    size_t               n;
    int                  rc;
    const fuzz_sample_t  *x, *y;

    x = a;
    y = b;

    n = ngx_min(x->id_len, y->id_len);

    rc = ngx_memcmp(x->id, y->id, n);
    if (rc) {
        return rc;
    }

    return (x->id_len > y->id_len) - (x->id_len < y->id_len);
}


/*
 * Samples a family shows: 1 per counter or gauge series, n + 3 else.  And
 * what every way into the store keeps (value_copy(), the push validator,
 * route templates, "__overflow__"): a key of as many values as the family
 * has labels, each of at most 128 bytes of UTF-8 without NUL.
 */

static ngx_uint_t
fuzz_visible(ngx_http_playarr_metrics_family_conf_t *fc, ngx_uint_t *series)
{
    u_char                             *p, *q, *last;
    ngx_uint_t                          n, i;
    ngx_http_playarr_metrics_series_t  *s;

    n = 0;
    *series = 0;

    for (s = fc->shared->head; s; s = s->sibling) {

        p = ngx_http_playarr_metrics_series_key(s);
        last = p + s->len;

        for (i = 0; i < ngx_max(fc->nlabels, 1); i++) {
            q = ngx_strlchr(p, last, NGX_HTTP_PLAYARR_METRICS_SEP);
            if (q == NULL) {
                q = last;
            }

            if (q - p > NGX_HTTP_PLAYARR_METRICS_VALUE_MAX
                || ngx_strlchr(p, q, '\0') != NULL
                || !fuzz_utf8_valid(p, q - p))
            {
                fuzz_fatal("a series of \"%s\" has a label value of %zu "
                           "bytes, with NUL or not UTF-8: \"%.*s\"",
                           fc->name.data, (size_t) (q - p), (int) (q - p),
                           p);
            }

            p = q + 1;
        }

        if (p != last + 1 || (fc->nlabels == 0 && s->len != 0)) {
            fuzz_fatal("a series of \"%s\" has a key of another number of "
                       "values than %lu", fc->name.data, fc->nlabels);
        }

        if (s->hidden) {
            continue;
        }

        (*series)++;

        if (s->family != fc->shared) {
            fuzz_fatal("a series of \"%s\" is not its own", fc->name.data);
        }

        if (fc->type == NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM) {
            if (s->bounds == NULL) {
                fuzz_fatal("a series of \"%s\" has no buckets",
                           fc->name.data);
            }

            n += s->bounds->n + 3;

        } else {
            n++;
        }
    }

    return n;
}


ngx_uint_t
fuzz_check_prometheus(ngx_http_playarr_metrics_store_t *store, u_char *buf,
    size_t len)
{
    u_char                                  *p, *q, *last, *eol, *name;
    size_t                                   nlen;
    ngx_uint_t                               i, k, line, ns, nf, type;
    ngx_uint_t                               expect, series, total, help;
    ngx_uint_t                               max;
    fuzz_sample_t                           *samples, *s;
    ngx_http_playarr_metrics_family_conf_t  *fc;

    static const char  *types[] = { "counter", "gauge", "histogram", NULL };

    if (!fuzz_utf8_valid(buf, len)) {
        fuzz_fatal("the Prometheus text is not UTF-8");
    }

    if (len == 0 || buf[len - 1] != '\n') {
        fuzz_fatal("the Prometheus text does not end with a newline");
    }

    /* a sample per line at most */

    max = 0;

    for (p = buf; p < buf + len; p++) {
        max += (*p == '\n');
    }

    samples = malloc(max * sizeof(fuzz_sample_t));
    if (samples == NULL) {
        fuzz_fatal("malloc() failed");
    }

    fc = store->families.elts;
    nf = 0;
    ns = 0;
    total = 0;
    name = NULL;
    nlen = 0;
    type = 0;
    help = 0;
    line = 0;

    p = buf;
    last = buf + len;

    for ( /* void */ ; p < last; p = eol + 1) {
        line++;
        eol = ngx_strlchr(p, last, '\n');

        if (eol - p >= 7 && ngx_strncmp(p, "# HELP ", 7) == 0) {
            q = fuzz_name(p + 7, eol, 0);
            if (q == NULL || q == eol || *q != ' ') {
                fuzz_fatal("line %lu: a bad HELP", line);
            }

            for (q++; q < eol; q++) {
                if (*q == '\\') {
                    if (q + 1 == eol || (q[1] != '\\' && q[1] != 'n')) {
                        fuzz_fatal("line %lu: a bad escape in HELP", line);
                    }

                    q++;
                }
            }

            /* a family: the store's next one, or a self metric after */

            name = p + 7;
            nlen = fuzz_name(name, eol, 0) - name;
            help = 1;
            type = (ngx_uint_t) -1;
            continue;
        }

        if (eol - p >= 7 && ngx_strncmp(p, "# TYPE ", 7) == 0) {
            q = fuzz_name(p + 7, eol, 0);

            if (!help || q == NULL || (size_t) (q - p - 7) != nlen
                || ngx_strncmp(p + 7, name, nlen) != 0 || *q != ' ')
            {
                fuzz_fatal("line %lu: a TYPE not after its HELP", line);
            }

            q++;

            for (type = 0; types[type]; type++) {
                if ((size_t) (eol - q) == ngx_strlen(types[type])
                    && ngx_strncmp(q, types[type], eol - q) == 0)
                {
                    break;
                }
            }

            if (types[type] == NULL) {
                fuzz_fatal("line %lu: an unknown type", line);
            }

            help = 0;

            if (nf < store->families.nelts) {
                if (fc[nf].name.len != nlen
                    || ngx_strncmp(fc[nf].name.data, name, nlen) != 0
                    || fc[nf].type != type)
                {
                    fuzz_fatal("line %lu: family %lu is not \"%s\"", line, nf,
                               fc[nf].name.data);
                }

                expect = fuzz_visible(&fc[nf], &series);
                total += expect;

                /* the samples of this family follow */

                for (k = 0; k < expect; k++) {
                    if (eol + 1 >= last) {
                        fuzz_fatal("\"%s\" has %lu samples, not %lu",
                                   fc[nf].name.data, k, expect);
                    }

                    p = eol + 1;
                    eol = ngx_strlchr(p, last, '\n');
                    line++;

                    if (*p == '#') {
                        fuzz_fatal("\"%s\" has %lu samples, not %lu",
                                   fc[nf].name.data, k, expect);
                    }

                    if (ns == max) {
                        fuzz_fatal("more samples than lines");
                    }

                    s = &samples[ns++];
                    ngx_memzero(s, sizeof(fuzz_sample_t));

                    s->name = p;
                    q = fuzz_name(p, eol, 0);
                    if (q == NULL) {
                        fuzz_fatal("line %lu: a bad sample name", line);
                    }

                    s->len = q - p;

                    if (s->len < nlen || ngx_strncmp(p, name, nlen) != 0) {
                        fuzz_fatal("line %lu: a sample of another family",
                                   line);
                    }

                    if (type == NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM) {
                        if (!((s->len == nlen + 7
                               && ngx_strncmp(p + nlen, "_bucket", 7) == 0)
                              || (s->len == nlen + 4
                                  && ngx_strncmp(p + nlen, "_sum", 4) == 0)
                              || (s->len == nlen + 6
                                  && ngx_strncmp(p + nlen, "_count", 6)
                                     == 0)))
                        {
                            fuzz_fatal("line %lu: a bad histogram sample",
                                       line);
                        }

                    } else if (s->len != nlen) {
                        fuzz_fatal("line %lu: a sample of another family",
                                   line);
                    }

                    if (q < eol && *q == '{') {
                        q = fuzz_labels(q + 1, eol, s, line);
                    }

                    s->id = p;
                    s->id_len = q - p;

                    if (q == eol || *q != ' ') {
                        fuzz_fatal("line %lu: no value", line);
                    }

                    s->value = q + 1;
                    s->value_len = eol - q - 1;

                    if (!fuzz_number_ok(s->value, s->value_len)) {
                        fuzz_fatal("line %lu: a bad value \"%.*s\"", line,
                                   (int) s->value_len, s->value);
                    }

                    if (s->le
                        && (type != NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM
                            || !fuzz_number_ok(s->le, s->le_len)))
                    {
                        fuzz_fatal("line %lu: a bad \"le\"", line);
                    }
                }

                if (type == NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM) {
                    fuzz_check_histogram(&samples[ns - expect], expect,
                                         line);
                }

                nf++;
            }

            continue;
        }

        if (*p == '#') {
            fuzz_fatal("line %lu: an unknown comment", line);
        }

        /* a sample of a self metric */

        if (nf < store->families.nelts) {
            fuzz_fatal("line %lu: a sample before its family", line);
        }

        if (type == (ngx_uint_t) -1 || ns == max) {
            fuzz_fatal("line %lu: a sample without TYPE", line);
        }

        s = &samples[ns++];
        ngx_memzero(s, sizeof(fuzz_sample_t));

        q = fuzz_name(p, eol, 0);
        if (q == NULL || (size_t) (q - p) != nlen
            || ngx_strncmp(p, name, nlen) != 0)
        {
            fuzz_fatal("line %lu: a bad self metric sample", line);
        }

        if (q < eol && *q == '{') {
            q = fuzz_labels(q + 1, eol, s, line);
        }

        s->id = p;
        s->id_len = q - p;

        if (q == eol || *q != ' ' || !fuzz_number_ok(q + 1, eol - q - 1)) {
            fuzz_fatal("line %lu: a bad self metric value", line);
        }
    }

    if (nf != store->families.nelts) {
        fuzz_fatal("%lu families of %lu shown", nf, store->families.nelts);
    }

    /* no series twice */

    qsort(samples, ns, sizeof(fuzz_sample_t), fuzz_cmp_id);

    for (i = 1; i < ns; i++) {
        if (fuzz_cmp_id(&samples[i - 1], &samples[i]) == 0) {
            fuzz_fatal("a series twice: \"%.*s\"", (int) samples[i].id_len,
                       samples[i].id);
        }
    }

    free(samples);

    return total;
}


/* one histogram series: buckets, then _sum, then _count */

static void
fuzz_check_histogram(fuzz_sample_t *s, ngx_uint_t n, ngx_uint_t line)
{
    double      le, prev, count, last;
    ngx_uint_t  i, k;

    for (i = 0; i < n; /* void */ ) {

        prev = -HUGE_VAL;
        last = 0;

        for (k = i; k < n && s[k].le; k++) {
            le = fuzz_number(s[k].le, s[k].le_len);

            if (!(le > prev)) {
                fuzz_fatal("near line %lu: bucket bounds not increasing",
                           line);
            }

            count = fuzz_number(s[k].value, s[k].value_len);

            if (count < last) {
                fuzz_fatal("near line %lu: bucket counts going down", line);
            }

            prev = le;
            last = count;
        }

        if (k == i || prev != HUGE_VAL) {
            fuzz_fatal("near line %lu: no +Inf bucket", line);
        }

        if (k + 2 > n
            || s[k].le || s[k + 1].le
            || s[k].len < 4
            || ngx_strncmp(s[k].name + s[k].len - 4, "_sum", 4) != 0
            || s[k + 1].len < 6
            || ngx_strncmp(s[k + 1].name + s[k + 1].len - 6, "_count", 6)
               != 0
            || s[k + 1].value_len != s[k - 1].value_len
            || ngx_strncmp(s[k + 1].value, s[k - 1].value,
                           s[k - 1].value_len) != 0)
        {
            fuzz_fatal("near line %lu: +Inf bucket is not _count", line);
        }

        i = k + 2;
    }
}


void
fuzz_check_json(ngx_http_playarr_metrics_store_t *store, u_char *buf,
    size_t len, ngx_uint_t samples)
{
    json_t                                  *root, *f, *values, *v, *labels;
    json_t                                  *l;
    size_t                                   i, j, n, k;
    ngx_uint_t                               total;
    const char                              *key;
    json_error_t                             err;
    ngx_http_playarr_metrics_family_conf_t  *fc;

    if (!fuzz_utf8_valid(buf, len)) {
        fuzz_fatal("the JSON is not UTF-8");
    }

    root = json_loadb((char *) buf, len,
                      JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
    if (root == NULL) {
        fuzz_fatal("the JSON does not parse: %s at %d:%d \"%.*s\"", err.text,
                   err.line, err.column, (int) ngx_min(len, 4096), buf);
    }

    /* the families, then the one self metric of the JSON, the last */

    if (!json_is_array(root)
        || json_array_size(root) != store->families.nelts + 1)
    {
        fuzz_fatal("the JSON is not an array of the families");
    }

    f = json_array_get(root, store->families.nelts);
    values = json_object_get(f, "values");

    if (!json_is_object(f)
        || json_object_size(f) != 5
        || !json_is_string(json_object_get(f, "name"))
        || ngx_strcmp(json_string_value(json_object_get(f, "name")),
                      "playarr_http_requests_in_flight") != 0
        || !json_is_string(json_object_get(f, "type"))
        || ngx_strcmp(json_string_value(json_object_get(f, "type")), "gauge")
           != 0
        || !json_is_array(values)
        || json_array_size(values) != 1
        || !json_is_integer(json_object_get(json_array_get(values, 0),
                                            "value")))
    {
        fuzz_fatal("the JSON does not end with the in-flight gauge");
    }

    fc = store->families.elts;
    total = 0;

    for (i = 0; i < store->families.nelts; i++) {
        f = json_array_get(root, i);

        values = json_object_get(f, "values");

        if (!json_is_object(f)
            || json_object_size(f) != 5
            || !json_is_string(json_object_get(f, "name"))
            || ngx_strcmp(json_string_value(json_object_get(f, "name")),
                          fc[i].name.data) != 0
            || !json_is_string(json_object_get(f, "help"))
            || !json_is_string(json_object_get(f, "type"))
            || !json_is_string(json_object_get(f, "aggregator"))
            || !json_is_array(values))
        {
            fuzz_fatal("JSON family %zu is not {name, help, type, values, "
                       "aggregator} of \"%s\"", i, fc[i].name.data);
        }

        n = json_array_size(values);
        total += n;

        for (j = 0; j < n; j++) {
            v = json_array_get(values, j);
            labels = json_object_get(v, "labels");

            if (!json_is_object(v)
                || !(json_is_number(json_object_get(v, "value"))
                     || json_is_null(json_object_get(v, "value")))
                || !json_is_object(labels))
            {
                fuzz_fatal("JSON value %zu of \"%s\" is not {value, labels}",
                           j, fc[i].name.data);
            }

            k = 0;

            json_object_foreach(labels, key, l) {
                if (ngx_strcmp(key, "le") == 0
                    && fc[i].type == NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM
                    && (json_is_number(l)
                        || (json_is_string(l)
                            && ngx_strcmp(json_string_value(l), "+Inf")
                               == 0)))
                {
                    continue;
                }

                if (!json_is_string(l)) {
                    fuzz_fatal("JSON label \"%s\" of \"%s\" is not a string",
                               key, fc[i].name.data);
                }

                k++;
            }

            if (k != fc[i].nlabels) {
                fuzz_fatal("JSON value %zu of \"%s\" has %zu labels", j,
                           fc[i].name.data, k);
            }
        }
    }

    if (total != samples) {
        fuzz_fatal("the JSON has %lu values, the text %lu samples", total,
                   samples);
    }

    json_decref(root);
}


ngx_int_t
fuzz_render(ngx_pool_t *pool, ngx_http_playarr_metrics_store_t *store)
{
    off_t                                  len;
    u_char                                *text, *json;
    ngx_uint_t                             samples;
    ngx_chain_t                           *out;
    ngx_http_request_t                    *r;
    ngx_http_playarr_metrics_main_conf_t  *pmcf;

    r = ngx_pcalloc(pool, sizeof(ngx_http_request_t));
    pmcf = ngx_pcalloc(pool, sizeof(ngx_http_playarr_metrics_main_conf_t));

    if (r == NULL || pmcf == NULL) {
        return NGX_ERROR;
    }

    r->pool = pool;
    r->main = r;
    pmcf->store = store;

    len = -1;

    out = ngx_http_playarr_metrics_prometheus(r, pmcf, &len);
    if (out == NULL) {
        return NGX_ERROR;
    }

    text = fuzz_flatten(out, len);

    samples = fuzz_check_prometheus(store, text, len);

    free(text);

    len = -1;

    out = ngx_http_playarr_metrics_json(r, pmcf, &len);
    if (out == NULL) {
        return NGX_ERROR;
    }

    json = fuzz_flatten(out, len);

    fuzz_check_json(store, json, len, samples);

    free(json);

    return NGX_OK;
}
