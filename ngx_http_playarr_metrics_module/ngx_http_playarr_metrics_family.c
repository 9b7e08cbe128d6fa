
/*
 * Copyright (C) Playarr metrics module authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ngx_http_playarr_metrics_module.h>
#include <ngx_http_playarr_metrics_file.h>

#include <math.h>
#include <jansson.h>


/*
 * The families of a configuration: the built-in HTTP ones, the entries
 * of the schema file (its loader is here), and the bucket bounds of
 * their histograms.  All of it runs at configuration time.
 */


/* a schema file larger than this is not one (Playarr's is 7 kB) */
#define NGX_HTTP_PLAYARR_METRICS_SCHEMA_MAX  (4 * 1024 * 1024)


typedef struct {
    const char                    *name;
    const char                    *help;
    ngx_uint_t                     type;
    const char                    *labels[3];
} ngx_http_playarr_metrics_builtin_t;


static ngx_http_playarr_metrics_family_conf_t *
    ngx_http_playarr_metrics_schema_family(
    ngx_http_playarr_metrics_main_conf_t *pmcf, const char *name);
static ngx_int_t ngx_http_playarr_metrics_schema_entry(ngx_conf_t *cf,
    ngx_http_playarr_metrics_family_conf_t *fc, const char *key,
    json_t *entry, ngx_str_t *path);
static ngx_int_t ngx_http_playarr_metrics_copy_string(ngx_pool_t *pool,
    ngx_str_t *dst, const char *src);
static ngx_array_t *ngx_http_playarr_metrics_buckets_copy(ngx_pool_t *pool,
    double *b, ngx_uint_t n);


static ngx_http_playarr_metrics_builtin_t  ngx_http_playarr_metrics_builtins[]
    = {

    { "playarr_http_requests_total",
      "Total number of HTTP requests per endpoint",
      NGX_HTTP_PLAYARR_METRICS_TYPE_COUNTER,
      { "endpoint", "status_code", "username" } },

    { "playarr_http_request_duration_seconds",
      "HTTP request duration in seconds",
      NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM,
      { "endpoint", "username", NULL } },

    { "playarr_authentication_failures_total",
      "Total number of authentication failures",
      NGX_HTTP_PLAYARR_METRICS_TYPE_COUNTER,
      { "endpoint", "username", NULL } },

    { "playarr_managed_errors_total",
      "Total number of managed errors (AppError instances) by error type",
      NGX_HTTP_PLAYARR_METRICS_TYPE_COUNTER,
      { "endpoint", "error_type", "username" } }
};


static double  ngx_http_playarr_metrics_default_buckets[] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30
};

/* prom-client's default buckets, for schema histograms without any */
static double  ngx_http_playarr_metrics_client_buckets[] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10
};


/* the buckets of playarr_http_request_duration_seconds by default */

ngx_array_t *
ngx_http_playarr_metrics_buckets_default(ngx_conf_t *cf)
{
    return ngx_http_playarr_metrics_buckets_copy(cf->pool,
                             ngx_http_playarr_metrics_default_buckets,
                             sizeof(ngx_http_playarr_metrics_default_buckets)
                             / sizeof(double));
}


/* an array of n bounds, a copy of b */

static ngx_array_t *
ngx_http_playarr_metrics_buckets_copy(ngx_pool_t *pool, double *b,
    ngx_uint_t n)
{
    double       *p;
    ngx_array_t  *a;

    a = ngx_array_create(pool, n, sizeof(double));
    if (a == NULL) {
        return NULL;
    }

    p = ngx_array_push_n(a, n);
    if (p == NULL) {
        return NULL;
    }

    ngx_memcpy(p, b, n * sizeof(double));

    return a;
}


/*
 * The families: the built-in HTTP ones first, taking help and buckets
 * from a schema entry of the same name, then the other schema entries.
 */

ngx_int_t
ngx_http_playarr_metrics_add_builtins(ngx_conf_t *cf,
    ngx_http_playarr_metrics_main_conf_t *pmcf)
{
    ngx_int_t                                n;
    ngx_uint_t                               i, j;
    ngx_http_playarr_metrics_builtin_t      *bi;
    ngx_http_playarr_metrics_family_conf_t  *fc, *sc;

    for (i = 0; i < NGX_HTTP_PLAYARR_METRICS_FAMILY_HTTP_COUNT; i++) {
        bi = &ngx_http_playarr_metrics_builtins[i];

        fc = ngx_array_push(&pmcf->store->families);
        if (fc == NULL) {
            return NGX_ERROR;
        }

        sc = ngx_http_playarr_metrics_schema_family(pmcf, bi->name);

        if (sc) {
            *fc = *sc;
            sc->name.len = 0;

            if (fc->type == NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM
                && fc->buckets == NULL)
            {
                fc->buckets = pmcf->buckets;
            }

            continue;
        }

        ngx_memzero(fc, sizeof(ngx_http_playarr_metrics_family_conf_t));

        fc->name.data = (u_char *) bi->name;
        fc->name.len = ngx_strlen(bi->name);
        fc->help.data = (u_char *) bi->help;
        fc->help.len = ngx_strlen(bi->help);
        fc->type = bi->type;

        for (j = 0; j < 3 && bi->labels[j]; j++) { /* void */ }

        fc->nlabels = j;
        fc->labels = ngx_palloc(cf->pool, j * sizeof(ngx_str_t));
        if (fc->labels == NULL) {
            return NGX_ERROR;
        }

        for (j = 0; j < fc->nlabels; j++) {
            fc->labels[j].data = (u_char *) bi->labels[j];
            fc->labels[j].len = ngx_strlen(bi->labels[j]);
        }

        if (fc->type == NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM) {
            fc->buckets = pmcf->buckets;
        }
    }

    fc = pmcf->store->families.elts;
    fc[NGX_HTTP_PLAYARR_METRICS_FAMILY_DURATION].bounds_ids = pmcf->bounds_ids;

    sc = pmcf->schema.elts;

    for (i = 0; i < pmcf->schema.nelts; i++) {

        if (sc[i].name.len == 0) {
            continue;
        }

        fc = ngx_array_push(&pmcf->store->families);
        if (fc == NULL) {
            return NGX_ERROR;
        }

        *fc = sc[i];

        if (fc->type == NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM
            && fc->buckets == NULL)
        {
            fc->buckets = ngx_http_playarr_metrics_buckets_copy(cf->pool,
                              ngx_http_playarr_metrics_client_buckets,
                              sizeof(ngx_http_playarr_metrics_client_buckets)
                              / sizeof(double));
            if (fc->buckets == NULL) {
                return NGX_ERROR;
            }
        }
    }

    fc = pmcf->store->families.elts;

    for (i = 0; i < pmcf->store->families.nelts; i++) {
        if (fc[i].type != NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM) {
            continue;
        }

        n = ngx_http_playarr_metrics_store_bounds(pmcf->store, cf->pool,
                                                  fc[i].buckets);
        if (n == NGX_ERROR) {
            return NGX_ERROR;
        }

        fc[i].bounds_id = n;
    }

    return NGX_OK;
}


static ngx_http_playarr_metrics_family_conf_t *
ngx_http_playarr_metrics_schema_family(
    ngx_http_playarr_metrics_main_conf_t *pmcf, const char *name)
{
    ngx_uint_t                               i;
    ngx_http_playarr_metrics_family_conf_t  *sc;

    sc = pmcf->schema.elts;

    for (i = 0; i < pmcf->schema.nelts; i++) {
        if (sc[i].name.len && ngx_strcmp(sc[i].name.data, name) == 0) {
            return &sc[i];
        }
    }

    return NULL;
}


/*
 * The schema file of playarr_metrics_schema, read into pmcf->schema; an
 * entry named like a built-in family must define it the same way.
 */

char *
ngx_http_playarr_metrics_schema_read(ngx_conf_t *cf,
    ngx_http_playarr_metrics_main_conf_t *pmcf, ngx_str_t *path)
{
    ngx_uint_t                               i, j;
    ngx_http_playarr_metrics_builtin_t      *b;
    ngx_http_playarr_metrics_family_conf_t  *sc;

    if (ngx_http_playarr_metrics_schema_load(cf, &pmcf->schema, path)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < NGX_HTTP_PLAYARR_METRICS_FAMILY_HTTP_COUNT; i++) {
        b = &ngx_http_playarr_metrics_builtins[i];

        sc = ngx_http_playarr_metrics_schema_family(pmcf, b->name);
        if (sc == NULL) {
            continue;
        }

        for (j = 0; j < 3 && b->labels[j]; j++) {
            if (j >= sc->nlabels
                || ngx_strcmp(sc->labels[j].data, b->labels[j]) != 0)
            {
                break;
            }
        }

        if (sc->type != b->type
            || j != sc->nlabels
            || (j < 3 && b->labels[j]))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid schema \"%V\": metric \"%V\" must "
                               "be a %s with the labels of the built-in "
                               "\"%s\"", path, &sc->key,
                               b->type == NGX_HTTP_PLAYARR_METRICS_TYPE_COUNTER
                               ? "counter" : "histogram", b->name);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_playarr_metrics_bounds_used(ngx_conf_t *cf,
    ngx_http_playarr_metrics_main_conf_t *pmcf, ngx_uint_t bounds_id)
{
    ngx_uint_t  i, *n;

    if (pmcf->bounds_ids == NULL) {
        pmcf->bounds_ids = ngx_array_create(cf->pool, 4, sizeof(ngx_uint_t));
        if (pmcf->bounds_ids == NULL) {
            return NGX_ERROR;
        }
    }

    n = pmcf->bounds_ids->elts;

    for (i = 0; i < pmcf->bounds_ids->nelts; i++) {
        if (n[i] == bounds_id) {
            return NGX_OK;
        }
    }

    n = ngx_array_push(pmcf->bounds_ids);
    if (n == NULL) {
        return NGX_ERROR;
    }

    *n = bounds_id;

    return NGX_OK;
}


ngx_uint_t
ngx_http_playarr_metrics_valid_name(u_char *p, size_t len, ngx_uint_t label)
{
    size_t  i;

    if (len == 0 || len > NGX_HTTP_PLAYARR_METRICS_NAME_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if ((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z')
            || p[i] == '_' || (!label && p[i] == ':')
            || (i > 0 && p[i] >= '0' && p[i] <= '9'))
        {
            continue;
        }

        return 0;
    }

    return 1;
}


/*
 * playarr_metrics_schema: Playarr's own metrics.json,
 * {"metrics": {KEY: {"type", "name", "help", "labelNames", "buckets"}}}.
 */

char *
ngx_http_playarr_metrics_schema_load(ngx_conf_t *cf, ngx_array_t *families,
    ngx_str_t *path)
{
    json_t                                  *root, *metrics, *entry;
    ngx_str_t                                data;
    ngx_uint_t                               i;
    const char                              *key;
    json_error_t                             jerr;
    ngx_http_playarr_metrics_family_conf_t  *fc, *all;

    switch (ngx_http_playarr_metrics_file_read(cf, cf->log, NGX_LOG_EMERG,
                                     "invalid schema", path->data,
                                     NGX_HTTP_PLAYARR_METRICS_SCHEMA_MAX,
                                     &data, NULL))
    {
    case NGX_OK:
        break;

    case NGX_DECLINED:
        ngx_conf_log_error(NGX_LOG_EMERG, cf, NGX_ENOENT,
                           "invalid schema \"%s\": " ngx_open_file_n
                           " failed", path->data);
        return NGX_CONF_ERROR;

    default:
        return NGX_CONF_ERROR;
    }

    root = json_loadb((char *) data.data, data.len, JSON_REJECT_DUPLICATES,
                      &jerr);

    ngx_free(data.data);

    if (root == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid schema \"%V\": %s at line %d column %d",
                           path, jerr.text, jerr.line, jerr.column);
        return NGX_CONF_ERROR;
    }

    metrics = json_object_get(root, "metrics");

    if (!json_is_object(root) || !json_is_object(metrics)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid schema \"%V\": no \"metrics\" object",
                           path);
        goto failed;
    }

    json_object_foreach(metrics, key, entry) {

        fc = ngx_array_push(families);
        if (fc == NULL) {
            goto failed;
        }

        ngx_memzero(fc, sizeof(ngx_http_playarr_metrics_family_conf_t));

        if (ngx_http_playarr_metrics_schema_entry(cf, fc, key, entry, path)
            != NGX_OK)
        {
            goto failed;
        }

        all = families->elts;

        for (i = 0; i + 1 < families->nelts; i++) {
            if (all[i].name.len == fc->name.len
                && ngx_strncmp(all[i].name.data, fc->name.data,
                               fc->name.len)
                   == 0)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid schema \"%V\": metric \"%s\" "
                                   "duplicates the name \"%V\" of \"%V\"",
                                   path, key, &fc->name, &all[i].key);
                goto failed;
            }
        }
    }

    json_decref(root);

    return NGX_CONF_OK;

failed:

    json_decref(root);

    return NGX_CONF_ERROR;
}


static ngx_int_t
ngx_http_playarr_metrics_schema_entry(ngx_conf_t *cf,
    ngx_http_playarr_metrics_family_conf_t *fc, const char *key,
    json_t *entry, ngx_str_t *path)
{
    double       *b, prev;
    size_t        i, j, n;
    json_t       *type, *name, *help, *labels, *buckets, *v;
    ngx_str_t    *l;
    const char   *t, *why;

    why = NULL;

    if (ngx_http_playarr_metrics_copy_string(cf->pool, &fc->key, key)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (!json_is_object(entry)) {
        why = "is not an object";
        goto invalid;
    }

    type = json_object_get(entry, "type");
    name = json_object_get(entry, "name");
    help = json_object_get(entry, "help");
    labels = json_object_get(entry, "labelNames");
    buckets = json_object_get(entry, "buckets");

    t = json_string_value(type);

    if (t == NULL) {
        why = "has no \"type\"";
        goto invalid;
    }

    if (ngx_strcmp(t, "counter") == 0) {
        fc->type = NGX_HTTP_PLAYARR_METRICS_TYPE_COUNTER;

    } else if (ngx_strcmp(t, "gauge") == 0) {
        fc->type = NGX_HTTP_PLAYARR_METRICS_TYPE_GAUGE;

    } else if (ngx_strcmp(t, "histogram") == 0) {
        fc->type = NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM;

    } else {
        why = "has an unknown \"type\"";
        goto invalid;
    }

    if (!json_is_string(name)
        || !ngx_http_playarr_metrics_valid_name(
                                      (u_char *) json_string_value(name),
                                      json_string_length(name), 0))
    {
        why = "has no valid \"name\"";
        goto invalid;
    }

    if (ngx_http_playarr_metrics_copy_string(cf->pool, &fc->name,
                                             json_string_value(name))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (help && !json_is_string(help)) {
        why = "has a \"help\" that is not a string";
        goto invalid;
    }

    if (ngx_http_playarr_metrics_copy_string(cf->pool, &fc->help,
                                             help ? json_string_value(help)
                                                  : "")
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (labels && !json_is_array(labels)) {
        why = "has \"labelNames\" that is not an array";
        goto invalid;
    }

    n = labels ? json_array_size(labels) : 0;

    if (n > NGX_HTTP_PLAYARR_METRICS_MAX_LABELS) {
        why = "has too many \"labelNames\"";
        goto invalid;
    }

    fc->nlabels = n;
    fc->labels = ngx_pcalloc(cf->pool, (n + 1) * sizeof(ngx_str_t));
    if (fc->labels == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        v = json_array_get(labels, i);
        l = &fc->labels[i];

        if (!json_is_string(v)
            || !ngx_http_playarr_metrics_valid_name(
                                          (u_char *) json_string_value(v),
                                          json_string_length(v), 1))
        {
            why = "has an invalid label name";
            goto invalid;
        }

        if (ngx_http_playarr_metrics_copy_string(cf->pool, l,
                                                 json_string_value(v))
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (l->len >= 2 && l->data[0] == '_' && l->data[1] == '_') {
            why = "has a label name starting with \"__\", reserved";
            goto invalid;
        }

        if (fc->type == NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM
            && ngx_strcmp(l->data, "le") == 0)
        {
            why = "has the label name \"le\", reserved for histograms";
            goto invalid;
        }

        for (j = 0; j < i; j++) {
            if (ngx_strcmp(fc->labels[j].data, l->data) == 0) {
                why = "has a label name twice";
                goto invalid;
            }
        }
    }

    if (buckets && fc->type != NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM) {
        why = "has \"buckets\" but is not a histogram";
        goto invalid;
    }

    if (fc->type != NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM) {
        return NGX_OK;
    }

    if (buckets == NULL) {

        /* the defaults are given when the families are put together */

        return NGX_OK;
    }

    n = json_is_array(buckets) ? json_array_size(buckets) : 0;

    if (n == 0 || n > NGX_HTTP_PLAYARR_METRICS_MAX_BUCKETS) {
        why = "has \"buckets\" that are not an array of 1 to 32 numbers";
        goto invalid;
    }

    fc->buckets = ngx_array_create(cf->pool, n, sizeof(double));
    if (fc->buckets == NULL) {
        return NGX_ERROR;
    }

    prev = -HUGE_VAL;

    for (i = 0; i < n; i++) {
        v = json_array_get(buckets, i);

        b = ngx_array_push(fc->buckets);
        if (b == NULL) {
            return NGX_ERROR;
        }

        *b = json_number_value(v);

        if (!json_is_number(v) || !isfinite(*b)) {
            why = "has a bucket that is not a finite number";
            goto invalid;
        }

        if (*b <= prev) {
            why = "has buckets that are not in ascending order";
            goto invalid;
        }

        prev = *b;
    }

    return NGX_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid schema \"%V\": metric \"%s\" %s",
                       path, key, why);

    return NGX_ERROR;
}


static ngx_int_t
ngx_http_playarr_metrics_copy_string(ngx_pool_t *pool, ngx_str_t *dst,
    const char *src)
{
    dst->len = ngx_strlen(src);

    dst->data = ngx_pnalloc(pool, dst->len + 1);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(dst->data, src, dst->len + 1);

    return NGX_OK;
}
