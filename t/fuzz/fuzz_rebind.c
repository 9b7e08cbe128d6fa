
/*
 * Copyright (C) Playarr metrics module authors
 */


/*
 * A reload on a kept zone, ngx_http_playarr_metrics_store_init() with the
 * running store: the new configuration changes some of Playarr's
 * families (a label fewer, or a counter made a gauge and back), and one
 * of the zone's allocations may fail on the way, so that the reload is
 * refused part-way.  Then the running configuration, the new one or the
 * old one, is bound once more, as the next reload would do it.
 *
 * What must hold: a family whose definition the next reload keeps is the
 * very family the running workers write into, with every count; one the
 * running configuration changed starts from zero; both renderers still
 * give valid output.
 *
 * Input: one byte per family, in order, whose low bit says whether the
 * reload changes it; the byte after them, if any, is N of "the Nth slab
 * allocation of the reload fails" (0: none does).
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "fuzz.h"


int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static ngx_http_playarr_metrics_store_t *fuzz_rebind(ngx_pool_t *pool,
    ngx_http_playarr_metrics_store_t *running, const uint8_t *change,
    size_t nchange, ngx_uint_t fail, ngx_int_t *rc);
static void fuzz_count(ngx_http_playarr_metrics_store_t *store);
static double fuzz_value(ngx_http_playarr_metrics_family_t *f);


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) fuzz_playarr_families();

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t                                   n;
    ngx_int_t                                rc;
    ngx_uint_t                               i, fail;
    ngx_pool_t                              *pool;
    ngx_http_playarr_metrics_store_t        *first, *reload, *running, *next;
    ngx_http_playarr_metrics_family_conf_t  *fr, *fn;

    n = fuzz_playarr_families()->nelts;

    if (size > n + 1) {
        return 0;
    }

    pool = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, &fuzz_log);
    if (pool == NULL) {
        fuzz_fatal("ngx_create_pool() failed");
    }

    /* room for the three configurations' families, so that only an
       injected failure refuses the reload */

    first = fuzz_store_create(pool, fuzz_min_pages() * 4, 10000);
    if (first == NULL) {
        fuzz_fatal("no store");
    }

    fuzz_count(first);

    fail = (size == n + 1) ? data[n] : 0;

    reload = fuzz_rebind(pool, first, data, size < n ? size : n, fail, &rc);

    running = (rc == NGX_OK) ? reload : first;

    fuzz_count(running);

    /* the next reload: the running configuration once more */

    next = fuzz_rebind(pool, running, NULL, 0, 0, &rc);

    if (rc != NGX_OK) {
        fuzz_fatal("the running configuration could not be bound again");
    }

    fr = running->families.elts;
    fn = next->families.elts;

    for (i = 0; i < n; i++) {

        if (fn[i].shared != fr[i].shared) {
            fuzz_fatal("family \"%.*s\": the next reload lost the family "
                       "the workers write into (%s reload)",
                       (int) fr[i].name.len, fr[i].name.data,
                       running == first ? "a refused" : "a done");
        }

        if (fr[i].type == NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM) {
            continue;
        }

        /* counted once by the first configuration, once by the running
           one: twice if it is the same family, once if it changed */

        if (fuzz_value(fn[i].shared)
            != ((running == first || fr[i].replaced == NULL) ? 2 : 1))
        {
            fuzz_fatal("family \"%.*s\": counts lost or doubled: %g",
                       (int) fr[i].name.len, fr[i].name.data,
                       fuzz_value(fn[i].shared));
        }
    }

    if (fuzz_render(pool, next) == NGX_ERROR) {
        fuzz_fatal("no memory to render");
    }

    fuzz_store_destroy(first);
    ngx_destroy_pool(pool);

    return 0;
}


/*
 * A store with the running families, changed where change[] says so,
 * bound to the running store's zone as a reload does it.
 */

static ngx_http_playarr_metrics_store_t *
fuzz_rebind(ngx_pool_t *pool, ngx_http_playarr_metrics_store_t *running,
    const uint8_t *change, size_t nchange, ngx_uint_t fail, ngx_int_t *rc)
{
    ngx_uint_t                               i;
    ngx_array_t                              families;
    ngx_shm_zone_t                          *shm_zone;
    ngx_http_playarr_metrics_store_t        *store;
    ngx_http_playarr_metrics_family_conf_t  *fc;

    /* the running families, changed where change[] says so */

    families = running->families;

    fc = ngx_pnalloc(pool, families.nelts * families.size);
    if (fc == NULL) {
        fuzz_fatal("no memory");
    }

    ngx_memcpy(fc, families.elts, families.nelts * families.size);
    families.elts = fc;

    for (i = 0; i < families.nelts && i < nchange; i++) {
        if (!(change[i] & 1)) {
            continue;
        }

        if (fc[i].nlabels) {
            fc[i].nlabels--;

        } else if (fc[i].type == NGX_HTTP_PLAYARR_METRICS_TYPE_COUNTER) {
            fc[i].type = NGX_HTTP_PLAYARR_METRICS_TYPE_GAUGE;

        } else if (fc[i].type == NGX_HTTP_PLAYARR_METRICS_TYPE_GAUGE) {
            fc[i].type = NGX_HTTP_PLAYARR_METRICS_TYPE_COUNTER;
        }
    }

    store = fuzz_store_new(pool, &families, running->max_series);
    if (store == NULL) {
        fuzz_fatal("no memory");
    }

    shm_zone = ngx_pcalloc(pool, sizeof(ngx_shm_zone_t));
    if (shm_zone == NULL) {
        fuzz_fatal("no memory");
    }

    shm_zone->shm.addr = (u_char *) running->shpool;
    shm_zone->shm.size = fuzz_zone_size(running->shpool);
    shm_zone->shm.name = store->name;
    shm_zone->shm.log = &fuzz_log;
    shm_zone->shm.exists = 1;
    shm_zone->data = store;

    fuzz_slab_fail_after = fail;

    *rc = ngx_http_playarr_metrics_store_init(shm_zone, running);

    fuzz_slab_fail_after = 0;

    return store;
}


/* one more of every counter and gauge family, on its first series */

static void
fuzz_count(ngx_http_playarr_metrics_store_t *store)
{
    ngx_uint_t                               i;
    ngx_http_playarr_metrics_family_conf_t  *fc;

    fc = store->families.elts;

    for (i = 0; i < store->families.nelts; i++) {
        if (fc[i].type == NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM) {
            ngx_http_playarr_metrics_observe(fc[i].shared->overflow, 0.5);

        } else {
            ngx_http_playarr_metrics_add(fc[i].shared->overflow, 1);
        }
    }
}


static double
fuzz_value(ngx_http_playarr_metrics_family_t *f)
{
    return ngx_http_playarr_metrics_double(f->overflow->values[0]);
}
