
/*
 * Copyright (C) Playarr metrics module authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ngx_http_playarr_metrics_module.h>

#include <math.h>
#include <jansson.h>


/* bytes of a string of an update quoted in an error, of an error logged */
#define NGX_HTTP_PLAYARR_METRICS_QUOTE_MAX   128
#define NGX_HTTP_PLAYARR_METRICS_LOG_MAX     512


/* a series a batch touches, as the updates of the batch leave it */
typedef struct {
    ngx_http_playarr_metrics_update_t       *update;     /* the last one */
    double                                   value;
    ngx_uint_t                               folded;
} ngx_http_playarr_metrics_touched_t;


static const char  *ngx_http_playarr_metrics_ops[] = {
    "inc", "dec", "set", "observe", "reset", NULL
};


static ngx_int_t ngx_http_playarr_metrics_update(ngx_pool_t *pool,
    ngx_http_playarr_metrics_store_t *store, json_t *u,
    ngx_http_playarr_metrics_update_t *update, ngx_str_t *err);
static ngx_int_t ngx_http_playarr_metrics_updates_check(ngx_pool_t *pool,
    ngx_http_playarr_metrics_store_t *store, ngx_array_t *updates,
    ngx_str_t *err, ngx_int_t *index);
static const char *ngx_http_playarr_metrics_quote(ngx_pool_t *pool,
    const char *s);
static ngx_int_t ngx_http_playarr_metrics_error(ngx_pool_t *pool,
    ngx_str_t *err, const char *fmt, ...);


/*
 * Parses and validates a body of one update or an array of them, all
 * before any is applied.  NGX_OK: updates holds them.  NGX_DECLINED:
 * err says why, *index names the bad update (-1 if the JSON itself is
 * malformed).  NGX_ERROR: no memory.
 */

ngx_int_t
ngx_http_playarr_metrics_updates_parse(ngx_pool_t *pool,
    ngx_http_playarr_metrics_store_t *store, u_char *data, size_t len,
    ngx_array_t *updates, ngx_str_t *err, ngx_int_t *index)
{
    size_t                              i, n;
    json_t                             *root, *u;
    ngx_int_t                           rc;
    const char                         *q;
    json_error_t                        jerr;
    ngx_http_playarr_metrics_update_t  *update;

    *index = -1;

    root = json_loadb((char *) data, len, JSON_REJECT_DUPLICATES, &jerr);

    if (root == NULL) {

        /* jansson's text quotes the input */

        q = ngx_http_playarr_metrics_quote(pool, jerr.text);
        if (q == NULL) {
            return NGX_ERROR;
        }

        return ngx_http_playarr_metrics_error(pool, err,
                                  "malformed JSON: %s at line %d column %d",
                                  q, jerr.line, jerr.column);
    }

    n = json_is_array(root) ? json_array_size(root) : 1;

    if (ngx_array_init(updates, pool, n ? n : 1,
                       sizeof(ngx_http_playarr_metrics_update_t))
        != NGX_OK)
    {
        json_decref(root);
        return NGX_ERROR;
    }

    rc = NGX_OK;

    for (i = 0; i < n; i++) {
        u = json_is_array(root) ? json_array_get(root, i) : root;

        update = ngx_array_push(updates);
        if (update == NULL) {
            rc = NGX_ERROR;
            break;
        }

        rc = ngx_http_playarr_metrics_update(pool, store, u, update, err);

        if (rc != NGX_OK) {
            *index = i;
            break;
        }
    }

    json_decref(root);

    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_http_playarr_metrics_updates_check(pool, store, updates, err,
                                                  index);
}


static ngx_int_t
ngx_http_playarr_metrics_update(ngx_pool_t *pool,
    ngx_http_playarr_metrics_store_t *store, json_t *u,
    ngx_http_playarr_metrics_update_t *update, ngx_str_t *err)
{
    u_char                                  *p;
    size_t                                   len;
    json_t                                  *metric, *op, *labels, *value, *v;
    ngx_uint_t                               i;
    const char                              *name, *s, *k, *q;
    ngx_http_playarr_metrics_family_conf_t  *fc;
    u_char                                   num[NGX_INT64_LEN];

    if (!json_is_object(u)) {
        return ngx_http_playarr_metrics_error(pool, err,
                                              "an update must be an object");
    }

    json_object_foreach(u, k, v) {
        if (ngx_strcmp(k, "metric") != 0 && ngx_strcmp(k, "op") != 0
            && ngx_strcmp(k, "labels") != 0 && ngx_strcmp(k, "value") != 0)
        {
            q = ngx_http_playarr_metrics_quote(pool, k);
            if (q == NULL) {
                return NGX_ERROR;
            }

            return ngx_http_playarr_metrics_error(pool, err,
                                                  "unknown field \"%s\"", q);
        }
    }

    metric = json_object_get(u, "metric");
    op = json_object_get(u, "op");
    labels = json_object_get(u, "labels");
    value = json_object_get(u, "value");

    name = json_string_value(metric);

    if (name == NULL) {
        return ngx_http_playarr_metrics_error(pool, err,
                                  "\"metric\" must be a metric key or name");
    }

    fc = store->families.elts;

    for (i = 0; i < store->families.nelts; i++) {
        if (ngx_strcmp(fc[i].name.data, name) == 0
            || (fc[i].key.len && ngx_strcmp(fc[i].key.data, name) == 0))
        {
            break;
        }
    }

    if (i == store->families.nelts) {
        q = ngx_http_playarr_metrics_quote(pool, name);
        if (q == NULL) {
            return NGX_ERROR;
        }

        return ngx_http_playarr_metrics_error(pool, err,
                                              "unknown metric \"%s\"", q);
    }

    if (i < NGX_HTTP_PLAYARR_METRICS_FAMILY_HTTP_COUNT) {

        /* the built-in HTTP families come first: what nginx saw */

        return ngx_http_playarr_metrics_error(pool, err,
                                  "metric \"%V\" is recorded by nginx, "
                                  "not updated", &fc[i].name);
    }

    fc = &fc[i];
    update->family = fc;

    s = json_string_value(op);

    for (i = 0; s && ngx_http_playarr_metrics_ops[i]; i++) {
        if (ngx_strcmp(s, ngx_http_playarr_metrics_ops[i]) == 0) {
            break;
        }
    }

    if (s == NULL || ngx_http_playarr_metrics_ops[i] == NULL) {
        return ngx_http_playarr_metrics_error(pool, err,
                            "\"op\" must be one of inc, dec, set, observe, "
                            "reset");
    }

    update->op = i;

    switch (update->op) {

    case NGX_HTTP_PLAYARR_METRICS_OP_INC:
        if (fc->type == NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM) {
            goto wrong_type;
        }
        break;

    case NGX_HTTP_PLAYARR_METRICS_OP_DEC:
    case NGX_HTTP_PLAYARR_METRICS_OP_SET:
        if (fc->type != NGX_HTTP_PLAYARR_METRICS_TYPE_GAUGE) {
            goto wrong_type;
        }
        break;

    case NGX_HTTP_PLAYARR_METRICS_OP_OBSERVE:
        if (fc->type != NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM) {
            goto wrong_type;
        }
        break;

    default: /* NGX_HTTP_PLAYARR_METRICS_OP_RESET */

        if (labels || value) {
            return ngx_http_playarr_metrics_error(pool, err,
                            "\"reset\" takes neither \"labels\" nor \"value\"");
        }

        update->key = NULL;
        update->len = 0;
        update->value = 0;

        return NGX_OK;
    }

    /* the value */

    if (value == NULL) {

        if (update->op != NGX_HTTP_PLAYARR_METRICS_OP_INC
            && update->op != NGX_HTTP_PLAYARR_METRICS_OP_DEC)
        {
            return ngx_http_playarr_metrics_error(pool, err,
                                         "\"%s\" needs a \"value\"", s);
        }

        update->value = 1;

    } else {

        if (!json_is_number(value) || !isfinite(json_number_value(value))) {
            return ngx_http_playarr_metrics_error(pool, err,
                                       "\"value\" must be a finite number");
        }

        update->value = json_number_value(value);
    }

    if (fc->type == NGX_HTTP_PLAYARR_METRICS_TYPE_COUNTER
        && update->value < 0)
    {
        return ngx_http_playarr_metrics_error(pool, err,
                       "a counter cannot be increased by a negative value");
    }

    /* the labels: exactly the family's, in its order, into the key */

    if (labels && !json_is_object(labels)) {
        return ngx_http_playarr_metrics_error(pool, err,
                                              "\"labels\" must be an object");
    }

    if ((labels ? json_object_size(labels) : 0) != fc->nlabels) {
        json_object_foreach(labels, k, v) {
            for (i = 0; i < fc->nlabels; i++) {
                if (ngx_strcmp(fc->labels[i].data, k) == 0) {
                    break;
                }
            }

            if (i == fc->nlabels) {
                q = ngx_http_playarr_metrics_quote(pool, k);
                if (q == NULL) {
                    return NGX_ERROR;
                }

                return ngx_http_playarr_metrics_error(pool, err,
                                   "unknown label \"%s\" for \"%V\"",
                                   q, &fc->name);
            }
        }
    }

    update->key = ngx_pnalloc(pool, fc->nlabels
                                    * (NGX_HTTP_PLAYARR_METRICS_VALUE_MAX + 1));
    if (update->key == NULL) {
        return NGX_ERROR;
    }

    p = update->key;

    for (i = 0; i < fc->nlabels; i++) {
        v = labels ? json_object_get(labels, (char *) fc->labels[i].data)
                   : NULL;

        if (v == NULL) {
            return ngx_http_playarr_metrics_error(pool, err,
                                   "missing label \"%V\" for \"%V\"",
                                   &fc->labels[i], &fc->name);
        }

        if (json_is_string(v)) {
            s = json_string_value(v);
            len = json_string_length(v);

        } else if (json_is_integer(v)) {
            s = (const char *) num;
            len = ngx_sprintf(num, "%L", (int64_t) json_integer_value(v))
                  - num;

        } else {
            return ngx_http_playarr_metrics_error(pool, err,
                                   "label \"%V\" must be a string",
                                   &fc->labels[i]);
        }

        if (len > NGX_HTTP_PLAYARR_METRICS_VALUE_MAX) {
            return ngx_http_playarr_metrics_error(pool, err,
                                   "label \"%V\" is longer than %d bytes",
                                   &fc->labels[i],
                                   NGX_HTTP_PLAYARR_METRICS_VALUE_MAX);
        }

        if (ngx_strlchr((u_char *) s, (u_char *) s + len, '\0')) {
            return ngx_http_playarr_metrics_error(pool, err,
                                   "label \"%V\" holds a NUL",
                                   &fc->labels[i]);
        }

        if (i) {
            *p++ = NGX_HTTP_PLAYARR_METRICS_SEP;
        }

        p = ngx_cpymem(p, s, len);
    }

    update->len = p - update->key;

    return NGX_OK;

wrong_type:

    return ngx_http_playarr_metrics_error(pool, err,
                                          "\"%s\" does not apply to \"%V\", "
                                          "a %s", s, &fc->name,
                                          ngx_http_playarr_metrics_types
                                          [fc->type]);
}


/*
 * No update may take a value beyond the largest finite number: each is
 * tried on the value its series holds now, as the updates of the batch
 * before it leave it (slots: the series the batch touches, by a hash of
 * their keys).  Another worker may still move a value before the batch
 * applies: the store then refuses the addition (updates_apply).
 */

static ngx_int_t
ngx_http_playarr_metrics_updates_check(ngx_pool_t *pool,
    ngx_http_playarr_metrics_store_t *store, ngx_array_t *updates,
    ngx_str_t *err, ngx_int_t *index)
{
    double                                   v;
    uint32_t                                 hash;
    ngx_int_t                               *reset;
    ngx_uint_t                               i, k, n, fi, folded;
    ngx_http_playarr_metrics_touched_t      *slots, *e;
    ngx_http_playarr_metrics_update_t       *u;
    ngx_http_playarr_metrics_series_t       *s;
    ngx_http_playarr_metrics_family_t       *f;
    ngx_http_playarr_metrics_family_conf_t  *fc;

    if (updates->nelts == 0) {
        return NGX_OK;
    }

    u = updates->elts;

    for (n = 2; n < 2 * updates->nelts; n <<= 1) { /* void */ }

    slots = ngx_pcalloc(pool, n * sizeof(ngx_http_playarr_metrics_touched_t));
    if (slots == NULL) {
        return NGX_ERROR;
    }

    /* the last reset of each family in the batch */

    reset = ngx_palloc(pool, store->families.nelts * sizeof(ngx_int_t));
    if (reset == NULL) {
        return NGX_ERROR;
    }

    for (k = 0; k < store->families.nelts; k++) {
        reset[k] = -1;
    }

    fc = store->families.elts;

    for (i = 0; i < updates->nelts; i++) {
        fi = u[i].family - fc;
        f = u[i].family->shared;

        if (u[i].op == NGX_HTTP_PLAYARR_METRICS_OP_RESET) {
            reset[fi] = i;
            continue;
        }

        /* a new label set past the cap goes to the overflow series */

        s = ngx_http_playarr_metrics_series_find(store, u[i].family,
                                                 u[i].key, u[i].len);

        folded = (s == NULL && f->nseries >= store->max_series);

        if (folded) {
            s = f->overflow;
        }

        hash = folded ? 0 : ngx_http_playarr_metrics_hash(f->seed, u[i].key,
                                                          u[i].len);
        hash ^= (uint32_t) fi * 0x9e3779b9;

        for (k = hash & (n - 1); /* void */ ; k = (k + 1) & (n - 1)) {
            e = &slots[k];

            if (e->update == NULL
                || (e->update->family == u[i].family
                    && e->folded == folded
                    && (folded
                        || (e->update->len == u[i].len
                            && ngx_memcmp(e->update->key, u[i].key,
                                          u[i].len)
                               == 0))))
            {
                break;
            }
        }

        if (e->update && e->update - u > reset[fi]) {
            v = e->value;

        } else if (reset[fi] >= 0 || s == NULL) {
            v = 0;

        } else {
            v = ngx_http_playarr_metrics_double(s->values[0]);
        }

        switch (u[i].op) {

        case NGX_HTTP_PLAYARR_METRICS_OP_SET:
            v = u[i].value;
            break;

        case NGX_HTTP_PLAYARR_METRICS_OP_DEC:
            v += -u[i].value;
            break;

        default: /* inc, observe */
            v += u[i].value;
        }

        if (!isfinite(v)) {
            *index = i;

            return ngx_http_playarr_metrics_error(pool, err,
                                  "\"%s\" would overflow %s\"%V\"",
                                  ngx_http_playarr_metrics_ops[u[i].op],
                                  (u[i].op
                                   == NGX_HTTP_PLAYARR_METRICS_OP_OBSERVE)
                                  ? "the sum of " : "",
                                  &u[i].family->name);
        }

        e->update = &u[i];
        e->value = v;
        e->folded = folded;
    }

    return NGX_OK;
}


/*
 * An addition the store refuses (another worker took the value close to
 * the largest number after the check) is counted and logged as an
 * invalid update; the others apply.
 */

void
ngx_http_playarr_metrics_updates_apply(ngx_http_playarr_metrics_store_t *store,
    ngx_array_t *updates, ngx_uint_t source, ngx_log_t *log)
{
    ngx_int_t                           rc;
    ngx_str_t                           err;
    ngx_uint_t                          i;
    ngx_http_playarr_metrics_update_t  *u;
    ngx_http_playarr_metrics_series_t  *s;
    u_char                              buf[NGX_HTTP_PLAYARR_METRICS_NAME_MAX
                                            + 64];

    u = updates->elts;

    for (i = 0; i < updates->nelts; i++) {

        if (u[i].op == NGX_HTTP_PLAYARR_METRICS_OP_RESET) {
            ngx_http_playarr_metrics_hide(u[i].family->shared);
            continue;
        }

        s = ngx_http_playarr_metrics_series(store, u[i].family, NULL,
                                            u[i].key, u[i].len);

        switch (u[i].op) {

        case NGX_HTTP_PLAYARR_METRICS_OP_INC:
            rc = ngx_http_playarr_metrics_add(s, u[i].value);
            break;

        case NGX_HTTP_PLAYARR_METRICS_OP_DEC:
            rc = ngx_http_playarr_metrics_add(s, -u[i].value);
            break;

        case NGX_HTTP_PLAYARR_METRICS_OP_SET:
            ngx_http_playarr_metrics_set(s, u[i].value);
            rc = NGX_OK;
            break;

        default: /* NGX_HTTP_PLAYARR_METRICS_OP_OBSERVE */
            rc = ngx_http_playarr_metrics_observe(s, u[i].value);
        }

        if (rc == NGX_OK) {
            continue;
        }

        err.data = buf;
        err.len = ngx_snprintf(buf, sizeof(buf),
                               "\"%s\" would overflow %s\"%V\", not applied",
                               ngx_http_playarr_metrics_ops[u[i].op],
                               (u[i].op == NGX_HTTP_PLAYARR_METRICS_OP_OBSERVE)
                               ? "the sum of " : "",
                               &u[i].family->name)
                  - buf;

        ngx_http_playarr_metrics_reject(store, source,
                                       NGX_HTTP_PLAYARR_METRICS_REJECT_INVALID,
                                       log, &err);
    }
}


/*
 * The text goes into a JSON answer and into the error log: every string
 * of the update in it went through quote(), and what else could be raw
 * is escaped all the same.
 */

static ngx_int_t
ngx_http_playarr_metrics_error(ngx_pool_t *pool, ngx_str_t *err,
    const char *fmt, ...)
{
    u_char   *p;
    size_t    len;
    va_list   args;
    u_char    buf[NGX_MAX_ERROR_STR];

    va_start(args, fmt);
    len = ngx_vslprintf(buf, buf + NGX_MAX_ERROR_STR, fmt, args) - buf;
    va_end(args);

    p = ngx_pnalloc(pool, 4 * len + 3);
    if (p == NULL) {
        return NGX_ERROR;
    }

    err->len = ngx_http_playarr_metrics_escape(p, buf, len, len, 0) - p;
    err->data = p;

    return NGX_DECLINED;
}


/* a string of an update, to quote in an error */

static const char *
ngx_http_playarr_metrics_quote(ngx_pool_t *pool, const char *s)
{
    u_char  *p, *last;

    p = ngx_pnalloc(pool, 4 * NGX_HTTP_PLAYARR_METRICS_QUOTE_MAX + 4);
    if (p == NULL) {
        return NULL;
    }

    last = ngx_http_playarr_metrics_escape(p, (u_char *) s, ngx_strlen(s),
                                           NGX_HTTP_PLAYARR_METRICS_QUOTE_MAX,
                                           1);
    *last = '\0';

    return (const char *) p;
}


/* counted always, logged once a minute at most */

void
ngx_http_playarr_metrics_reject(ngx_http_playarr_metrics_store_t *store,
    ngx_uint_t source, ngx_uint_t reason, ngx_log_t *log, ngx_str_t *err)
{
    u_char                         *p;
    ngx_atomic_uint_t               now, last;
    ngx_http_playarr_metrics_sh_t  *sh;
    u_char                          buf[4 * NGX_HTTP_PLAYARR_METRICS_LOG_MAX
                                        + 3];

    sh = store->sh;

    (void) ngx_atomic_fetch_add(&sh->rejected.count[source][reason], 1);

    now = ngx_time();
    last = sh->rejected.logged[source];

    if (now - last >= 60
        && ngx_atomic_cmp_set(&sh->rejected.logged[source], last, now))
    {
        p = ngx_http_playarr_metrics_escape(buf, err->data, err->len,
                                            NGX_HTTP_PLAYARR_METRICS_LOG_MAX,
                                            0);

        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "playarr_metrics rejected an update from %s: %*s",
                      ngx_http_playarr_metrics_sources[source],
                      (size_t) (p - buf), buf);
    }
}

