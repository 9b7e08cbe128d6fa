
/*
 * Copyright (C) Playarr metrics module authors
 */


/*
 * playarr_metrics_merge: the app's own exposition, Prometheus text 0.0.4,
 * parsed into families that the renderer serves next to nginx's.  The
 * parser is strict: what it accepts, promtool and the prometheus_client
 * parser accept once re-rendered, and anything else (OpenMetrics, an
 * HTML page, a duplicate series, a bad escape) refuses the whole body.
 * No request is needed: bytes in, families out.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ngx_http_playarr_metrics_module.h>

#include <math.h>
#include <jansson.h>


#define NGX_HTTP_PLAYARR_METRICS_MERGE_NUMBER  64

typedef struct {
    ngx_pool_t                             *pool;
    ngx_http_playarr_metrics_app_t         *app;
    ngx_http_playarr_metrics_app_family_t  *cur;
    ngx_array_t                             keys;      /* ngx_str_t */
    ngx_str_t                               labels[2 * 64];
    const char                             *err;
} ngx_http_playarr_metrics_parse_t;


static ngx_int_t ngx_http_playarr_metrics_merge_line(
    ngx_http_playarr_metrics_parse_t *ps, u_char *p, u_char *end);
static ngx_int_t ngx_http_playarr_metrics_merge_comment(
    ngx_http_playarr_metrics_parse_t *ps, u_char *p, u_char *end);
static ngx_int_t ngx_http_playarr_metrics_merge_sample(
    ngx_http_playarr_metrics_parse_t *ps, u_char *p, u_char *end);
static u_char *ngx_http_playarr_metrics_merge_labels(
    ngx_http_playarr_metrics_parse_t *ps, u_char *p, u_char *end,
    ngx_uint_t *n);
static ngx_int_t ngx_http_playarr_metrics_merge_check(
    ngx_http_playarr_metrics_parse_t *ps,
    ngx_http_playarr_metrics_app_family_t *f, ngx_str_t *name,
    ngx_uint_t n);
static ngx_int_t ngx_http_playarr_metrics_merge_key(
    ngx_http_playarr_metrics_parse_t *ps, ngx_str_t *name,
    ngx_str_t *labels, ngx_uint_t n);
static ngx_http_playarr_metrics_app_family_t *
    ngx_http_playarr_metrics_merge_family(
    ngx_http_playarr_metrics_parse_t *ps, u_char *name, size_t len);
static ngx_int_t ngx_http_playarr_metrics_merge_app(ngx_pool_t *pool,
    ngx_http_playarr_metrics_app_t **app);
static const char *ngx_http_playarr_metrics_merge_json_family(
    ngx_pool_t *pool, ngx_http_playarr_metrics_app_t *app, json_t *fam);
static const char *ngx_http_playarr_metrics_merge_json_value(json_t *v);
static ngx_int_t ngx_http_playarr_metrics_merge_copy(ngx_pool_t *pool,
    ngx_str_t *dst, const char *src, size_t len);
static ngx_int_t ngx_http_playarr_metrics_merge_index(
    ngx_http_playarr_metrics_app_t *app, ngx_uint_t i);
static u_char *ngx_http_playarr_metrics_merge_name(u_char *p, u_char *end,
    ngx_uint_t label);
static ngx_uint_t ngx_http_playarr_metrics_merge_utf8(u_char *p, size_t len);
static int ngx_libc_cdecl ngx_http_playarr_metrics_merge_cmp(const void *a,
    const void *b);
static u_char *ngx_http_playarr_metrics_merge_escape(u_char *p, u_char *s,
    size_t len, ngx_uint_t quote);


#define ngx_http_playarr_metrics_blank(c)  ((c) == ' ' || (c) == '\t')

static const char  *ngx_http_playarr_metrics_merge_types[] = {
    "counter", "gauge", "histogram", "summary", "untyped", NULL
};

static ngx_str_t  ngx_http_playarr_metrics_merge_suffixes[] = {
    ngx_string("_bucket"), ngx_string("_sum"), ngx_string("_count")
};


/*
 * NGX_OK: *app holds the families; NGX_DECLINED: the body is refused,
 * *err says why (with the line); NGX_ERROR: out of memory.
 */

ngx_int_t
ngx_http_playarr_metrics_merge_parse(ngx_pool_t *pool, u_char *data,
    size_t len, ngx_http_playarr_metrics_app_t **app, ngx_str_t *err)
{
    u_char                            *p, *eol, *end;
    ngx_int_t                          rc;
    ngx_str_t                         *keys;
    ngx_uint_t                         line, i;
    ngx_http_playarr_metrics_parse_t   ps;

    ngx_str_null(err);

    if (len > NGX_HTTP_PLAYARR_METRICS_MERGE_MAX) {
        ngx_str_set(err, "body larger than 16 MiB");
        return NGX_DECLINED;
    }

    ngx_memzero(&ps, sizeof(ngx_http_playarr_metrics_parse_t));

    ps.pool = pool;

    ps.app = ngx_pcalloc(pool, sizeof(ngx_http_playarr_metrics_app_t));
    if (ps.app == NULL) {
        return NGX_ERROR;
    }

    if (ngx_array_init(&ps.app->families, pool, 16,
                       sizeof(ngx_http_playarr_metrics_app_family_t))
        != NGX_OK
        || ngx_array_init(&ps.keys, pool, 64, sizeof(ngx_str_t)) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (!ngx_http_playarr_metrics_merge_utf8(data, len)) {
        ngx_str_set(err, "not UTF-8 text");
        return NGX_DECLINED;
    }

    p = data;
    end = data + len;
    line = 1;

    while (p < end) {
        eol = ngx_strlchr(p, end, '\n');
        if (eol == NULL) {
            eol = end;
        }

        rc = ngx_http_playarr_metrics_merge_line(&ps, p, eol);

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        if (rc == NGX_DECLINED) {
            goto invalid;
        }

        p = eol + 1;
        line++;
    }

    /* no series twice: the keys sorted, neighbours compared */

    keys = ps.keys.elts;

    if (ps.keys.nelts > 1) {
        ngx_qsort(keys, ps.keys.nelts, sizeof(ngx_str_t),
                  ngx_http_playarr_metrics_merge_cmp);
    }

    for (i = 1; i < ps.keys.nelts; i++) {
        if (keys[i].len == keys[i - 1].len
            && ngx_memcmp(keys[i].data, keys[i - 1].data, keys[i].len) == 0)
        {
            ngx_str_set(err, "duplicate series");
            return NGX_DECLINED;
        }
    }

    *app = ps.app;

    return NGX_OK;

invalid:

    err->data = ngx_pnalloc(pool, 64 + ngx_strlen(ps.err));
    if (err->data == NULL) {
        return NGX_ERROR;
    }

    err->len = ngx_sprintf(err->data, "line %ui: %s", line, ps.err)
               - err->data;

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_playarr_metrics_merge_line(ngx_http_playarr_metrics_parse_t *ps,
    u_char *p, u_char *end)
{
    while (p < end && ngx_http_playarr_metrics_blank(*p)) {
        p++;
    }

    if (p == end) {
        return NGX_OK;
    }

    if (*p == '#') {
        return ngx_http_playarr_metrics_merge_comment(ps, p + 1, end);
    }

    return ngx_http_playarr_metrics_merge_sample(ps, p, end);
}


/* # HELP name text, # TYPE name type, or any other comment */

static ngx_int_t
ngx_http_playarr_metrics_merge_comment(ngx_http_playarr_metrics_parse_t *ps,
    u_char *p, u_char *end)
{
    u_char                                 *word, *name, *q, *h;
    size_t                                  len;
    ngx_uint_t                              help, i;
    ngx_http_playarr_metrics_app_family_t  *f;

    while (p < end && ngx_http_playarr_metrics_blank(*p)) {
        p++;
    }

    word = p;

    while (p < end && !ngx_http_playarr_metrics_blank(*p)) {
        p++;
    }

    len = p - word;

    if ((len == 3 && ngx_strncmp(word, "EOF", 3) == 0)
        || (len == 4 && ngx_strncmp(word, "UNIT", 4) == 0))
    {
        ps->err = "OpenMetrics, not text 0.0.4";
        return NGX_DECLINED;
    }

    if (len != 4
        || (ngx_strncmp(word, "HELP", 4) != 0
            && ngx_strncmp(word, "TYPE", 4) != 0))
    {
        return NGX_OK;
    }

    help = (word[0] == 'H');

    while (p < end && ngx_http_playarr_metrics_blank(*p)) {
        p++;
    }

    name = p;
    p = ngx_http_playarr_metrics_merge_name(p, end, 0);

    if (p == NULL || (p < end && !ngx_http_playarr_metrics_blank(*p))) {
        ps->err = "invalid metric name in a HELP or TYPE line";
        return NGX_DECLINED;
    }

    f = ps->cur;

    if (f == NULL
        || f->name.len != (size_t) (p - name)
        || ngx_strncmp(f->name.data, name, p - name) != 0
        || f->samples.nelts)
    {
        f = ngx_http_playarr_metrics_merge_family(ps, name, p - name);
        if (f == NULL) {
            return ps->err ? NGX_DECLINED : NGX_ERROR;
        }
    }

    while (p < end && ngx_http_playarr_metrics_blank(*p)) {
        p++;
    }

    if (help) {
        if (f->has_help) {
            ps->err = "second HELP line for a family";
            return NGX_DECLINED;
        }

        f->has_help = 1;

        h = ngx_pnalloc(ps->pool, end - p + 1);
        if (h == NULL) {
            return NGX_ERROR;
        }

        f->help.data = h;

        for ( /* void */ ; p < end; p++) {
            if (*p != '\\') {
                *h++ = *p;
                continue;
            }

            if (++p == end || (*p != '\\' && *p != 'n')) {
                ps->err = "invalid escape sequence in HELP";
                return NGX_DECLINED;
            }

            *h++ = (*p == 'n') ? '\n' : '\\';
        }

        f->help.len = h - f->help.data;

        return NGX_OK;
    }

    if (f->has_type) {
        ps->err = "second TYPE line for a family";
        return NGX_DECLINED;
    }

    q = p;

    while (p < end && !ngx_http_playarr_metrics_blank(*p)) {
        p++;
    }

    len = p - q;

    while (p < end && ngx_http_playarr_metrics_blank(*p)) {
        p++;
    }

    for (i = 0; ngx_http_playarr_metrics_merge_types[i]; i++) {
        if (len == ngx_strlen(ngx_http_playarr_metrics_merge_types[i])
            && ngx_strncmp(q, ngx_http_playarr_metrics_merge_types[i], len)
               == 0)
        {
            break;
        }
    }

    if (ngx_http_playarr_metrics_merge_types[i] == NULL || p != end) {
        ps->err = "unknown metric type";
        return NGX_DECLINED;
    }

    f->has_type = 1;
    f->type = i;

    /* its samples' names are no other family's */

    if (i == NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM
        || i == NGX_HTTP_PLAYARR_METRICS_TYPE_SUMMARY)
    {
        for (i = 0; i < 3; i++) {
            len = f->name.len + ngx_http_playarr_metrics_merge_suffixes[i].len;

            q = ngx_pnalloc(ps->pool, len);
            if (q == NULL) {
                return NGX_ERROR;
            }

            ngx_memcpy(q, f->name.data, f->name.len);
            ngx_memcpy(q + f->name.len,
                       ngx_http_playarr_metrics_merge_suffixes[i].data,
                       ngx_http_playarr_metrics_merge_suffixes[i].len);

            if (ngx_http_playarr_metrics_merge_find(ps->app, q, len)) {
                ps->err = "a family named as another one's samples";
                return NGX_DECLINED;
            }
        }
    }

    return NGX_OK;
}


/* name{label="value",...} value [timestamp] */

static ngx_int_t
ngx_http_playarr_metrics_merge_sample(ngx_http_playarr_metrics_parse_t *ps,
    u_char *p, u_char *end)
{
    u_char                                 *q;
    ngx_str_t                               name, *labels;
    ngx_uint_t                              n;
    ngx_http_playarr_metrics_sample_t      *s;
    ngx_http_playarr_metrics_app_family_t  *f;

    name.data = p;
    p = ngx_http_playarr_metrics_merge_name(p, end, 0);

    if (p == NULL) {
        ps->err = "invalid metric name";
        return NGX_DECLINED;
    }

    name.len = p - name.data;

    while (p < end && ngx_http_playarr_metrics_blank(*p)) {
        p++;
    }

    n = 0;

    if (p < end && *p == '{') {
        p = ngx_http_playarr_metrics_merge_labels(ps, p + 1, end, &n);
        if (p == NULL) {
            return ps->err ? NGX_DECLINED : NGX_ERROR;
        }

        while (p < end && ngx_http_playarr_metrics_blank(*p)) {
            p++;
        }
    }

    f = ngx_http_playarr_metrics_merge_owner(ps->app, name.data, name.len);

    if (f == NULL) {
        f = ngx_http_playarr_metrics_merge_family(ps, name.data, name.len);
        if (f == NULL) {
            return ps->err ? NGX_DECLINED : NGX_ERROR;
        }
    }

    ps->cur = f;

    if (ngx_http_playarr_metrics_merge_check(ps, f, &name, n) != NGX_OK) {
        return NGX_DECLINED;
    }

    s = ngx_array_push(&f->samples);
    if (s == NULL) {
        return NGX_ERROR;
    }

    s->name = name;
    s->nlabels = n;
    s->labels = NULL;

    if (n) {
        labels = ngx_palloc(ps->pool, 2 * n * sizeof(ngx_str_t));
        if (labels == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(labels, ps->labels, 2 * n * sizeof(ngx_str_t));
        s->labels = labels;
    }

    /* the value, then maybe a timestamp in milliseconds */

    q = p;

    while (p < end && !ngx_http_playarr_metrics_blank(*p)) {
        p++;
    }

    if (!ngx_http_playarr_metrics_merge_number(q, p - q)) {
        ps->err = "invalid value";
        return NGX_DECLINED;
    }

    s->value.data = q;
    s->value.len = p - q;

    while (p < end && ngx_http_playarr_metrics_blank(*p)) {
        p++;
    }

    q = p;

    if (p < end && *p == '-') {
        p++;
    }

    while (p < end && *p >= '0' && *p <= '9') {
        p++;
    }

    s->timestamp.data = q;
    s->timestamp.len = p - q;

    while (p < end && ngx_http_playarr_metrics_blank(*p)) {
        p++;
    }

    if (p != end
        || (s->timestamp.len && s->timestamp.data[s->timestamp.len - 1] == '-')
        || s->timestamp.len > 18)
    {
        ps->err = "invalid timestamp or text after the value";
        return NGX_DECLINED;
    }

    return ngx_http_playarr_metrics_merge_key(ps, &name, s->labels, n);
}


/* after "{": pairs until "}", the values unescaped; NULL: invalid */

static u_char *
ngx_http_playarr_metrics_merge_labels(ngx_http_playarr_metrics_parse_t *ps,
    u_char *p, u_char *end, ngx_uint_t *n)
{
    u_char      *q, *v, *e;
    ngx_uint_t   i, escaped;

    *n = 0;

    for ( ;; ) {
        while (p < end && ngx_http_playarr_metrics_blank(*p)) {
            p++;
        }

        if (p < end && *p == '}') {
            return p + 1;
        }

        if (*n == 64) {
            ps->err = "more than 64 labels";
            return NULL;
        }

        q = p;
        p = ngx_http_playarr_metrics_merge_name(p, end, 1);

        if (p == NULL) {
            ps->err = "invalid label name";
            return NULL;
        }

        ps->labels[2 * *n].data = q;
        ps->labels[2 * *n].len = p - q;

        if (p - q == 8 && ngx_strncmp(q, "__name__", 8) == 0) {
            ps->err = "the label name \"__name__\" is reserved";
            return NULL;
        }

        for (i = 0; i < *n; i++) {
            if (ps->labels[2 * i].len == (size_t) (p - q)
                && ngx_strncmp(ps->labels[2 * i].data, q, p - q) == 0)
            {
                ps->err = "duplicate label name";
                return NULL;
            }
        }

        while (p < end && ngx_http_playarr_metrics_blank(*p)) {
            p++;
        }

        if (p == end || *p++ != '=') {
            ps->err = "expected \"=\" after a label name";
            return NULL;
        }

        while (p < end && ngx_http_playarr_metrics_blank(*p)) {
            p++;
        }

        if (p == end || *p++ != '"') {
            ps->err = "expected a quoted label value";
            return NULL;
        }

        /* the value: \\, \" and \n only */

        q = p;
        escaped = 0;

        for ( /* void */ ; p < end && *p != '"'; p++) {
            if (*p == '\\') {
                if (++p == end || (*p != '\\' && *p != '"' && *p != 'n')) {
                    ps->err = "invalid escape sequence in a label value";
                    return NULL;
                }

                escaped = 1;
            }
        }

        if (p == end) {
            ps->err = "unterminated label value";
            return NULL;
        }

        if (escaped) {
            v = ngx_pnalloc(ps->pool, p - q);
            if (v == NULL) {
                return NULL;
            }

            ps->labels[2 * *n + 1].data = v;

            for (e = q; e < p; e++) {
                if (*e == '\\') {
                    e++;
                    *v++ = (*e == 'n') ? '\n' : *e;

                } else {
                    *v++ = *e;
                }
            }

            ps->labels[2 * *n + 1].len = v - ps->labels[2 * *n + 1].data;

        } else {
            ps->labels[2 * *n + 1].data = q;
            ps->labels[2 * *n + 1].len = p - q;
        }

        (*n)++;
        p++;

        while (p < end && ngx_http_playarr_metrics_blank(*p)) {
            p++;
        }

        if (p < end && *p == ',') {
            p++;
            continue;
        }

        if (p < end && *p == '}') {
            return p + 1;
        }

        ps->err = "expected \",\" or \"}\" after a label value";
        return NULL;
    }
}


/* a sample's name and its le or quantile label as its family's type has */

static ngx_int_t
ngx_http_playarr_metrics_merge_check(ngx_http_playarr_metrics_parse_t *ps,
    ngx_http_playarr_metrics_app_family_t *f, ngx_str_t *name, ngx_uint_t n)
{
    size_t       len;
    ngx_str_t   *sfx, *special;
    ngx_uint_t   i, kind;

    /* kind: 0 the family's name, 1 _bucket, 2 _sum, 3 _count */

    kind = 0;

    if (name->len != f->name.len) {
        len = name->len - f->name.len;

        for (i = 0; i < 3; i++) {
            sfx = &ngx_http_playarr_metrics_merge_suffixes[i];

            if (sfx->len == len
                && ngx_strncmp(name->data + f->name.len, sfx->data, len) == 0)
            {
                kind = i + 1;
            }
        }
    }

    special = NULL;

    for (i = 0; i < n; i++) {
        if ((ps->labels[2 * i].len == 2
             && ngx_strncmp(ps->labels[2 * i].data, "le", 2) == 0
             && f->type == NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM)
            || (ps->labels[2 * i].len == 8
                && ngx_strncmp(ps->labels[2 * i].data, "quantile", 8) == 0
                && f->type == NGX_HTTP_PLAYARR_METRICS_TYPE_SUMMARY))
        {
            special = &ps->labels[2 * i + 1];
        }
    }

    switch (f->type) {

    case NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM:
        if (kind == 0 || (kind == 1) != (special != NULL)) {
            ps->err = "a histogram sample without its suffix or \"le\"";
            return NGX_DECLINED;
        }

        break;

    case NGX_HTTP_PLAYARR_METRICS_TYPE_SUMMARY:
        if (kind == 1 || (kind == 0) != (special != NULL)) {
            ps->err = "a summary sample without its suffix or \"quantile\"";
            return NGX_DECLINED;
        }

        break;

    default:
        if (kind) {
            ps->err = "a sample named after another family";
            return NGX_DECLINED;
        }
    }

    if (special
        && !ngx_http_playarr_metrics_merge_number(special->data,
                                                  special->len))
    {
        ps->err = "invalid \"le\" or \"quantile\" value";
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* the identity of a series: its name, then its labels sorted by name */

static ngx_int_t
ngx_http_playarr_metrics_merge_key(ngx_http_playarr_metrics_parse_t *ps,
    ngx_str_t *name, ngx_str_t *labels, ngx_uint_t n)
{
    u_char      *p;
    size_t       size;
    ngx_str_t   *key;
    ngx_uint_t   i, j, order[64], t;

    size = name->len + 1;

    for (i = 0; i < n; i++) {
        order[i] = i;
        size += 8 + labels[2 * i].len + labels[2 * i + 1].len;
    }

    for (i = 1; i < n; i++) {
        for (j = i; j > 0; j--) {
            if (ngx_http_playarr_metrics_merge_cmp(&labels[2 * order[j]],
                                                   &labels[2 * order[j - 1]])
                >= 0)
            {
                break;
            }

            t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    }

    key = ngx_array_push(&ps->keys);
    if (key == NULL) {
        return NGX_ERROR;
    }

    key->data = ngx_pnalloc(ps->pool, size);
    if (key->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(key->data, name->data, name->len);
    *p++ = '\0';

    for (i = 0; i < n; i++) {
        j = order[i];

        p = ngx_sprintf(p, "%uD", (uint32_t) labels[2 * j].len);
        p = ngx_cpymem(p, labels[2 * j].data, labels[2 * j].len);
        *p++ = '\0';
        p = ngx_cpymem(p, labels[2 * j + 1].data, labels[2 * j + 1].len);
        *p++ = '\0';
    }

    key->len = p - key->data;

    return NGX_OK;
}


/* a new family, its name taken by no other family nor its samples */

static ngx_http_playarr_metrics_app_family_t *
ngx_http_playarr_metrics_merge_family(ngx_http_playarr_metrics_parse_t *ps,
    u_char *name, size_t len)
{
    ngx_http_playarr_metrics_app_t         *app;
    ngx_http_playarr_metrics_app_family_t  *f;

    app = ps->app;

    if (ngx_http_playarr_metrics_merge_owner(app, name, len)) {
        ps->err = "samples of a family that has already ended";
        return NULL;
    }

    f = ngx_array_push(&app->families);
    if (f == NULL) {
        return NULL;
    }

    ngx_memzero(f, sizeof(ngx_http_playarr_metrics_app_family_t));

    f->name.data = name;
    f->name.len = len;
    f->type = NGX_HTTP_PLAYARR_METRICS_TYPE_UNTYPED;

    if (ngx_array_init(&f->samples, ps->pool, 4,
                       sizeof(ngx_http_playarr_metrics_sample_t))
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_http_playarr_metrics_merge_index(app, app->families.nelts - 1)
        != NGX_OK)
    {
        return NULL;
    }

    ps->cur = f;

    return f;
}


/*
 * The json format: prom-client's register.getMetricsAsJSON(), an array of
 * {"name", "help", "type", "values": [{"value", "labels", "metricName"}],
 * "aggregator"}.  Each family is checked, then kept whole, as jansson
 * writes it again, to be served as it is.
 */

ngx_int_t
ngx_http_playarr_metrics_merge_json(ngx_pool_t *pool, u_char *data,
    size_t len, ngx_http_playarr_metrics_app_t **app, ngx_str_t *err)
{
    size_t                           i;
    json_t                          *root, *fam;
    const char                      *why;
    json_error_t                     jerr;
    ngx_http_playarr_metrics_app_t  *a;

    ngx_str_null(err);

    if (len > NGX_HTTP_PLAYARR_METRICS_MERGE_MAX) {
        ngx_str_set(err, "body larger than 16 MiB");
        return NGX_DECLINED;
    }

    if (ngx_http_playarr_metrics_merge_app(pool, &a) != NGX_OK) {
        return NGX_ERROR;
    }

    root = json_loadb((char *) data, len, JSON_REJECT_DUPLICATES, &jerr);

    if (root == NULL) {
        ngx_str_set(err, "not JSON");
        return NGX_DECLINED;
    }

    why = json_is_array(root) ? NULL : "not an array";

    for (i = 0; why == NULL && i < json_array_size(root); i++) {
        fam = json_array_get(root, i);

        why = ngx_http_playarr_metrics_merge_json_family(pool, a, fam);
    }

    json_decref(root);

    if (why == NULL) {
        *app = a;
        return NGX_OK;
    }

    if (why == (const char *) -1) {
        return NGX_ERROR;
    }

    err->data = (u_char *) why;
    err->len = ngx_strlen(why);

    return NGX_DECLINED;
}


/* NULL: the family is kept; (char *) -1: no memory; else what is wrong */

static const char *
ngx_http_playarr_metrics_merge_json_family(ngx_pool_t *pool,
    ngx_http_playarr_metrics_app_t *app, json_t *fam)
{
    char                                   *text;
    size_t                                  i, len;
    json_t                                 *name, *help, *type, *values;
    ngx_int_t                               rc;
    ngx_uint_t                              t;
    const char                             *why, *s;
    ngx_http_playarr_metrics_app_family_t  *f;

    name = json_object_get(fam, "name");
    help = json_object_get(fam, "help");
    type = json_object_get(fam, "type");
    values = json_object_get(fam, "values");

    if (!json_is_object(fam) || !json_is_string(name)
        || !json_is_string(type) || !json_is_array(values)
        || (help && !json_is_string(help)))
    {
        return "a family without \"name\", \"type\" or \"values\"";
    }

    s = json_string_value(name);
    len = json_string_length(name);

    if (ngx_http_playarr_metrics_merge_name((u_char *) s, (u_char *) s + len,
                                            0)
        != (u_char *) s + len)
    {
        return "invalid metric name";
    }

    for (t = 0; ngx_http_playarr_metrics_merge_types[t]; t++) {
        if (ngx_strcmp(json_string_value(type),
                       ngx_http_playarr_metrics_merge_types[t])
            == 0)
        {
            break;
        }
    }

    if (ngx_http_playarr_metrics_merge_types[t] == NULL) {
        return "unknown metric type";
    }

    for (i = 0; i < json_array_size(values); i++) {
        why = ngx_http_playarr_metrics_merge_json_value(
                                                 json_array_get(values, i));
        if (why) {
            return why;
        }
    }

    if (ngx_http_playarr_metrics_merge_find(app, (u_char *) s, len)) {
        return "a family twice";
    }

    f = ngx_array_push(&app->families);
    if (f == NULL) {
        return (const char *) -1;
    }

    ngx_memzero(f, sizeof(ngx_http_playarr_metrics_app_family_t));

    f->type = t;
    f->has_type = 1;
    f->has_help = 1;

    if (ngx_array_init(&f->samples, pool, 1,
                       sizeof(ngx_http_playarr_metrics_sample_t))
        != NGX_OK
        || ngx_http_playarr_metrics_merge_copy(pool, &f->name, s, len)
           != NGX_OK
        || (help
            && ngx_http_playarr_metrics_merge_copy(pool, &f->help,
                                                   json_string_value(help),
                                                   json_string_length(help))
               != NGX_OK))
    {
        return (const char *) -1;
    }

    text = json_dumps(fam, JSON_COMPACT);
    if (text == NULL) {
        return (const char *) -1;
    }

    rc = ngx_http_playarr_metrics_merge_copy(pool, &f->json, text,
                                             ngx_strlen(text));
    free(text);

    if (rc != NGX_OK
        || ngx_http_playarr_metrics_merge_index(app, app->families.nelts - 1)
           != NGX_OK)
    {
        return (const char *) -1;
    }

    return NULL;
}


static const char *
ngx_http_playarr_metrics_merge_json_value(json_t *v)
{
    json_t      *value, *labels, *metric, *lv;
    const char  *key, *s;

    value = json_object_get(v, "value");
    labels = json_object_get(v, "labels");
    metric = json_object_get(v, "metricName");

    if (!json_is_object(v)
        || !(json_is_number(value) || json_is_null(value))
        || (labels && !json_is_object(labels))
        || (metric && !json_is_string(metric)))
    {
        return "a value that is not {\"value\": number, \"labels\": {}}";
    }

    if (metric) {
        s = json_string_value(metric);

        if (ngx_http_playarr_metrics_merge_name((u_char *) s,
                                 (u_char *) s + json_string_length(metric), 0)
            != (u_char *) s + json_string_length(metric))
        {
            return "invalid metricName";
        }
    }

    json_object_foreach(labels, key, lv) {
        if (ngx_http_playarr_metrics_merge_name((u_char *) key,
                                     (u_char *) key + ngx_strlen(key), 1)
            != (u_char *) key + ngx_strlen(key)
            || !(json_is_string(lv) || json_is_number(lv)))
        {
            return "an invalid label";
        }
    }

    return NULL;
}


static ngx_int_t
ngx_http_playarr_metrics_merge_copy(ngx_pool_t *pool, ngx_str_t *dst,
    const char *src, size_t len)
{
    dst->data = ngx_pnalloc(pool, len ? len : 1);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(dst->data, src, len);
    dst->len = len;

    return NGX_OK;
}


static ngx_int_t
ngx_http_playarr_metrics_merge_app(ngx_pool_t *pool,
    ngx_http_playarr_metrics_app_t **app)
{
    ngx_http_playarr_metrics_app_t  *a;

    a = ngx_pcalloc(pool, sizeof(ngx_http_playarr_metrics_app_t));
    if (a == NULL) {
        return NGX_ERROR;
    }

    if (ngx_array_init(&a->families, pool, 16,
                       sizeof(ngx_http_playarr_metrics_app_family_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    *app = a;

    return NGX_OK;
}


/* the families by name: open addressing, index + 1, half full at most */

static ngx_int_t
ngx_http_playarr_metrics_merge_index(ngx_http_playarr_metrics_app_t *app,
    ngx_uint_t n)
{
    ngx_uint_t                              i, j, size, *hash;
    ngx_http_playarr_metrics_app_family_t  *f;

    f = app->families.elts;

    if (2 * (n + 1) > app->size) {
        size = app->size ? 2 * app->size : 64;

        hash = ngx_pcalloc(app->families.pool, size * sizeof(ngx_uint_t));
        if (hash == NULL) {
            return NGX_ERROR;
        }

        app->hash = hash;
        app->size = size;

        for (i = 0; i < n; i++) {
            j = ngx_hash_key(f[i].name.data, f[i].name.len) & (size - 1);

            while (hash[j]) {
                j = (j + 1) & (size - 1);
            }

            hash[j] = i + 1;
        }
    }

    j = ngx_hash_key(f[n].name.data, f[n].name.len) & (app->size - 1);

    while (app->hash[j]) {
        j = (j + 1) & (app->size - 1);
    }

    app->hash[j] = n + 1;

    return NGX_OK;
}


ngx_http_playarr_metrics_app_family_t *
ngx_http_playarr_metrics_merge_find(ngx_http_playarr_metrics_app_t *app,
    u_char *name, size_t len)
{
    ngx_uint_t                              j;
    ngx_http_playarr_metrics_app_family_t  *f, *fam;

    if (app == NULL || app->size == 0) {
        return NULL;
    }

    fam = app->families.elts;

    for (j = ngx_hash_key(name, len) & (app->size - 1);
         app->hash[j];
         j = (j + 1) & (app->size - 1))
    {
        f = &fam[app->hash[j] - 1];

        if (f->name.len == len && ngx_strncmp(f->name.data, name, len) == 0) {
            return f;
        }
    }

    return NULL;
}


/* the family whose sample this name is: its own, or a suffixed one */

ngx_http_playarr_metrics_app_family_t *
ngx_http_playarr_metrics_merge_owner(ngx_http_playarr_metrics_app_t *app,
    u_char *name, size_t len)
{
    ngx_str_t                              *sfx;
    ngx_uint_t                              i;
    ngx_http_playarr_metrics_app_family_t  *f;

    f = ngx_http_playarr_metrics_merge_find(app, name, len);
    if (f) {
        return f;
    }

    for (i = 0; i < 3; i++) {
        sfx = &ngx_http_playarr_metrics_merge_suffixes[i];

        if (len <= sfx->len
            || ngx_strncmp(name + len - sfx->len, sfx->data, sfx->len) != 0)
        {
            continue;
        }

        f = ngx_http_playarr_metrics_merge_find(app, name, len - sfx->len);

        if (f && (f->type == NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM
                  || (f->type == NGX_HTTP_PLAYARR_METRICS_TYPE_SUMMARY
                      && i > 0)))
        {
            return f;
        }
    }

    return NULL;
}


/* the end of a metric (or label) name, NULL if there is none */

static u_char *
ngx_http_playarr_metrics_merge_name(u_char *p, u_char *end, ngx_uint_t label)
{
    u_char  *start;

    for (start = p; p < end; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
            || *p == '_' || (!label && *p == ':')
            || (p > start && *p >= '0' && *p <= '9'))
        {
            continue;
        }

        break;
    }

    return (p == start) ? NULL : p;
}


/*
 * A value as both parsers read it: [+-]digits[.digits][e[+-]digits],
 * [+-].digits..., NaN, [+-]Inf; finite unless Inf, 63 bytes at most.
 */

ngx_uint_t
ngx_http_playarr_metrics_merge_number(u_char *p, size_t len)
{
    u_char      *end, *start, buf[NGX_HTTP_PLAYARR_METRICS_MERGE_NUMBER];
    double       v;
    ngx_uint_t   digits;

    start = p;
    end = p + len;

    if (len == 3 && ngx_strncmp(p, "NaN", 3) == 0) {
        return 1;
    }

    if (len >= NGX_HTTP_PLAYARR_METRICS_MERGE_NUMBER) {
        return 0;
    }

    if (p < end && (*p == '+' || *p == '-')) {
        p++;
    }

    if (end - p == 3 && ngx_strncmp(p, "Inf", 3) == 0) {
        return 1;
    }

    digits = 0;

    while (p < end && *p >= '0' && *p <= '9') {
        p++;
        digits++;
    }

    if (p < end && *p == '.') {
        p++;

        while (p < end && *p >= '0' && *p <= '9') {
            p++;
            digits++;
        }
    }

    if (digits == 0) {
        return 0;
    }

    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;

        if (p < end && (*p == '+' || *p == '-')) {
            p++;
        }

        digits = 0;

        while (p < end && *p >= '0' && *p <= '9') {
            p++;
            digits++;
        }

        if (digits == 0) {
            return 0;
        }
    }

    if (p != end) {
        return 0;
    }

    /* a number beyond the doubles is refused by Go's parser (promtool) */

    ngx_memcpy(buf, start, len);
    buf[len] = '\0';

    v = strtod((char *) buf, NULL);

    return (v < HUGE_VAL && v > -HUGE_VAL);
}


/*
 * Well-formed UTF-8 (RFC 3629: no overlong form, no surrogate, nothing
 * above U+10FFFF), without control characters but tab and newline.
 * ngx_utf8_decode() checks continuation bytes for 0x80 and over only.
 */

static ngx_uint_t
ngx_http_playarr_metrics_merge_utf8(u_char *p, size_t len)
{
    u_char      *end;
    uint32_t     c, min;
    ngx_uint_t   n;

    end = p + len;

    while (p < end) {
        c = *p++;

        if (c < 0x80) {
            if ((c < 0x20 && c != '\t' && c != '\n') || c == 0x7f) {
                return 0;
            }

            continue;
        }

        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            c &= 0x1f;
            min = 0x80;

        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            c &= 0x0f;
            min = 0x800;

        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            c &= 0x07;
            min = 0x10000;

        } else {
            return 0;
        }

        if ((size_t) (end - p) < n) {
            return 0;
        }

        while (n--) {
            if ((*p & 0xc0) != 0x80) {
                return 0;
            }

            c = (c << 6) | (*p++ & 0x3f);
        }

        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) {
            return 0;
        }
    }

    return 1;
}


static int ngx_libc_cdecl
ngx_http_playarr_metrics_merge_cmp(const void *a, const void *b)
{
    int               rc;
    const ngx_str_t  *x, *y;

    x = a;
    y = b;

    rc = ngx_memcmp(x->data, y->data, ngx_min(x->len, y->len));

    if (rc != 0) {
        return rc;
    }

    return (x->len < y->len) ? -1 : (x->len > y->len);
}


static u_char *
ngx_http_playarr_metrics_merge_escape(u_char *p, u_char *s, size_t len,
    ngx_uint_t quote)
{
    u_char  *end;

    for (end = s + len; s < end; s++) {
        if (*s == '\\') {
            *p++ = '\\'; *p++ = '\\';

        } else if (*s == '\n') {
            *p++ = '\\'; *p++ = 'n';

        } else if (*s == '"' && quote) {
            *p++ = '\\'; *p++ = '"';

        } else {
            *p++ = *s;
        }
    }

    return p;
}


/* room for a family's HELP and TYPE lines, and for one of its samples */

size_t
ngx_http_playarr_metrics_merge_header_size(
    ngx_http_playarr_metrics_app_family_t *f)
{
    return 2 * f->name.len + 2 * f->help.len + 32;
}


u_char *
ngx_http_playarr_metrics_merge_header(u_char *p,
    ngx_http_playarr_metrics_app_family_t *f)
{
    const char  *type;

    type = ngx_http_playarr_metrics_merge_types[f->type];

    if (f->has_help) {
        p = ngx_cpymem(p, "# HELP ", 7);
        p = ngx_cpymem(p, f->name.data, f->name.len);
        *p++ = ' ';
        p = ngx_http_playarr_metrics_merge_escape(p, f->help.data,
                                                  f->help.len, 0);
        *p++ = '\n';
    }

    if (f->has_type) {
        p = ngx_cpymem(p, "# TYPE ", 7);
        p = ngx_cpymem(p, f->name.data, f->name.len);
        *p++ = ' ';
        p = ngx_cpymem(p, type, ngx_strlen(type));
        *p++ = '\n';
    }

    return p;
}


size_t
ngx_http_playarr_metrics_merge_sample_size(
    ngx_http_playarr_metrics_sample_t *s)
{
    size_t      size;
    ngx_uint_t  i;

    size = s->name.len + s->value.len + s->timestamp.len + 8;

    for (i = 0; i < s->nlabels; i++) {
        size += s->labels[2 * i].len + 2 * s->labels[2 * i + 1].len + 4;
    }

    return size;
}


u_char *
ngx_http_playarr_metrics_merge_sample_text(u_char *p,
    ngx_http_playarr_metrics_sample_t *s)
{
    ngx_uint_t  i;

    p = ngx_cpymem(p, s->name.data, s->name.len);

    if (s->nlabels) {
        *p++ = '{';

        for (i = 0; i < s->nlabels; i++) {
            if (i) {
                *p++ = ',';
            }

            p = ngx_cpymem(p, s->labels[2 * i].data, s->labels[2 * i].len);
            *p++ = '=';
            *p++ = '"';
            p = ngx_http_playarr_metrics_merge_escape(p,
                                                   s->labels[2 * i + 1].data,
                                                   s->labels[2 * i + 1].len,
                                                   1);
            *p++ = '"';
        }

        *p++ = '}';
    }

    *p++ = ' ';
    p = ngx_cpymem(p, s->value.data, s->value.len);

    if (s->timestamp.len) {
        *p++ = ' ';
        p = ngx_cpymem(p, s->timestamp.data, s->timestamp.len);
    }

    *p++ = '\n';

    return p;
}
