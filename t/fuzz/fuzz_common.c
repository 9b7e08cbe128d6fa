
/*
 * Copyright (C) Playarr metrics module authors
 */


/*
 * Playarr's fixtures for the harnesses, loaded once: its metric families
 * (docs/playarr/metrics.json through the module's own schema loader, put
 * together as ngx_http_playarr_metrics_add_builtins() does: the built-in
 * HTTP families first) and its route templates (docs/playarr-routes.conf).
 * A store is made per input, on a fresh zone, by the module's own
 * ngx_http_playarr_metrics_store_init(), as at the start of nginx.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "fuzz.h"


#ifndef FUZZ_SCHEMA
#define FUZZ_SCHEMA  "docs/playarr/metrics.json"
#endif

#ifndef FUZZ_ROUTES
#define FUZZ_ROUTES  "docs/playarr-routes.conf"
#endif


static ngx_pool_t *fuzz_global_pool(void);


/* docs/metrics.md, in the order of the _FAMILY_ constants */
static const char  *fuzz_builtins[] = {
    "playarr_http_requests_total",
    "playarr_http_request_duration_seconds",
    "playarr_authentication_failures_total",
    "playarr_managed_errors_total",
    NULL
};

/* the module's defaults for the HTTP histogram and for schema ones */
static double  fuzz_http_buckets[] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30
};

static double  fuzz_client_buckets[] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10
};


static ngx_pool_t  *fuzz_pool;


static ngx_pool_t *
fuzz_global_pool(void)
{
    if (fuzz_pool == NULL) {
        fuzz_init();

        fuzz_pool = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, &fuzz_log);
        if (fuzz_pool == NULL) {
            fuzz_fatal("ngx_create_pool() failed");
        }
    }

    return fuzz_pool;
}


ngx_array_t *
fuzz_playarr_families(void)
{
    double                                  *b;
    size_t                                   n;
    ngx_str_t                                path;
    ngx_uint_t                               i, j;
    ngx_conf_t                               cf;
    ngx_pool_t                              *pool;
    ngx_array_t                              schema, *buckets;
    ngx_http_playarr_metrics_family_conf_t  *fc, *sc;

    static ngx_array_t                      *families;

    if (families) {
        return families;
    }

    pool = fuzz_global_pool();

    ngx_memzero(&cf, sizeof(ngx_conf_t));
    cf.pool = pool;
    cf.temp_pool = pool;
    cf.log = &fuzz_log;
    cf.cycle = (ngx_cycle_t *) ngx_cycle;

    if (ngx_array_init(&schema, pool, 32,
                       sizeof(ngx_http_playarr_metrics_family_conf_t))
        != NGX_OK)
    {
        fuzz_fatal("ngx_array_init() failed");
    }

    ngx_str_set(&path, FUZZ_SCHEMA);

    if (ngx_http_playarr_metrics_schema_load(&cf, &schema, &path)
        != NGX_CONF_OK)
    {
        fuzz_fatal("cannot load the schema \"%s\" (FUZZ_LOG=1 tells why)",
                   FUZZ_SCHEMA);
    }

    families = ngx_array_create(pool, schema.nelts + 4,
                                sizeof(ngx_http_playarr_metrics_family_conf_t));
    if (families == NULL) {
        fuzz_fatal("ngx_array_create() failed");
    }

    sc = schema.elts;

    /* the built-in ones first; metrics.json defines all four */

    for (i = 0; fuzz_builtins[i]; i++) {

        for (j = 0; j < schema.nelts; j++) {
            if (sc[j].name.len
                && ngx_strcmp(sc[j].name.data, fuzz_builtins[i]) == 0)
            {
                break;
            }
        }

        if (j == schema.nelts) {
            fuzz_fatal("\"%s\" is not in %s", fuzz_builtins[i], FUZZ_SCHEMA);
        }

        fc = ngx_array_push(families);
        if (fc == NULL) {
            fuzz_fatal("ngx_array_push() failed");
        }

        *fc = sc[j];
        sc[j].name.len = 0;

        if (fc->type == NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM
            && fc->buckets == NULL)
        {
            fc->buckets = ngx_array_create(pool, 16, sizeof(double));
            if (fc->buckets == NULL) {
                fuzz_fatal("ngx_array_create() failed");
            }

            n = sizeof(fuzz_http_buckets) / sizeof(double);

            b = ngx_array_push_n(fc->buckets, n);
            if (b == NULL) {
                fuzz_fatal("ngx_array_push_n() failed");
            }

            ngx_memcpy(b, fuzz_http_buckets, sizeof(fuzz_http_buckets));
        }
    }

    for (i = 0; i < schema.nelts; i++) {

        if (sc[i].name.len == 0) {
            continue;
        }

        fc = ngx_array_push(families);
        if (fc == NULL) {
            fuzz_fatal("ngx_array_push() failed");
        }

        *fc = sc[i];

        if (fc->type == NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM
            && fc->buckets == NULL)
        {
            n = sizeof(fuzz_client_buckets) / sizeof(double);

            buckets = ngx_array_create(pool, n, sizeof(double));
            if (buckets == NULL) {
                fuzz_fatal("ngx_array_create() failed");
            }

            b = ngx_array_push_n(buckets, n);
            if (b == NULL) {
                fuzz_fatal("ngx_array_push_n() failed");
            }

            ngx_memcpy(b, fuzz_client_buckets, sizeof(fuzz_client_buckets));
            fc->buckets = buckets;
        }
    }

    return families;
}


ngx_array_t *
fuzz_playarr_templates(void)
{
    u_char       *p, *q, *last;
    FILE         *f;
    ngx_str_t    *t;
    ngx_pool_t   *pool;
    char          line[1024];

    static ngx_array_t  *templates;

    if (templates) {
        return templates;
    }

    pool = fuzz_global_pool();

    templates = ngx_array_create(pool, 80, sizeof(ngx_str_t));
    if (templates == NULL) {
        fuzz_fatal("ngx_array_create() failed");
    }

    f = fopen(FUZZ_ROUTES, "r");
    if (f == NULL) {
        fuzz_fatal("fopen(\"%s\") failed", FUZZ_ROUTES);
    }

    /* "playarr_metrics_route TEMPLATE;  # comment" */

    while (fgets(line, sizeof(line), f)) {
        p = (u_char *) line;

        if (ngx_strncmp(p, "playarr_metrics_route ", 22) != 0) {
            continue;
        }

        p += 22;

        while (*p == ' ') {
            p++;
        }

        last = (u_char *) ngx_strchr(p, ';');
        if (last == NULL) {
            fuzz_fatal("no \";\" in \"%s\"", line);
        }

        t = ngx_array_push(templates);
        if (t == NULL) {
            fuzz_fatal("ngx_array_push() failed");
        }

        t->len = last - p;
        t->data = ngx_pnalloc(pool, t->len + 1);
        if (t->data == NULL) {
            fuzz_fatal("ngx_pnalloc() failed");
        }

        q = ngx_cpymem(t->data, p, t->len);
        *q = '\0';
    }

    fclose(f);

    if (templates->nelts == 0) {
        fuzz_fatal("no templates in %s", FUZZ_ROUTES);
    }

    return templates;
}


ngx_http_playarr_metrics_store_t *
fuzz_store_new(ngx_pool_t *pool, ngx_array_t *families, ngx_uint_t max_series)
{
    ngx_int_t                                n;
    ngx_uint_t                               i;
    ngx_http_playarr_metrics_store_t        *store;
    ngx_http_playarr_metrics_family_conf_t  *fc;

    store = ngx_pcalloc(pool, sizeof(ngx_http_playarr_metrics_store_t));
    if (store == NULL) {
        return NULL;
    }

    ngx_str_set(&store->name, "fuzz");
    store->max_series = max_series;

    if (ngx_array_init(&store->families, pool, families->nelts,
                       sizeof(ngx_http_playarr_metrics_family_conf_t))
        != NGX_OK)
    {
        return NULL;
    }

    fc = ngx_array_push_n(&store->families, families->nelts);
    if (fc == NULL) {
        return NULL;
    }

    ngx_memcpy(fc, families->elts,
               families->nelts * families->size);

    for (i = 0; i < store->families.nelts; i++) {
        fc[i].shared = NULL;
        fc[i].replaced = NULL;

        if (fc[i].type != NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM) {
            continue;
        }

        n = ngx_http_playarr_metrics_store_bounds(store, pool, fc[i].buckets);
        if (n == NGX_ERROR) {
            return NULL;
        }

        fc[i].bounds_id = n;
    }

    return store;
}


ngx_http_playarr_metrics_store_t *
fuzz_store_create(ngx_pool_t *pool, ngx_uint_t pages, ngx_uint_t max_series)
{
    ngx_shm_zone_t                    *shm_zone;
    ngx_http_playarr_metrics_store_t  *store;

    store = fuzz_store_new(pool, fuzz_playarr_families(), max_series);
    if (store == NULL) {
        return NULL;
    }

    shm_zone = ngx_pcalloc(pool, sizeof(ngx_shm_zone_t));
    if (shm_zone == NULL) {
        return NULL;
    }

    shm_zone->shm.addr = (u_char *) fuzz_zone_create(pages);
    shm_zone->shm.size = fuzz_zone_size((ngx_slab_pool_t *) shm_zone->shm.addr);
    shm_zone->shm.name = store->name;
    shm_zone->shm.log = &fuzz_log;
    shm_zone->data = store;

    if (ngx_http_playarr_metrics_store_init(shm_zone, NULL) != NGX_OK) {
        fuzz_zone_destroy((ngx_slab_pool_t *) shm_zone->shm.addr);
        return NULL;
    }

    if (store->shpool != (ngx_slab_pool_t *) shm_zone->shm.addr) {
        fuzz_fatal("the store is not bound to its zone");
    }

    return store;
}


void
fuzz_store_destroy(ngx_http_playarr_metrics_store_t *store)
{
    fuzz_zone_destroy(store->shpool);
    store->shpool = NULL;
    store->sh = NULL;
}


/* FNV-1a */

ngx_uint_t
fuzz_min_pages(void)
{
    ngx_pool_t                        *pool;
    ngx_http_playarr_metrics_store_t  *store;
    static ngx_uint_t                  pages;

    if (pages) {
        return pages;
    }

    pool = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, &fuzz_log);
    if (pool == NULL) {
        fuzz_fatal("ngx_create_pool() failed");
    }

    store = fuzz_store_create(pool, 4096, 10000);
    if (store == NULL) {
        fuzz_fatal("no store");
    }

    pages = 4096 - store->shpool->pfree;

    fuzz_store_destroy(store);
    ngx_destroy_pool(pool);

    return pages;
}


uint32_t
fuzz_hash(const uint8_t *data, size_t size)
{
    size_t    i;
    uint32_t  h;

    h = 2166136261u;

    for (i = 0; i < size; i++) {
        h = (h ^ data[i]) * 16777619u;
    }

    return h;
}
