
/*
 * Copyright (C) Playarr metrics module authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http_playarr_metrics_store.h>

#include <math.h>


#if (NGX_PTR_SIZE < 8)
#error "ngx_http_playarr_metrics_module needs 64-bit atomic operations"
#endif


/* "pmetric" and the layout of the zone: 2 since the in-flight slots */
#define NGX_HTTP_PLAYARR_METRICS_MAGIC   0x706d657472696302ULL

/* bytes of zone per expected series, to size the hash table */
#define NGX_HTTP_PLAYARR_METRICS_PER_SERIES  256

#define NGX_HTTP_PLAYARR_METRICS_ONES   0x0101010101010101ULL
#define NGX_HTTP_PLAYARR_METRICS_HIGHS  0x8080808080808080ULL


static ngx_int_t ngx_http_playarr_metrics_bind(
    ngx_http_playarr_metrics_store_t *store, ngx_log_t *log);
static ngx_http_playarr_metrics_family_t *ngx_http_playarr_metrics_family(
    ngx_http_playarr_metrics_store_t *store,
    ngx_http_playarr_metrics_family_conf_t *fc, ngx_log_t *log);
static uint64_t ngx_http_playarr_metrics_family_buckets(
    ngx_http_playarr_metrics_store_t *store,
    ngx_http_playarr_metrics_family_conf_t *fc);
static size_t ngx_http_playarr_metrics_family_def(
    ngx_http_playarr_metrics_family_conf_t *fc, u_char *buf);
static ngx_http_playarr_metrics_bounds_t *
    ngx_http_playarr_metrics_shared_bounds(
    ngx_http_playarr_metrics_store_t *store, ngx_array_t *buckets);
static ngx_inline ngx_http_playarr_metrics_series_t *
    ngx_http_playarr_metrics_lookup(ngx_http_playarr_metrics_sh_t *sh,
    ngx_http_playarr_metrics_family_t *f, u_char *key, size_t len,
    uint32_t hash);
static ngx_http_playarr_metrics_series_t *
    ngx_http_playarr_metrics_series_add(
    ngx_http_playarr_metrics_store_t *store,
    ngx_http_playarr_metrics_family_conf_t *fc,
    ngx_http_playarr_metrics_bounds_t *bounds, u_char *key, size_t len,
    uint32_t hash);
static ngx_http_playarr_metrics_series_t *
    ngx_http_playarr_metrics_series_create(
    ngx_http_playarr_metrics_store_t *store,
    ngx_http_playarr_metrics_family_t *f,
    ngx_http_playarr_metrics_bounds_t *bounds, u_char *key, size_t len,
    uint32_t hash);
static void ngx_http_playarr_metrics_series_repair(
    ngx_http_playarr_metrics_sh_t *sh, ngx_http_playarr_metrics_family_t *f);
static ngx_http_playarr_metrics_series_t *
    ngx_http_playarr_metrics_fold(ngx_http_playarr_metrics_store_t *store,
    ngx_http_playarr_metrics_family_conf_t *fc, const char *why);
static void *ngx_http_playarr_metrics_arena_alloc(
    ngx_http_playarr_metrics_store_t *store, size_t size);


/* by NGX_HTTP_PLAYARR_METRICS_TYPE_COUNTER..._HISTOGRAM */
const char  *ngx_http_playarr_metrics_types[] = {
    "counter", "gauge", "histogram"
};

/* by NGX_HTTP_PLAYARR_METRICS_SOURCE_* */
const char  *ngx_http_playarr_metrics_sources[] = {
    "push", "header"
};


ngx_int_t
ngx_http_playarr_metrics_store_init(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_playarr_metrics_store_t  *ostore = data;

    size_t                          n, size;
    ngx_uint_t                      i;
    ngx_shm_zone_t                 *oshm, *resized;
    ngx_list_part_t                *part;
    ngx_slab_pool_t                *shpool;
    ngx_http_playarr_metrics_sh_t  *sh;
    ngx_http_playarr_metrics_store_t  *store;

    store = shm_zone->data;

    if (ostore) {

        /* reload with the same size: the zone and every value are kept */

        store->sh = ostore->sh;
        store->shpool = ostore->shpool;

        ngx_log_error(NGX_LOG_NOTICE, shm_zone->shm.log, 0,
                      "playarr_metrics_zone \"%V\" reused",
                      &shm_zone->shm.name);

        return ngx_http_playarr_metrics_bind(store, shm_zone->shm.log);
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;
    store->shpool = shpool;

    if (shm_zone->shm.exists) {
        store->sh = shpool->data;
        return ngx_http_playarr_metrics_bind(store, shm_zone->shm.log);
    }

    /* a zone of the same name in the running cycle had another size */

    resized = NULL;
    part = (ngx_list_part_t *) &ngx_cycle->shared_memory.part;
    oshm = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }
            part = part->next;
            oshm = part->elts;
            i = 0;
        }

        if (oshm[i].tag == shm_zone->tag
            && oshm[i].shm.name.len == shm_zone->shm.name.len
            && ngx_strncmp(oshm[i].shm.name.data, shm_zone->shm.name.data,
                           shm_zone->shm.name.len)
               == 0)
        {
            ngx_log_error(NGX_LOG_WARN, shm_zone->shm.log, 0,
                          "playarr_metrics_zone \"%V\" size changed "
                          "from %uz to %uz, metrics start from zero",
                          &shm_zone->shm.name, oshm[i].shm.size,
                          shm_zone->shm.size);
            resized = &oshm[i];
            break;
        }
    }

    sh = ngx_slab_alloc(shpool, sizeof(ngx_http_playarr_metrics_sh_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(sh, sizeof(ngx_http_playarr_metrics_sh_t));

    /* a hash table with about one bucket per series the zone can hold */

    n = 1;
    while (n * NGX_HTTP_PLAYARR_METRICS_PER_SERIES < shm_zone->shm.size / 2) {
        n <<= 1;
    }

    size = n * sizeof(ngx_http_playarr_metrics_series_t *);

    sh->table = ngx_slab_alloc(shpool, size);
    if (sh->table == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero((void *) sh->table, size);

    sh->mask = n - 1;
    sh->seed = (uint32_t) ngx_random();
    sh->magic = NGX_HTTP_PLAYARR_METRICS_MAGIC;

    store->sh = sh;
    shpool->data = sh;

    size = sizeof(" in playarr_metrics_zone \"\"") + shm_zone->shm.name.len;

    shpool->log_ctx = ngx_slab_alloc(shpool, size);
    if (shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(shpool->log_ctx, " in playarr_metrics_zone \"%V\"%Z",
                &shm_zone->shm.name);

    /* a full zone is handled by folding series, not worth an [crit] */

    shpool->log_nomem = 0;

    if (ngx_http_playarr_metrics_bind(store, shm_zone->shm.log) != NGX_OK) {
        return NGX_ERROR;
    }

    /*
     * A zone made at start, or by a new binary, is restored from the state
     * file once the cycle's zones are all made (the module's init_module);
     * one that replaces a zone of another size begins from zero.
     */

    store->fresh = (resized == NULL);

    return NGX_OK;
}


/*
 * Connects the configured families and bucket bounds to their shared
 * counterparts, creating what is missing.  A family whose definition
 * changed starts afresh; the old one stays in the zone, untouched, for
 * workers of the previous cycle that may still write into it.
 */

static ngx_int_t
ngx_http_playarr_metrics_bind(ngx_http_playarr_metrics_store_t *store,
    ngx_log_t *log)
{
    ngx_uint_t                               i;
    ngx_array_t                            **buckets;
    ngx_http_playarr_metrics_family_t       *head;
    ngx_http_playarr_metrics_family_conf_t  *fc;

    if (store->sh == NULL
        || store->sh->magic != NGX_HTTP_PLAYARR_METRICS_MAGIC)
    {
        ngx_log_error(NGX_LOG_EMERG, log, 0,
                      "playarr_metrics_zone \"%V\" holds foreign data",
                      &store->name);
        return NGX_ERROR;
    }

    buckets = store->buckets.elts;

    store->bounds = ngx_pcalloc(store->buckets.pool,
                                store->buckets.nelts
                                * sizeof(ngx_http_playarr_metrics_bounds_t *));
    if (store->bounds == NULL && store->buckets.nelts) {
        return NGX_ERROR;
    }

    for (i = 0; i < store->buckets.nelts; i++) {
        store->bounds[i] = ngx_http_playarr_metrics_shared_bounds(store,
                                                                  buckets[i]);
        if (store->bounds[i] == NULL) {
            goto full;
        }
    }

    fc = store->families.elts;
    head = store->sh->families;

    for (i = 0; i < store->families.nelts; i++) {
        fc[i].shared = ngx_http_playarr_metrics_family(store, &fc[i], log);
        if (fc[i].shared == NULL) {
            goto failed;
        }
    }

    /* the workers of this cycle are told from those of the previous ones */

    store->generation = ngx_atomic_fetch_add(&store->sh->generation, 1) + 1;

    return NGX_OK;

failed:

    /*
     * The configuration is refused and the running one stays: the
     * families made for it are forgotten, and those they were to
     * replace, which the running workers still write into, are found
     * again by the next reload.
     */

    ngx_shmtx_lock(&store->shpool->mutex);

    store->sh->families = head;

    for (i = 0; i < store->families.nelts; i++) {
        if (fc[i].replaced) {
            fc[i].replaced->retired = 0;
        }
    }

    ngx_shmtx_unlock(&store->shpool->mutex);

full:

    ngx_log_error(NGX_LOG_EMERG, log, 0,
                  "playarr_metrics_zone \"%V\" is too small for the "
                  "families and buckets configured", &store->name);

    return NGX_ERROR;
}


static ngx_http_playarr_metrics_family_t *
ngx_http_playarr_metrics_family(ngx_http_playarr_metrics_store_t *store,
    ngx_http_playarr_metrics_family_conf_t *fc, ngx_log_t *log)
{
    u_char                              *p, *key;
    size_t                               len, klen;
    ngx_uint_t                           i;
    ngx_http_playarr_metrics_sh_t       *sh;
    ngx_http_playarr_metrics_bounds_t   *bounds;
    ngx_http_playarr_metrics_series_t   *s;
    ngx_http_playarr_metrics_family_t   *f, *old;
    uint64_t                             buckets;
    u_char                               def[4096];

    sh = store->sh;
    bounds = NULL;

    if (fc->type == NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM) {
        bounds = store->bounds[fc->bounds_id];
    }

    len = ngx_http_playarr_metrics_family_def(fc, def);
    buckets = ngx_http_playarr_metrics_family_buckets(store, fc);

    old = NULL;

    for (f = sh->families; f; f = f->next) {

        if (f->retired || ngx_strcmp(f->def, def) != 0) {
            continue;
        }

        if (f->type == fc->type
            && f->bounds == bounds
            && f->buckets == buckets
            && f->def_len == len
            && ngx_memcmp(f->def, def, len) == 0)
        {
            return f;
        }

        old = f;
        break;
    }

    f = ngx_slab_alloc(store->shpool,
                       offsetof(ngx_http_playarr_metrics_family_t, def) + len);
    if (f == NULL) {
        return NULL;
    }

    ngx_memzero(f, offsetof(ngx_http_playarr_metrics_family_t, def));

    ngx_memcpy(f->def, def, len);
    f->def_len = len;
    f->type = fc->type;
    f->nlabels = fc->nlabels;
    f->bounds = bounds;
    f->buckets = buckets;
    f->seed = sh->seed ^ ngx_hash_key(fc->name.data, fc->name.len);

    /*
     * The overflow series exists from the start, hidden until used.  A
     * family without labels has one series only, shown from the start
     * as prom-client does: it is its own overflow.
     */

    key = def;
    p = key;

    for (i = 0; i < fc->nlabels; i++) {
        if (i) {
            *p++ = NGX_HTTP_PLAYARR_METRICS_SEP;
        }
        p = ngx_cpymem(p, NGX_HTTP_PLAYARR_METRICS_OVERFLOW,
                       sizeof(NGX_HTTP_PLAYARR_METRICS_OVERFLOW) - 1);
    }

    klen = p - key;

    ngx_shmtx_lock(&store->shpool->mutex);

    s = ngx_http_playarr_metrics_series_create(store, f, bounds, key, klen,
                        ngx_http_playarr_metrics_hash(f->seed, key, klen));

    if (s) {
        f->overflow = s;

        if (fc->nlabels) {
            s->hidden = 1;
            s->overflow = 1;
            f->nseries = 0;
        }

        if (old) {
            old->retired = 1;
            fc->replaced = old;
        }

        f->next = sh->families;
        sh->families = f;
    }

    ngx_shmtx_unlock(&store->shpool->mutex);

    if (s == NULL) {
        ngx_slab_free(store->shpool, f);
        return NULL;
    }

    if (old) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "playarr_metrics family \"%V\" changed its labels, "
                      "type or buckets, its series start from zero",
                      &fc->name);
    }

    return f;
}


/*
 * All the bucket bounds a histogram family's series may have (locations
 * can set their own), summed up so that the order they were configured in
 * does not matter: another sum on reload means other buckets.
 */

static uint64_t
ngx_http_playarr_metrics_family_buckets(
    ngx_http_playarr_metrics_store_t *store,
    ngx_http_playarr_metrics_family_conf_t *fc)
{
    uint64_t                            sum;
    ngx_uint_t                          i, *n;
    ngx_http_playarr_metrics_bounds_t  *bounds;

    if (fc->type != NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM) {
        return 0;
    }

    bounds = store->bounds[fc->bounds_id];
    sum = ngx_http_playarr_metrics_hash(0, (u_char *) bounds->le,
                                        bounds->n * sizeof(double));

    if (fc->bounds_ids == NULL) {
        return sum;
    }

    n = fc->bounds_ids->elts;

    for (i = 0; i < fc->bounds_ids->nelts; i++) {
        if (n[i] == fc->bounds_id) {
            continue;
        }

        bounds = store->bounds[n[i]];
        sum += ngx_http_playarr_metrics_hash(1, (u_char *) bounds->le,
                                             bounds->n * sizeof(double));
    }

    return sum;
}


static size_t
ngx_http_playarr_metrics_family_def(ngx_http_playarr_metrics_family_conf_t *fc,
    u_char *buf)
{
    u_char      *p;
    ngx_uint_t   i;

    p = ngx_cpymem(buf, fc->name.data, fc->name.len);
    *p++ = '\0';

    for (i = 0; i < fc->nlabels; i++) {
        p = ngx_cpymem(p, fc->labels[i].data, fc->labels[i].len);
        *p++ = '\0';
    }

    return p - buf;
}


/*
 * Bucket bounds are configured per location; each distinct set is kept
 * once per store (process memory) and once per zone (shared memory), and
 * known by its index, the bounds id returned here.
 */

ngx_int_t
ngx_http_playarr_metrics_store_bounds(ngx_http_playarr_metrics_store_t *store,
    ngx_pool_t *pool, ngx_array_t *buckets)
{
    ngx_uint_t     i;
    ngx_array_t  **known, **p;

    if (store->buckets.elts == NULL) {
        if (ngx_array_init(&store->buckets, pool, 2, sizeof(ngx_array_t *))
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    known = store->buckets.elts;

    for (i = 0; i < store->buckets.nelts; i++) {
        if (known[i]->nelts == buckets->nelts
            && ngx_memcmp(known[i]->elts, buckets->elts,
                          buckets->nelts * sizeof(double))
               == 0)
        {
            return i;
        }
    }

    p = ngx_array_push(&store->buckets);
    if (p == NULL) {
        return NGX_ERROR;
    }

    *p = buckets;

    return store->buckets.nelts - 1;
}


static ngx_http_playarr_metrics_bounds_t *
ngx_http_playarr_metrics_shared_bounds(ngx_http_playarr_metrics_store_t *store,
    ngx_array_t *buckets)
{
    size_t                              size;
    ngx_http_playarr_metrics_sh_t      *sh;
    ngx_http_playarr_metrics_bounds_t  *bounds;

    sh = store->sh;
    size = buckets->nelts * sizeof(double);

    for (bounds = sh->bounds; bounds; bounds = bounds->next) {
        if (bounds->n == buckets->nelts
            && ngx_memcmp(bounds->le, buckets->elts, size) == 0)
        {
            return bounds;
        }
    }

    bounds = ngx_slab_alloc(store->shpool,
                            offsetof(ngx_http_playarr_metrics_bounds_t, le)
                            + size);
    if (bounds == NULL) {
        return NULL;
    }

    bounds->n = buckets->nelts;
    ngx_memcpy(bounds->le, buckets->elts, size);

    ngx_shmtx_lock(&store->shpool->mutex);

    bounds->next = sh->bounds;
    sh->bounds = bounds;

    ngx_shmtx_unlock(&store->shpool->mutex);

    return bounds;
}


static ngx_inline ngx_http_playarr_metrics_series_t *
ngx_http_playarr_metrics_lookup(ngx_http_playarr_metrics_sh_t *sh,
    ngx_http_playarr_metrics_family_t *f, u_char *key, size_t len,
    uint32_t hash)
{
    ngx_http_playarr_metrics_series_t  *s;

    for (s = sh->table[hash & sh->mask]; s; s = s->next) {

        if (s->hash == hash
            && s->family == f
            && s->len == len
            && ngx_memcmp(ngx_http_playarr_metrics_series_key(s), key, len)
               == 0)
        {
            return s;
        }
    }

    return NULL;
}


/*
 * The series of family fc for a key: found without a lock when it exists,
 * created under the slab mutex otherwise.  Never NULL: past the family's
 * cap, or when the zone is full, the family's overflow series is returned.
 */

ngx_http_playarr_metrics_series_t *
ngx_http_playarr_metrics_series(ngx_http_playarr_metrics_store_t *store,
    ngx_http_playarr_metrics_family_conf_t *fc,
    ngx_http_playarr_metrics_bounds_t *bounds, u_char *key, size_t len)
{
    uint32_t                            hash;
    ngx_http_playarr_metrics_sh_t      *sh;
    ngx_http_playarr_metrics_family_t  *f;
    ngx_http_playarr_metrics_series_t  *s;

    f = fc->shared;
    sh = store->sh;

    hash = ngx_http_playarr_metrics_hash(f->seed, key, len);

    s = ngx_http_playarr_metrics_lookup(sh, f, key, len, hash);
    if (s) {
        return s;
    }

    return ngx_http_playarr_metrics_series_add(store, fc, bounds, key, len,
                                               hash);
}


/* the series of family fc for a key, if it exists; no lock, none created */

ngx_http_playarr_metrics_series_t *
ngx_http_playarr_metrics_series_find(ngx_http_playarr_metrics_store_t *store,
    ngx_http_playarr_metrics_family_conf_t *fc, u_char *key, size_t len)
{
    uint32_t                            hash;
    ngx_http_playarr_metrics_family_t  *f;

    f = fc->shared;
    hash = ngx_http_playarr_metrics_hash(f->seed, key, len);

    return ngx_http_playarr_metrics_lookup(store->sh, f, key, len, hash);
}


/* a series not found without the lock: created, unless another was first */

static ngx_http_playarr_metrics_series_t *
ngx_http_playarr_metrics_series_add(ngx_http_playarr_metrics_store_t *store,
    ngx_http_playarr_metrics_family_conf_t *fc,
    ngx_http_playarr_metrics_bounds_t *bounds, u_char *key, size_t len,
    uint32_t hash)
{
    const char                         *why;
    ngx_uint_t                          created;
    ngx_http_playarr_metrics_family_t  *f;
    ngx_http_playarr_metrics_series_t  *s;

    f = fc->shared;
    created = 0;

    if (f->type != NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM) {
        bounds = NULL;

    } else if (bounds == NULL) {
        bounds = f->bounds;
    }

    why = NULL;

    ngx_shmtx_lock(&store->shpool->mutex);

    ngx_http_playarr_metrics_series_repair(store->sh, f);

    s = ngx_http_playarr_metrics_lookup(store->sh, f, key, len, hash);

    if (s == NULL) {
        if (f->nseries >= store->max_series) {
            why = "has reached playarr_metrics_max_series";

        } else {
            s = ngx_http_playarr_metrics_series_create(store, f, bounds,
                                                       key, len, hash);
            if (s == NULL) {
                why = "has no room: the zone is full";
            }

            created = 1;
        }
    }

    ngx_shmtx_unlock(&store->shpool->mutex);

    if (s == NULL) {
        return ngx_http_playarr_metrics_fold(store, fc, why);
    }

    if (why == NULL && created) {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "playarr_metrics family \"%V\": series created, "
                       "%uA in it", &fc->name, f->nseries);
    }

    return s;
}


/* called with the slab mutex held */

static ngx_http_playarr_metrics_series_t *
ngx_http_playarr_metrics_series_create(ngx_http_playarr_metrics_store_t *store,
    ngx_http_playarr_metrics_family_t *f,
    ngx_http_playarr_metrics_bounds_t *bounds, u_char *key, size_t len,
    uint32_t hash)
{
    size_t                              size;
    ngx_uint_t                          n;
    ngx_http_playarr_metrics_sh_t      *sh;
    ngx_http_playarr_metrics_series_t  *s;

    sh = store->sh;
    size = ngx_http_playarr_metrics_series_size(bounds, len);

    s = ngx_http_playarr_metrics_arena_alloc(store, size);
    if (s == NULL) {
        return NULL;
    }

    ngx_memzero(s, size - len);

    s->family = f;
    s->bounds = bounds;
    s->hash = hash;
    s->len = (uint16_t) len;
    ngx_memcpy(ngx_http_playarr_metrics_series_key(s), key, len);

    n = hash & sh->mask;
    s->next = sh->table[n];
    s->sibling = f->head;

    /*
     * The series is complete before anyone can reach it.  It joins its
     * family's list (render, the state file) before the hash table
     * (lookups): a creator killed between the two stores, whose mutex the
     * master then releases, leaves a series shown but not found, which
     * the next creation in the family puts into the table (see _repair).
     * The other way round, it would be counted and never shown nor saved.
     * Killed before the first store, it leaves only room used, and
     * nseries one too high.
     */

    ngx_memory_barrier();

    f->nseries++;
    f->head = s;

    ngx_memory_barrier();

    sh->table[n] = s;

    return s;
}


/*
 * Called with the slab mutex held, before anything is created in the
 * family: its head may be the series of a creator killed between its two
 * stores, in the family's list but not in the hash table, where the next
 * lookup of its key would miss it and create a second series with the
 * same labels.  Series are created one at a time, each at the head of
 * its family, so only the head can be in that state; it is put into the
 * table here.  Nothing walks it through the table yet, so its next may
 * be set again (a series of another family may have joined the chain
 * meanwhile); render does not read next.
 */

static void
ngx_http_playarr_metrics_series_repair(ngx_http_playarr_metrics_sh_t *sh,
    ngx_http_playarr_metrics_family_t *f)
{
    ngx_uint_t                          n;
    ngx_http_playarr_metrics_series_t  *s;

    s = f->head;

    if (s == NULL
        || ngx_http_playarr_metrics_lookup(sh, f,
                                        ngx_http_playarr_metrics_series_key(s),
                                        s->len, s->hash)
           != NULL)
    {
        return;
    }

    n = s->hash & sh->mask;
    s->next = sh->table[n];

    ngx_memory_barrier();

    sh->table[n] = s;
}


static ngx_http_playarr_metrics_series_t *
ngx_http_playarr_metrics_fold(ngx_http_playarr_metrics_store_t *store,
    ngx_http_playarr_metrics_family_conf_t *fc, const char *why)
{
    ngx_atomic_uint_t                   now, last;
    ngx_http_playarr_metrics_family_t  *f;

    f = fc->shared;

    (void) ngx_atomic_fetch_add(&f->refused, 1);
    f->overflow->hidden = 0;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "playarr_metrics family \"%V\" %s: folded into "
                   "\"" NGX_HTTP_PLAYARR_METRICS_OVERFLOW "\"",
                   &fc->name, why);

    now = ngx_time();
    last = f->warned;

    if (now - last >= 60 && ngx_atomic_cmp_set(&f->warned, last, now)) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "playarr_metrics family \"%V\" %s, new label sets "
                      "are counted in its \"" NGX_HTTP_PLAYARR_METRICS_OVERFLOW
                      "\" series", &fc->name, why);
    }

    return f->overflow;
}


/*
 * Series are never freed, so they are cut from whole slab pages with no
 * per-allocation rounding; called with the slab mutex held.
 */

static void *
ngx_http_playarr_metrics_arena_alloc(ngx_http_playarr_metrics_store_t *store,
    size_t size)
{
    u_char                         *p;
    size_t                          chunk;
    ngx_http_playarr_metrics_sh_t  *sh;

    sh = store->sh;
    size = ngx_align(size, sizeof(ngx_atomic_t));

    if ((size_t) (sh->arena_end - sh->arena) < size) {

        chunk = ngx_max(4 * ngx_pagesize, ngx_align(size, ngx_pagesize));

        p = ngx_slab_alloc_locked(store->shpool, chunk);
        if (p == NULL) {
            chunk = ngx_align(size, ngx_pagesize);
            p = ngx_slab_alloc_locked(store->shpool, chunk);
            if (p == NULL) {
                return NULL;
            }
        }

        sh->arena = p;
        sh->arena_end = p + chunk;
    }

    p = sh->arena;
    sh->arena += size;
    sh->arena_free = sh->arena_end - sh->arena;

    return p;
}


/*
 * Label values are kept as valid UTF-8 of at most
 * NGX_HTTP_PLAYARR_METRICS_VALUE_MAX bytes: an invalid sequence or a NUL
 * becomes U+FFFD, and a value is cut on a character boundary.
 */

size_t
ngx_http_playarr_metrics_value_copy(u_char *dst, u_char *src, size_t len)
{
    return ngx_http_playarr_metrics_utf8_copy(dst, src, len,
                                          NGX_HTTP_PLAYARR_METRICS_VALUE_MAX);
}


/*
 * Text from a client, an upstream or a file of the worker user's, as
 * nginx escapes what it logs of a request: a control character or a byte
 * above 0x7e, and with quotes a '"' or a '\\' too, becomes \xHH, so that
 * no such text can end a log line, forge another or close a quoted
 * string.  At most max bytes of src are taken, "..." marks a cut; dst has
 * room for 4 * max + 3 bytes.
 */

u_char *
ngx_http_playarr_metrics_escape(u_char *dst, u_char *src, size_t len,
    size_t max, ngx_uint_t quotes)
{
    u_char          c;
    size_t          i, n;
    static u_char   hex[] = "0123456789ABCDEF";

    n = ngx_min(len, max);

    for (i = 0; i < n; i++) {
        c = src[i];

        if (c < 0x20 || c > 0x7e || (quotes && (c == '"' || c == '\\'))) {
            *dst++ = '\\';
            *dst++ = 'x';
            *dst++ = hex[c >> 4];
            *dst++ = hex[c & 0x0f];
            continue;
        }

        *dst++ = c;
    }

    if (len > max) {
        dst = ngx_cpymem(dst, "...", 3);
    }

    return dst;
}


/* at most max bytes of valid UTF-8 without NUL, U+FFFD for the rest */

size_t
ngx_http_playarr_metrics_utf8_copy(u_char *dst, u_char *src, size_t len,
    size_t max)
{
    u_char    c, lo, hi, *d, *end, *last;
    size_t    n, i;
    uint64_t  w;

    /* the usual case, ASCII without NUL: 8 bytes at a time, then 1 */

    n = ngx_min(len, max);

    for (i = 0; i + 8 <= n; i += 8) {
        ngx_memcpy(&w, src + i, 8);

        if ((((w - NGX_HTTP_PLAYARR_METRICS_ONES) & ~w) | w)
            & NGX_HTTP_PLAYARR_METRICS_HIGHS)
        {
            break;
        }

        ngx_memcpy(dst + i, &w, 8);
    }

    for ( /* void */ ; i < n; i++) {
        c = src[i];

        if (c == '\0' || c >= 0x80) {
            break;
        }

        dst[i] = c;
    }

    if (i == len) {
        return len;
    }

    d = dst + i;
    src += i;
    end = src + len - i;
    last = dst + max;

    while (src < end) {

        c = *src;

        if (c < 0x80 && c != '\0') {
            if (d == last) {
                break;
            }

            *d++ = c;
            src++;
            continue;
        }

        /* RFC 3629: lead byte, length, range of the second byte */

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
            n = 0;
        }

        if (n && (size_t) (end - src) >= n
            && src[1] >= lo && src[1] <= hi)
        {
            for (i = 2; i < n; i++) {
                if (src[i] < 0x80 || src[i] > 0xbf) {
                    break;
                }
            }

            if (i == n || n == 2) {
                if ((size_t) (last - d) < n) {
                    break;
                }

                d = ngx_cpymem(d, src, n);
                src += n;
                continue;
            }
        }

        /* an invalid byte, or a NUL, becomes U+FFFD */

        if (last - d < 3) {
            break;
        }

        *d++ = 0xef; *d++ = 0xbf; *d++ = 0xbd;
        src++;
    }

    return d - dst;
}


/* a key from outside (a state file): nlabels values as value_copy keeps */

ngx_uint_t
ngx_http_playarr_metrics_key_valid(u_char *key, size_t len,
    ngx_uint_t nlabels)
{
    u_char      *p, *start, *end;
    ngx_uint_t   n;
    u_char       buf[NGX_HTTP_PLAYARR_METRICS_VALUE_MAX];

    if (nlabels == 0) {
        return len == 0;
    }

    start = key;
    end = key + len;
    n = 0;

    for (p = key; /* void */ ; p++) {
        if (p < end && *p != NGX_HTTP_PLAYARR_METRICS_SEP) {
            continue;
        }

        if ((size_t) (p - start) > NGX_HTTP_PLAYARR_METRICS_VALUE_MAX
            || ngx_http_playarr_metrics_value_copy(buf, start, p - start)
               != (size_t) (p - start)
            || ngx_memcmp(buf, start, p - start) != 0)
        {
            return 0;
        }

        n++;

        if (p == end) {
            break;
        }

        start = p + 1;
    }

    return n == nlabels;
}


/*
 * reset: every series of the family disappears until it is set again,
 * but for the one series of a counter or gauge without labels, which
 * reads 0, as prom-client has it
 */

void
ngx_http_playarr_metrics_hide(ngx_http_playarr_metrics_family_t *f)
{
    ngx_uint_t                          i, n;
    ngx_http_playarr_metrics_series_t  *s;

    for (s = f->head; s; s = s->sibling) {
        s->hidden = (f->nlabels || s->bounds) ? 1 : 0;

        n = s->bounds ? s->bounds->n + 2 : 1;

        for (i = 0; i < n; i++) {
            s->values[i] = 0;
        }
    }
}


/*
 * The slot of a worker that starts: a free one, the one of the worker it
 * replaces (the master starts a worker of the same cycle and number only
 * once the previous one is gone), or a new one.  Slots of processes that
 * no longer exist (a worker of a previous cycle killed while it was still
 * serving, which nobody replaces) are freed on the way.
 */

ngx_http_playarr_metrics_slot_t *
ngx_http_playarr_metrics_slot_claim(ngx_http_playarr_metrics_store_t *store,
    ngx_uint_t worker, ngx_log_t *log)
{
    ngx_pid_t                          pid;
    ngx_uint_t                         i;
    ngx_http_playarr_metrics_sh_t     *sh;
    ngx_http_playarr_metrics_slot_t   *s, *slot;
    ngx_http_playarr_metrics_slots_t  *g;

    sh = store->sh;
    slot = NULL;

    ngx_shmtx_lock(&store->shpool->mutex);

    for (g = sh->slots; g; g = g->next) {
        for (i = 0; i < NGX_HTTP_PLAYARR_METRICS_SLOTS; i++) {
            s = ngx_http_playarr_metrics_slot_at(g, i);
            pid = (ngx_pid_t) s->pid;

            if (pid
                && !(s->generation == store->generation && s->worker == worker)
                && (pid == ngx_pid || kill(pid, 0) == 0
                    || ngx_errno != NGX_ESRCH))
            {
                continue;
            }

            if (pid) {
                s->pid = 0;
                s->count = 0;
            }

            if (slot == NULL) {
                slot = s;
            }
        }
    }

    if (slot == NULL) {
        g = ngx_slab_calloc_locked(store->shpool,
                                   NGX_HTTP_PLAYARR_METRICS_SLOTS_SIZE);
        if (g == NULL) {
            ngx_shmtx_unlock(&store->shpool->mutex);

            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "playarr_metrics_zone \"%V\" is full, the "
                          "requests of this worker are not counted in "
                          "playarr_http_requests_in_flight", &store->name);
            return NULL;
        }

        g->next = sh->slots;
        ngx_memory_barrier();
        sh->slots = g;

        slot = ngx_http_playarr_metrics_slot_at(g, 0);
    }

    slot->count = 0;
    slot->generation = store->generation;
    slot->worker = worker;
    ngx_memory_barrier();
    slot->pid = (ngx_atomic_t) ngx_pid;

    ngx_shmtx_unlock(&store->shpool->mutex);

    return slot;
}


/* a worker that exits: what it did not finish serving is no longer */

void
ngx_http_playarr_metrics_slot_release(ngx_http_playarr_metrics_slot_t *slot)
{
    slot->count = 0;
    ngx_memory_barrier();
    slot->pid = 0;
}


/* the sum of the slots of the processes that are alive */

ngx_uint_t
ngx_http_playarr_metrics_in_flight(ngx_http_playarr_metrics_store_t *store)
{
    ngx_pid_t                          pid;
    ngx_uint_t                         i;
    ngx_atomic_int_t                   n, count;
    ngx_http_playarr_metrics_slot_t   *s;
    ngx_http_playarr_metrics_slots_t  *g;

    n = 0;

    for (g = store->sh->slots; g; g = g->next) {
        for (i = 0; i < NGX_HTTP_PLAYARR_METRICS_SLOTS; i++) {
            s = ngx_http_playarr_metrics_slot_at(g, i);
            pid = (ngx_pid_t) s->pid;

            if (pid == 0) {
                continue;
            }

            count = (ngx_atomic_int_t) s->count;

            if (pid != ngx_pid && kill(pid, 0) == -1
                && ngx_errno == NGX_ESRCH)
            {
                continue;
            }

            n += ngx_max(count, 0);
        }
    }

    return (ngx_uint_t) n;
}


size_t
ngx_http_playarr_metrics_store_used(ngx_http_playarr_metrics_store_t *store)
{
    return (store->shpool->end - store->shpool->start)
           - ngx_http_playarr_metrics_store_free(store);
}


size_t
ngx_http_playarr_metrics_store_free(ngx_http_playarr_metrics_store_t *store)
{
    return store->shpool->pfree * ngx_pagesize + store->sh->arena_free;
}
