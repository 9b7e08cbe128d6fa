
/*
 * Copyright (C) Playarr metrics module authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ngx_http_playarr_metrics_module.h>

#include <math.h>


/* the longest line a writer is asked to hold at once */
#define NGX_HTTP_PLAYARR_METRICS_LINE_MAX                                     \
    (1024 + NGX_HTTP_PLAYARR_METRICS_MAX_LABELS                               \
            * (256 + 6 * NGX_HTTP_PLAYARR_METRICS_VALUE_MAX))

#define NGX_HTTP_PLAYARR_METRICS_CHUNK                                        \
    (4 * NGX_HTTP_PLAYARR_METRICS_LINE_MAX)

#define NGX_HTTP_PLAYARR_METRICS_NUMBER_MAX   32

#define NGX_HTTP_PLAYARR_METRICS_LE_BUF                                       \
    ((NGX_HTTP_PLAYARR_METRICS_MAX_BUCKETS + 1)                               \
     * NGX_HTTP_PLAYARR_METRICS_NUMBER_MAX)


/* the body is built in a chain of chunks, never one giant buffer */

typedef struct {
    ngx_http_request_t            *request;
    ngx_chain_t                   *out;
    ngx_chain_t                  **last;
    ngx_buf_t                     *buf;
    off_t                          len;

    /* scratch room for one series */
    ngx_str_t                      values[NGX_HTTP_PLAYARR_METRICS_MAX_LABELS];
    ngx_str_t                      le[NGX_HTTP_PLAYARR_METRICS_MAX_BUCKETS + 1];
    u_char                         lebuf[NGX_HTTP_PLAYARR_METRICS_LE_BUF];
} ngx_http_playarr_metrics_writer_t;


typedef struct {
    ngx_str_t                      name;
    ngx_str_t                      value;
} ngx_http_playarr_metrics_label_t;


static u_char *ngx_http_playarr_metrics_reserve(
    ngx_http_playarr_metrics_writer_t *w, size_t n);
static ngx_chain_t *ngx_http_playarr_metrics_finish(
    ngx_http_playarr_metrics_writer_t *w, off_t *len);
static u_char *ngx_http_playarr_metrics_number(u_char *p, double v);
static u_char *ngx_http_playarr_metrics_escape_help(u_char *p, ngx_str_t *s);
static u_char *ngx_http_playarr_metrics_escape_label(u_char *p, u_char *s,
    size_t len);
static u_char *ngx_http_playarr_metrics_escape_json(u_char *p, u_char *s,
    size_t len);
static ngx_uint_t ngx_http_playarr_metrics_split(
    ngx_http_playarr_metrics_series_t *s, ngx_str_t *values);
static u_char *ngx_http_playarr_metrics_labels(u_char *p,
    ngx_http_playarr_metrics_family_conf_t *fc, ngx_str_t *values,
    ngx_str_t *le);
static ngx_int_t ngx_http_playarr_metrics_header(
    ngx_http_playarr_metrics_writer_t *w, ngx_str_t *name, ngx_str_t *help,
    const char *type);
static ngx_int_t ngx_http_playarr_metrics_family_text(
    ngx_http_playarr_metrics_writer_t *w,
    ngx_http_playarr_metrics_family_conf_t *fc);
static ngx_int_t ngx_http_playarr_metrics_self_text(
    ngx_http_playarr_metrics_writer_t *w,
    ngx_http_playarr_metrics_main_conf_t *pmcf);
static ngx_int_t ngx_http_playarr_metrics_family_json(
    ngx_http_playarr_metrics_writer_t *w,
    ngx_http_playarr_metrics_family_conf_t *fc);
static u_char *ngx_http_playarr_metrics_json_value(u_char *p,
    ngx_http_playarr_metrics_family_conf_t *fc, ngx_str_t *values,
    ngx_str_t *le, const char *suffix, double v);


const char  *ngx_http_playarr_metrics_types[] = {
    "counter", "gauge", "histogram"
};

const char  *ngx_http_playarr_metrics_sources[] = {
    "push", "header"
};

static const char  *ngx_http_playarr_metrics_reasons[] = {
    "malformed", "invalid", "too_large"
};


static u_char *
ngx_http_playarr_metrics_reserve(ngx_http_playarr_metrics_writer_t *w,
    size_t n)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    b = w->buf;

    if (b && (size_t) (b->end - b->last) >= n) {
        return b->last;
    }

    b = ngx_create_temp_buf(w->request->pool,
                            ngx_max(n, NGX_HTTP_PLAYARR_METRICS_CHUNK));
    if (b == NULL) {
        return NULL;
    }

    cl = ngx_alloc_chain_link(w->request->pool);
    if (cl == NULL) {
        return NULL;
    }

    cl->buf = b;
    cl->next = NULL;

    *w->last = cl;
    w->last = &cl->next;
    w->buf = b;

    return b->last;
}


#define ngx_http_playarr_metrics_commit(w, p)                                 \
    (w)->len += (p) - (w)->buf->last;                                         \
    (w)->buf->last = (p)


static ngx_chain_t *
ngx_http_playarr_metrics_finish(ngx_http_playarr_metrics_writer_t *w,
    off_t *len)
{
    if (w->buf == NULL && ngx_http_playarr_metrics_reserve(w, 1) == NULL) {
        return NULL;
    }

    w->buf->last_buf = (w->request == w->request->main) ? 1 : 0;
    w->buf->last_in_chain = 1;

    *len = w->len;

    return w->out;
}


/*
 * Integers (every count, most values) are printed as integers; other
 * values with the fewest digits that read back as the same double.
 */

static u_char *
ngx_http_playarr_metrics_number(u_char *p, double v)
{
    int      n, digits;
    u_char   buf[NGX_HTTP_PLAYARR_METRICS_NUMBER_MAX];

    if (isnan(v)) {
        return ngx_cpymem(p, "NaN", 3);
    }

    if (isinf(v)) {
        return ngx_cpymem(p, v > 0 ? "+Inf" : "-Inf", 4);
    }

    if (v == (double) (int64_t) v && v < 9007199254740992.0
        && v > -9007199254740992.0)
    {
        return ngx_sprintf(p, "%L", (int64_t) v);
    }

    /* the shortest of 15, 16 or 17 digits, as JavaScript and Go print */

    for (digits = 15; digits < 17; digits++) {
        n = snprintf((char *) buf, sizeof(buf), "%.*g", digits, v);

        if (strtod((char *) buf, NULL) == v) {
            return ngx_cpymem(p, buf, n);
        }
    }

    n = snprintf((char *) buf, sizeof(buf), "%.17g", v);

    return ngx_cpymem(p, buf, n);
}


static u_char *
ngx_http_playarr_metrics_escape_help(u_char *p, ngx_str_t *s)
{
    u_char  *c, *end;

    end = s->data + s->len;

    for (c = s->data; c < end; c++) {
        switch (*c) {
        case '\\':
            *p++ = '\\'; *p++ = '\\';
            break;
        case '\n':
            *p++ = '\\'; *p++ = 'n';
            break;
        default:
            *p++ = *c;
        }
    }

    return p;
}


static u_char *
ngx_http_playarr_metrics_escape_label(u_char *p, u_char *s, size_t len)
{
    u_char  *end;

    for (end = s + len; s < end; s++) {
        switch (*s) {
        case '\\':
            *p++ = '\\'; *p++ = '\\';
            break;
        case '"':
            *p++ = '\\'; *p++ = '"';
            break;
        case '\n':
            *p++ = '\\'; *p++ = 'n';
            break;
        default:
            *p++ = *s;
        }
    }

    return p;
}


static u_char *
ngx_http_playarr_metrics_escape_json(u_char *p, u_char *s, size_t len)
{
    u_char         *end;
    static u_char   hex[] = "0123456789abcdef";

    for (end = s + len; s < end; s++) {

        if (*s == '"' || *s == '\\') {
            *p++ = '\\';
            *p++ = *s;

        } else if (*s < 0x20) {
            p = ngx_cpymem(p, "\\u00", 4);
            *p++ = hex[*s >> 4];
            *p++ = hex[*s & 0xf];

        } else {
            *p++ = *s;
        }
    }

    return p;
}


static ngx_uint_t
ngx_http_playarr_metrics_split(ngx_http_playarr_metrics_series_t *s,
    ngx_str_t *values)
{
    u_char      *p, *start, *end;
    ngx_uint_t   n;

    start = ngx_http_playarr_metrics_series_key(s);
    end = start + s->len;
    n = 0;

    if (s->family->nlabels == 0) {
        return 0;
    }

    for (p = start; /* void */ ; p++) {
        if (p == end || *p == NGX_HTTP_PLAYARR_METRICS_SEP) {
            values[n].data = start;
            values[n].len = p - start;
            n++;

            if (p == end || n == NGX_HTTP_PLAYARR_METRICS_MAX_LABELS) {
                break;
            }

            start = p + 1;
        }
    }

    return n;
}


static u_char *
ngx_http_playarr_metrics_labels(u_char *p,
    ngx_http_playarr_metrics_family_conf_t *fc, ngx_str_t *values,
    ngx_str_t *le)
{
    ngx_uint_t  i;

    if (fc->nlabels == 0 && le == NULL) {
        return p;
    }

    *p++ = '{';

    for (i = 0; i < fc->nlabels; i++) {
        if (i) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, fc->labels[i].data, fc->labels[i].len);
        *p++ = '=';
        *p++ = '"';
        p = ngx_http_playarr_metrics_escape_label(p, values[i].data,
                                                  values[i].len);
        *p++ = '"';
    }

    if (le) {
        if (fc->nlabels) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, "le=\"", 4);
        p = ngx_cpymem(p, le->data, le->len);
        *p++ = '"';
    }

    *p++ = '}';

    return p;
}


static ngx_int_t
ngx_http_playarr_metrics_header(ngx_http_playarr_metrics_writer_t *w,
    ngx_str_t *name, ngx_str_t *help, const char *type)
{
    u_char  *p;

    p = ngx_http_playarr_metrics_reserve(w, 2 * name->len + 2 * help->len
                                            + 32);
    if (p == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(p, "# HELP ", 7);
    p = ngx_cpymem(p, name->data, name->len);
    *p++ = ' ';
    p = ngx_http_playarr_metrics_escape_help(p, help);
    p = ngx_cpymem(p, "\n# TYPE ", 8);
    p = ngx_cpymem(p, name->data, name->len);
    *p++ = ' ';
    p = ngx_cpymem(p, type, ngx_strlen(type));
    *p++ = '\n';

    ngx_http_playarr_metrics_commit(w, p);

    return NGX_OK;
}


static ngx_int_t
ngx_http_playarr_metrics_family_text(ngx_http_playarr_metrics_writer_t *w,
    ngx_http_playarr_metrics_family_conf_t *fc)
{
    u_char                             *p;
    ngx_str_t                          *le, *values;
    ngx_uint_t                          i;
    ngx_atomic_uint_t                   count;
    ngx_http_playarr_metrics_layout_t  *layout;
    ngx_http_playarr_metrics_series_t  *s;

    le = w->le;
    values = w->values;

    if (ngx_http_playarr_metrics_header(w, &fc->name, &fc->help,
                                ngx_http_playarr_metrics_types[fc->type])
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    layout = NULL;

    for (s = fc->shared->head; s; s = s->sibling) {

        if (s->hidden) {
            continue;
        }

        ngx_http_playarr_metrics_split(s, values);

        if (fc->type != NGX_HTTP_PLAYARR_METRICS_HISTOGRAM) {
            p = ngx_http_playarr_metrics_reserve(w,
                                           NGX_HTTP_PLAYARR_METRICS_LINE_MAX);
            if (p == NULL) {
                return NGX_ERROR;
            }

            p = ngx_cpymem(p, fc->name.data, fc->name.len);
            p = ngx_http_playarr_metrics_labels(p, fc, values, NULL);
            *p++ = ' ';
            p = ngx_http_playarr_metrics_number(p,
                                ngx_http_playarr_metrics_double(s->values[0]));
            *p++ = '\n';

            ngx_http_playarr_metrics_commit(w, p);
            continue;
        }

        /* the bounds are printed once per layout */

        if (s->layout != layout) {
            layout = s->layout;
            p = w->lebuf;

            for (i = 0; i < layout->n; i++) {
                le[i].data = p;
                p = ngx_http_playarr_metrics_number(p, layout->le[i]);
                le[i].len = p - le[i].data;
            }

            ngx_str_set(&le[i], "+Inf");
        }

        count = 0;

        for (i = 0; i <= layout->n; i++) {
            p = ngx_http_playarr_metrics_reserve(w,
                                           NGX_HTTP_PLAYARR_METRICS_LINE_MAX);
            if (p == NULL) {
                return NGX_ERROR;
            }

            count += s->values[1 + i];

            p = ngx_cpymem(p, fc->name.data, fc->name.len);
            p = ngx_cpymem(p, "_bucket", 7);
            p = ngx_http_playarr_metrics_labels(p, fc, values, &le[i]);
            p = ngx_sprintf(p, " %uA\n", count);

            ngx_http_playarr_metrics_commit(w, p);
        }

        p = ngx_http_playarr_metrics_reserve(w,
                                         2 * NGX_HTTP_PLAYARR_METRICS_LINE_MAX);
        if (p == NULL) {
            return NGX_ERROR;
        }

        p = ngx_cpymem(p, fc->name.data, fc->name.len);
        p = ngx_cpymem(p, "_sum", 4);
        p = ngx_http_playarr_metrics_labels(p, fc, values, NULL);
        *p++ = ' ';
        p = ngx_http_playarr_metrics_number(p,
                                ngx_http_playarr_metrics_double(s->values[0]));
        *p++ = '\n';

        p = ngx_cpymem(p, fc->name.data, fc->name.len);
        p = ngx_cpymem(p, "_count", 6);
        p = ngx_http_playarr_metrics_labels(p, fc, values, NULL);
        p = ngx_sprintf(p, " %uA\n", count);

        ngx_http_playarr_metrics_commit(w, p);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_playarr_metrics_self_text(ngx_http_playarr_metrics_writer_t *w,
    ngx_http_playarr_metrics_main_conf_t *pmcf)
{
    u_char                                  *p;
    size_t                                   size;
    ngx_str_t                                name, help;
    ngx_uint_t                               i, j;
    ngx_http_playarr_metrics_store_t        *store;
    ngx_http_playarr_metrics_family_conf_t  *fc;

    store = pmcf->store;
    fc = store->families.elts;

    ngx_str_set(&name, "playarr_metrics_build_info");
    ngx_str_set(&help, "Version of ngx_http_playarr_metrics_module and "
                       "of nginx");

    if (ngx_http_playarr_metrics_header(w, &name, &help, "gauge") != NGX_OK) {
        return NGX_ERROR;
    }

    p = ngx_http_playarr_metrics_reserve(w, 128);
    if (p == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(p, "playarr_metrics_build_info{version=\""
                      NGX_HTTP_PLAYARR_METRICS_VERSION "\",nginx_version=\""
                      NGINX_VERSION "\"} 1\n",
                   sizeof("playarr_metrics_build_info{version=\""
                          NGX_HTTP_PLAYARR_METRICS_VERSION
                          "\",nginx_version=\"" NGINX_VERSION "\"} 1\n") - 1);

    ngx_http_playarr_metrics_commit(w, p);

    ngx_str_set(&name, "playarr_metrics_zone_size_bytes");
    ngx_str_set(&help, "Size of the shared memory zone");

    size = store->shpool->end - store->shpool->start;

    if (ngx_http_playarr_metrics_header(w, &name, &help, "gauge") != NGX_OK) {
        return NGX_ERROR;
    }

    p = ngx_http_playarr_metrics_reserve(w, 256);
    if (p == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(p, "playarr_metrics_zone_size_bytes{zone=\"%V\"} %uz\n",
                    &store->name, size);
    ngx_http_playarr_metrics_commit(w, p);

    ngx_str_set(&name, "playarr_metrics_zone_used_bytes");
    ngx_str_set(&help, "Bytes of the shared memory zone in use");

    if (ngx_http_playarr_metrics_header(w, &name, &help, "gauge") != NGX_OK) {
        return NGX_ERROR;
    }

    p = ngx_http_playarr_metrics_reserve(w, 256);
    if (p == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(p, "playarr_metrics_zone_used_bytes{zone=\"%V\"} %uz\n",
                    &store->name, ngx_http_playarr_metrics_store_used(store));
    ngx_http_playarr_metrics_commit(w, p);

    ngx_str_set(&name, "playarr_metrics_zone_free_bytes");
    ngx_str_set(&help, "Bytes of the shared memory zone still free");

    if (ngx_http_playarr_metrics_header(w, &name, &help, "gauge") != NGX_OK) {
        return NGX_ERROR;
    }

    p = ngx_http_playarr_metrics_reserve(w, 256);
    if (p == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(p, "playarr_metrics_zone_free_bytes{zone=\"%V\"} %uz\n",
                    &store->name, ngx_http_playarr_metrics_store_free(store));
    ngx_http_playarr_metrics_commit(w, p);

    ngx_str_set(&name, "playarr_metrics_series");
    ngx_str_set(&help, "Label sets held per metric family");

    if (ngx_http_playarr_metrics_header(w, &name, &help, "gauge") != NGX_OK) {
        return NGX_ERROR;
    }

    for (i = 0; i < store->families.nelts; i++) {
        p = ngx_http_playarr_metrics_reserve(w, 256 + fc[i].name.len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        p = ngx_sprintf(p, "playarr_metrics_series{family=\"%V\"} %uA\n",
                        &fc[i].name, fc[i].shared->nseries);
        ngx_http_playarr_metrics_commit(w, p);
    }

    ngx_str_set(&name, "playarr_metrics_series_refused_total");
    ngx_str_set(&help, "New label sets folded into the overflow series "
                       "because of playarr_metrics_max_series or a full zone");

    if (ngx_http_playarr_metrics_header(w, &name, &help, "counter") != NGX_OK) {
        return NGX_ERROR;
    }

    for (i = 0; i < store->families.nelts; i++) {
        p = ngx_http_playarr_metrics_reserve(w, 256 + fc[i].name.len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        p = ngx_sprintf(p, "playarr_metrics_series_refused_total"
                           "{family=\"%V\"} %uA\n",
                        &fc[i].name, fc[i].shared->refused);
        ngx_http_playarr_metrics_commit(w, p);
    }

    ngx_str_set(&name, "playarr_metrics_updates_rejected_total");
    ngx_str_set(&help, "Metric updates refused, by source and reason");

    if (ngx_http_playarr_metrics_header(w, &name, &help, "counter") != NGX_OK) {
        return NGX_ERROR;
    }

    for (i = 0; i < NGX_HTTP_PLAYARR_METRICS_NSOURCES; i++) {
        for (j = 0; j < NGX_HTTP_PLAYARR_METRICS_NREASONS; j++) {
            p = ngx_http_playarr_metrics_reserve(w, 256);
            if (p == NULL) {
                return NGX_ERROR;
            }

            p = ngx_sprintf(p, "playarr_metrics_updates_rejected_total"
                               "{source=\"%s\",reason=\"%s\"} %uA\n",
                            ngx_http_playarr_metrics_sources[i],
                            ngx_http_playarr_metrics_reasons[j],
                            store->sh->rejected.count[i][j]);
            ngx_http_playarr_metrics_commit(w, p);
        }
    }

    return NGX_OK;
}


ngx_chain_t *
ngx_http_playarr_metrics_prometheus(ngx_http_request_t *r,
    ngx_http_playarr_metrics_main_conf_t *pmcf, off_t *len)
{
    ngx_uint_t                               i;
    ngx_http_playarr_metrics_writer_t        w;
    ngx_http_playarr_metrics_family_conf_t  *fc;

    ngx_memzero(&w, sizeof(ngx_http_playarr_metrics_writer_t));
    w.request = r;
    w.last = &w.out;

    fc = pmcf->store->families.elts;

    for (i = 0; i < pmcf->store->families.nelts; i++) {
        if (ngx_http_playarr_metrics_family_text(&w, &fc[i]) != NGX_OK) {
            return NULL;
        }
    }

    if (ngx_http_playarr_metrics_self_text(&w, pmcf) != NGX_OK) {
        return NULL;
    }

    return ngx_http_playarr_metrics_finish(&w, len);
}


/*
 * prom-client's register.getMetricsAsJSON(): an array of families, each
 * {"name", "help", "type", "values": [{"value", "labels"}...],
 * "aggregator": "sum"}; a histogram's values are its buckets (with an
 * "le" label, a number, or "+Inf"), then its sum and count, each with
 * "metricName".
 */

static u_char *
ngx_http_playarr_metrics_json_value(u_char *p,
    ngx_http_playarr_metrics_family_conf_t *fc, ngx_str_t *values,
    ngx_str_t *le, const char *suffix, double v)
{
    ngx_uint_t  i;

    p = ngx_cpymem(p, "{\"value\":", 9);

    if (isfinite(v)) {
        p = ngx_http_playarr_metrics_number(p, v);

    } else {
        p = ngx_cpymem(p, "null", 4);
    }

    p = ngx_cpymem(p, ",\"labels\":{", 11);

    for (i = 0; i < fc->nlabels; i++) {
        if (i) {
            *p++ = ',';
        }

        *p++ = '"';
        p = ngx_cpymem(p, fc->labels[i].data, fc->labels[i].len);
        p = ngx_cpymem(p, "\":\"", 3);
        p = ngx_http_playarr_metrics_escape_json(p, values[i].data,
                                                 values[i].len);
        *p++ = '"';
    }

    if (le) {
        if (fc->nlabels) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, "\"le\":", 5);

        if (le->data[0] == '+') {
            p = ngx_cpymem(p, "\"+Inf\"", 6);

        } else {
            p = ngx_cpymem(p, le->data, le->len);
        }
    }

    *p++ = '}';

    if (suffix) {
        p = ngx_cpymem(p, ",\"metricName\":\"", 15);
        p = ngx_cpymem(p, fc->name.data, fc->name.len);
        p = ngx_cpymem(p, suffix, ngx_strlen(suffix));
        *p++ = '"';
    }

    *p++ = '}';

    return p;
}


static ngx_int_t
ngx_http_playarr_metrics_family_json(ngx_http_playarr_metrics_writer_t *w,
    ngx_http_playarr_metrics_family_conf_t *fc)
{
    u_char                             *p;
    ngx_str_t                           le, *values;
    ngx_uint_t                          i, first;
    ngx_atomic_uint_t                   count;
    ngx_http_playarr_metrics_series_t  *s;

    values = w->values;

    p = ngx_http_playarr_metrics_reserve(w, 2 * fc->name.len
                                            + 6 * fc->help.len + 64);
    if (p == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(p, "{\"name\":\"", 9);
    p = ngx_cpymem(p, fc->name.data, fc->name.len);
    p = ngx_cpymem(p, "\",\"help\":\"", 10);
    p = ngx_http_playarr_metrics_escape_json(p, fc->help.data, fc->help.len);
    p = ngx_cpymem(p, "\",\"type\":\"", 10);
    p = ngx_cpymem(p, ngx_http_playarr_metrics_types[fc->type],
                   ngx_strlen(ngx_http_playarr_metrics_types[fc->type]));
    p = ngx_cpymem(p, "\",\"values\":[", 12);

    ngx_http_playarr_metrics_commit(w, p);

    first = 1;

    for (s = fc->shared->head; s; s = s->sibling) {

        if (s->hidden) {
            continue;
        }

        ngx_http_playarr_metrics_split(s, values);

        if (fc->type != NGX_HTTP_PLAYARR_METRICS_HISTOGRAM) {
            p = ngx_http_playarr_metrics_reserve(w,
                                           NGX_HTTP_PLAYARR_METRICS_LINE_MAX);
            if (p == NULL) {
                return NGX_ERROR;
            }

            if (!first) {
                *p++ = ',';
            }

            first = 0;

            p = ngx_http_playarr_metrics_json_value(p, fc, values, NULL, NULL,
                                ngx_http_playarr_metrics_double(s->values[0]));

            ngx_http_playarr_metrics_commit(w, p);
            continue;
        }

        count = 0;

        for (i = 0; i <= s->layout->n; i++) {
            p = ngx_http_playarr_metrics_reserve(w,
                                           NGX_HTTP_PLAYARR_METRICS_LINE_MAX);
            if (p == NULL) {
                return NGX_ERROR;
            }

            if (!first) {
                *p++ = ',';
            }

            first = 0;

            if (i < s->layout->n) {
                le.data = w->lebuf;
                le.len = ngx_http_playarr_metrics_number(w->lebuf,
                                                         s->layout->le[i])
                         - w->lebuf;
            } else {
                ngx_str_set(&le, "+Inf");
            }

            count += s->values[1 + i];

            p = ngx_http_playarr_metrics_json_value(p, fc, values, &le,
                                                    "_bucket", count);

            ngx_http_playarr_metrics_commit(w, p);
        }

        p = ngx_http_playarr_metrics_reserve(w,
                                         2 * NGX_HTTP_PLAYARR_METRICS_LINE_MAX);
        if (p == NULL) {
            return NGX_ERROR;
        }

        *p++ = ',';
        p = ngx_http_playarr_metrics_json_value(p, fc, values, NULL, "_sum",
                                ngx_http_playarr_metrics_double(s->values[0]));
        *p++ = ',';
        p = ngx_http_playarr_metrics_json_value(p, fc, values, NULL,
                                                "_count", count);

        ngx_http_playarr_metrics_commit(w, p);
    }

    p = ngx_http_playarr_metrics_reserve(w, 32);
    if (p == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(p, "],\"aggregator\":\"sum\"}", 21);

    ngx_http_playarr_metrics_commit(w, p);

    return NGX_OK;
}


ngx_chain_t *
ngx_http_playarr_metrics_json(ngx_http_request_t *r,
    ngx_http_playarr_metrics_main_conf_t *pmcf, off_t *len)
{
    u_char                                  *p;
    ngx_uint_t                               i;
    ngx_http_playarr_metrics_writer_t        w;
    ngx_http_playarr_metrics_family_conf_t  *fc;

    ngx_memzero(&w, sizeof(ngx_http_playarr_metrics_writer_t));
    w.request = r;
    w.last = &w.out;

    fc = pmcf->store->families.elts;

    for (i = 0; i < pmcf->store->families.nelts; i++) {
        p = ngx_http_playarr_metrics_reserve(&w, 1);
        if (p == NULL) {
            return NULL;
        }

        *p++ = i ? ',' : '[';
        ngx_http_playarr_metrics_commit(&w, p);

        if (ngx_http_playarr_metrics_family_json(&w, &fc[i]) != NGX_OK) {
            return NULL;
        }
    }

    p = ngx_http_playarr_metrics_reserve(&w, 2);
    if (p == NULL) {
        return NULL;
    }

    if (pmcf->store->families.nelts == 0) {
        *p++ = '[';
    }

    *p++ = ']';
    ngx_http_playarr_metrics_commit(&w, p);

    return ngx_http_playarr_metrics_finish(&w, len);
}
