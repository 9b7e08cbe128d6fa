
/*
 * Copyright (C) Playarr metrics module authors
 */


#ifndef _NGX_HTTP_PLAYARR_METRICS_STORE_H_INCLUDED_
#define _NGX_HTTP_PLAYARR_METRICS_STORE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#include <math.h>


/*
 * The module's own symbols are not exported: nginx finds a dynamic module
 * through ngx_modules[] alone, and calls between the module's files (the
 * hot path's among them) are then direct, not through the PLT, and may be
 * inlined.
 */
#if (__GNUC__ >= 4 || __clang__)
#pragma GCC visibility push(hidden)
#endif


#define NGX_HTTP_PLAYARR_METRICS_TYPE_COUNTER    0
#define NGX_HTTP_PLAYARR_METRICS_TYPE_GAUGE      1
#define NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM  2

#define NGX_HTTP_PLAYARR_METRICS_MAX_LABELS   16
#define NGX_HTTP_PLAYARR_METRICS_MAX_BUCKETS  32

/* bytes kept of one label value, and of a whole series key */
#define NGX_HTTP_PLAYARR_METRICS_VALUE_MAX    128
#define NGX_HTTP_PLAYARR_METRICS_KEY_MAX                                      \
    ((NGX_HTTP_PLAYARR_METRICS_VALUE_MAX + 1)                                 \
     * NGX_HTTP_PLAYARR_METRICS_MAX_LABELS)

/* separates label values in a key: a byte never found in valid UTF-8 */
#define NGX_HTTP_PLAYARR_METRICS_SEP          0xff

#define NGX_HTTP_PLAYARR_METRICS_OVERFLOW     "__overflow__"

/* the hash's odd multipliers: the golden ratio's, and splitmix64's */
#define NGX_HTTP_PLAYARR_METRICS_K1           0x9e3779b97f4a7c15ULL
#define NGX_HTTP_PLAYARR_METRICS_K2           0xbf58476d1ce4e5b9ULL
#define NGX_HTTP_PLAYARR_METRICS_K3           0x94d049bb133111ebULL

/* rejected updates are counted by source and by reason */
#define NGX_HTTP_PLAYARR_METRICS_SOURCE_PUSH    0
#define NGX_HTTP_PLAYARR_METRICS_SOURCE_HEADER  1
#define NGX_HTTP_PLAYARR_METRICS_SOURCE_COUNT   2

#define NGX_HTTP_PLAYARR_METRICS_REJECT_MALFORMED  0
#define NGX_HTTP_PLAYARR_METRICS_REJECT_INVALID    1
#define NGX_HTTP_PLAYARR_METRICS_REJECT_TOO_LARGE  2
#define NGX_HTTP_PLAYARR_METRICS_REJECT_COUNT      3


typedef struct ngx_http_playarr_metrics_family_s
    ngx_http_playarr_metrics_family_t;
typedef struct ngx_http_playarr_metrics_series_s
    ngx_http_playarr_metrics_series_t;
typedef struct ngx_http_playarr_metrics_bounds_s
    ngx_http_playarr_metrics_bounds_t;


/* histogram bucket bounds, in shared memory, shared by series */
struct ngx_http_playarr_metrics_bounds_s {
    ngx_http_playarr_metrics_bounds_t  *next;
    ngx_uint_t                          n;
    double                              le[1];
};


/*
 * A series.  Created once under the slab mutex, published by one pointer
 * store after it is complete, never freed while the zone lives: readers
 * walk the hash chain and the family list without any lock.
 *
 * values[] holds, for a counter or a gauge, the value as the bits of a
 * double; for a histogram, the sum (bits of a double) and then one
 * non-cumulative count per bucket plus one for +Inf.  The key, the label
 * values separated by NGX_HTTP_PLAYARR_METRICS_SEP, follows values[].
 */
struct ngx_http_playarr_metrics_series_s {
    ngx_http_playarr_metrics_series_t  *volatile next;
    ngx_http_playarr_metrics_series_t  *volatile sibling;
    ngx_http_playarr_metrics_family_t  *family;
    ngx_http_playarr_metrics_bounds_t  *bounds;
    uint32_t                            hash;
    uint16_t                            len;
    u_char                              hidden;
    u_char                              overflow;
    ngx_atomic_t                        values[1];
};


/* a family, in shared memory */
struct ngx_http_playarr_metrics_family_s {
    ngx_http_playarr_metrics_family_t  *next;
    ngx_http_playarr_metrics_series_t  *volatile head;
    ngx_http_playarr_metrics_series_t  *overflow;
    ngx_http_playarr_metrics_bounds_t  *bounds;

    ngx_atomic_t                        nseries;
    ngx_atomic_t                        refused;
    ngx_atomic_t                        warned;

    uint32_t                            seed;
    uint64_t                            buckets;    /* of all bounds */
    ngx_uint_t                          type;
    ngx_uint_t                          nlabels;
    ngx_uint_t                          retired;

    /* name, then label names, each followed by '\0' */
    size_t                              def_len;
    u_char                              def[1];
};


/* updates refused, by source and by reason */
typedef struct {
    ngx_atomic_t  count[NGX_HTTP_PLAYARR_METRICS_SOURCE_COUNT]
                       [NGX_HTTP_PLAYARR_METRICS_REJECT_COUNT];
    ngx_atomic_t  logged[NGX_HTTP_PLAYARR_METRICS_SOURCE_COUNT];
} ngx_http_playarr_metrics_rejected_t;


/*
 * The requests a process is serving (docs/metrics.md, "Self metrics"), in a
 * slot of its own in the zone: a cache line, written by that process
 * alone.  A slot is claimed by a worker when it starts, under the slab
 * mutex, and freed when it exits; the slot of a worker that died without
 * exiting is taken over by the worker the master starts in its place (the
 * same generation and worker number), or freed by the next worker that
 * starts.  Slots come by groups of 3, chained, never freed while the zone
 * lives: the render sums them without a lock.  A group is a small slab chunk
 * (256 bytes, aligned on its size), usually found in a page the zone
 * already uses: the in-flight count does not take room from the series.
 */

#define NGX_HTTP_PLAYARR_METRICS_SLOT_SIZE    64
#define NGX_HTTP_PLAYARR_METRICS_SLOTS_SIZE   256
#define NGX_HTTP_PLAYARR_METRICS_SLOTS                                        \
    (NGX_HTTP_PLAYARR_METRICS_SLOTS_SIZE / NGX_HTTP_PLAYARR_METRICS_SLOT_SIZE \
     - 1)

typedef struct {
    ngx_atomic_t                        pid;        /* the owner, 0: free */
    ngx_atomic_t                        count;
    ngx_uint_t                          generation;
    ngx_uint_t                          worker;
} ngx_http_playarr_metrics_slot_t;


/* a group of slots: this header, then each slot in a line of its own */
typedef struct ngx_http_playarr_metrics_slots_s
    ngx_http_playarr_metrics_slots_t;

struct ngx_http_playarr_metrics_slots_s {
    ngx_http_playarr_metrics_slots_t   *next;
};


#define ngx_http_playarr_metrics_slot_at(g, i)                                \
    ((ngx_http_playarr_metrics_slot_t *)                                      \
     ((u_char *) (g) + ((i) + 1) * NGX_HTTP_PLAYARR_METRICS_SLOT_SIZE))


/* the zone's header, shpool->data */
typedef struct {
    ngx_uint_t                          magic;
    uint32_t                            seed;
    ngx_uint_t                          mask;
    ngx_http_playarr_metrics_series_t  *volatile *table;
    ngx_http_playarr_metrics_family_t  *families;
    ngx_http_playarr_metrics_bounds_t  *bounds;

    /* bump allocator for series, refilled by whole slab pages */
    u_char                             *arena;
    u_char                             *arena_end;
    ngx_atomic_t                        arena_free;

    ngx_http_playarr_metrics_rejected_t rejected;

    /* requests in flight; a generation per cycle that used the zone */
    ngx_http_playarr_metrics_slots_t   *volatile slots;
    ngx_atomic_t                        generation;
} ngx_http_playarr_metrics_sh_t;


/* a family as configured, in process memory */
typedef struct {
    ngx_str_t                           name;
    ngx_str_t                           help;
    ngx_str_t                           key;
    ngx_uint_t                          type;
    ngx_uint_t                          nlabels;
    ngx_str_t                          *labels;
    ngx_array_t                        *buckets;    /* of double */

    ngx_http_playarr_metrics_family_t  *shared;
    ngx_http_playarr_metrics_family_t  *replaced;   /* retired by bind */
    ngx_uint_t                          bounds_id;  /* into store bounds */
    ngx_array_t                        *bounds_ids; /* more, ngx_uint_t */
} ngx_http_playarr_metrics_family_conf_t;


/* a save of the state file: what failed (_SAVE_*), for the log */
typedef struct {
    ngx_uint_t                          step;
    ngx_err_t                           err;
    size_t                              size;       /* of the snapshot */
    u_char                             *temp;       /* _SAVE_TEMP_LEN */

    /* the snapshot's buffer, kept from one save to the next */
    ngx_uint_t                          keep;
    u_char                             *buf;
    size_t                              buf_size;
} ngx_http_playarr_metrics_save_t;

#define NGX_HTTP_PLAYARR_METRICS_SAVE_OK       0
#define NGX_HTTP_PLAYARR_METRICS_SAVE_DUMP     1
#define NGX_HTTP_PLAYARR_METRICS_SAVE_RAND     2
#define NGX_HTTP_PLAYARR_METRICS_SAVE_OPEN     3
#define NGX_HTTP_PLAYARR_METRICS_SAVE_INFO     4
#define NGX_HTTP_PLAYARR_METRICS_SAVE_NOT_NEW  5
#define NGX_HTTP_PLAYARR_METRICS_SAVE_WRITE    6
#define NGX_HTTP_PLAYARR_METRICS_SAVE_CLOSE    7
#define NGX_HTTP_PLAYARR_METRICS_SAVE_RENAME   8
#define NGX_HTTP_PLAYARR_METRICS_SAVE_FSYNC    9

/* the temporary file's name: the path, ".tmp." and 16 hex digits */
#define NGX_HTTP_PLAYARR_METRICS_SAVE_TEMP_LEN(path)                          \
    ((path)->len + sizeof(".tmp.") + 16)


/* the zone as seen by one cycle, shm_zone->data */
typedef struct {
    ngx_http_playarr_metrics_sh_t      *sh;
    ngx_slab_pool_t                    *shpool;
    ngx_str_t                           name;
    ngx_uint_t                          max_series;
    ngx_uint_t                          fresh;      /* made, not reused */
    ngx_uint_t                          generation; /* of this cycle */

    ngx_array_t                         families;   /* family_conf_t */
    ngx_array_t                         buckets;    /* ngx_array_t * */
    ngx_http_playarr_metrics_bounds_t **bounds;     /* by bounds_id */
} ngx_http_playarr_metrics_store_t;


/* the names of the types and sources above, as the output and log say */
extern const char  *ngx_http_playarr_metrics_types[];
extern const char  *ngx_http_playarr_metrics_sources[];


ngx_int_t ngx_http_playarr_metrics_store_init(ngx_shm_zone_t *shm_zone,
    void *data);

ngx_int_t ngx_http_playarr_metrics_store_bounds(
    ngx_http_playarr_metrics_store_t *store, ngx_pool_t *pool,
    ngx_array_t *buckets);

ngx_http_playarr_metrics_series_t *ngx_http_playarr_metrics_series(
    ngx_http_playarr_metrics_store_t *store,
    ngx_http_playarr_metrics_family_conf_t *fc,
    ngx_http_playarr_metrics_bounds_t *bounds, u_char *key, size_t len);
ngx_http_playarr_metrics_series_t *ngx_http_playarr_metrics_series_find(
    ngx_http_playarr_metrics_store_t *store,
    ngx_http_playarr_metrics_family_conf_t *fc, u_char *key, size_t len);

size_t ngx_http_playarr_metrics_value_copy(u_char *dst, u_char *src,
    size_t len);
u_char *ngx_http_playarr_metrics_escape(u_char *dst, u_char *src, size_t len,
    size_t max, ngx_uint_t quotes);
size_t ngx_http_playarr_metrics_utf8_copy(u_char *dst, u_char *src,
    size_t len, size_t max);
ngx_uint_t ngx_http_playarr_metrics_key_valid(u_char *key, size_t len,
    ngx_uint_t nlabels);

void ngx_http_playarr_metrics_hide(ngx_http_playarr_metrics_family_t *f);

u_char *ngx_http_playarr_metrics_state_dump(
    ngx_http_playarr_metrics_store_t *store, size_t *len, ngx_log_t *log);
ngx_int_t ngx_http_playarr_metrics_state_load(
    ngx_http_playarr_metrics_store_t *store, u_char *data, size_t len,
    const char *from, ngx_log_t *log);
ngx_int_t ngx_http_playarr_metrics_state_take(
    ngx_http_playarr_metrics_store_t *store, u_char **buf, size_t *size,
    size_t *len);

ngx_http_playarr_metrics_slot_t *ngx_http_playarr_metrics_slot_claim(
    ngx_http_playarr_metrics_store_t *store, ngx_uint_t worker,
    ngx_log_t *log);
void ngx_http_playarr_metrics_slot_release(
    ngx_http_playarr_metrics_slot_t *slot);
ngx_uint_t ngx_http_playarr_metrics_in_flight(
    ngx_http_playarr_metrics_store_t *store);

size_t ngx_http_playarr_metrics_store_used(
    ngx_http_playarr_metrics_store_t *store);
size_t ngx_http_playarr_metrics_store_free(
    ngx_http_playarr_metrics_store_t *store);


#define ngx_http_playarr_metrics_series_key(s)                                \
    ((u_char *) &(s)->values[(s)->bounds ? (s)->bounds->n + 2 : 1])

#define ngx_http_playarr_metrics_series_size(bounds, len)                     \
    (offsetof(ngx_http_playarr_metrics_series_t, values)                      \
     + sizeof(ngx_atomic_t) * ((bounds) ? (bounds)->n + 2 : 1) + (len))


static ngx_inline double
ngx_http_playarr_metrics_double(ngx_atomic_uint_t bits)
{
    double  v;

    ngx_memcpy(&v, &bits, sizeof(double));

    return v;
}


/*
 * A keyed multiply-xorshift hash over 8-byte words: the seed (per zone,
 * and per family) and the length make the first state, each word is
 * mixed in by a multiplication whose high half is folded back down, so
 * that label values chosen by clients cannot be lined up into one chain
 * in advance.  The last word is the one that ends the key, overlapping
 * the one before it; a key shorter than 8 bytes is read in pieces, never
 * past its end.  Inlined: the recent requests cache of a worker
 * (record.c) hashes with it on every request.
 */

static ngx_inline uint32_t
ngx_http_playarr_metrics_hash(uint32_t seed, u_char *key, size_t len)
{
    u_char    *last;
    uint32_t   lo, hi;
    uint64_t   h, w;

    h = (seed ^ ((uint64_t) len << 32)) * NGX_HTTP_PLAYARR_METRICS_K1;

    if (len >= 8) {
        last = key + len - 8;

        while (key < last) {
            ngx_memcpy(&w, key, 8);
            h = (h ^ w) * NGX_HTTP_PLAYARR_METRICS_K2;
            h ^= h >> 32;
            key += 8;
        }

        ngx_memcpy(&w, last, 8);

    } else if (len >= 4) {
        ngx_memcpy(&lo, key, 4);
        ngx_memcpy(&hi, key + len - 4, 4);
        w = (uint64_t) hi << 32 | lo;

    } else if (len) {
        w = key[0] | (uint64_t) key[len / 2] << 8
            | (uint64_t) key[len - 1] << 16;

    } else {
        w = 0;
    }

    h = (h ^ w) * NGX_HTTP_PLAYARR_METRICS_K2;
    h ^= h >> 32;
    h *= NGX_HTTP_PLAYARR_METRICS_K3;

    return (uint32_t) (h ^ (h >> 29));
}


/*
 * The operations on a series' values, inlined where a request records
 * (record.c) and where updates are applied (update.c).
 *
 * A value never becomes infinite or NaN by addition: NGX_DECLINED, the
 * series unchanged, when the sum would not be a finite number.
 */

static ngx_inline ngx_int_t
ngx_http_playarr_metrics_add(ngx_http_playarr_metrics_series_t *s, double v)
{
    double             d;
    ngx_atomic_uint_t  old, new;

    do {
        old = s->values[0];
        ngx_memcpy(&d, &old, sizeof(double));
        d += v;

        if (!isfinite(d)) {
            return NGX_DECLINED;
        }

        ngx_memcpy(&new, &d, sizeof(double));

    } while (!ngx_atomic_cmp_set(&s->values[0], old, new));

    s->hidden = 0;

    return NGX_OK;
}


static ngx_inline void
ngx_http_playarr_metrics_set(ngx_http_playarr_metrics_series_t *s, double v)
{
    ngx_atomic_uint_t  new;

    ngx_memcpy(&new, &v, sizeof(double));

    s->values[0] = new;
    s->hidden = 0;
}


/* the sum first: an observation it cannot hold is not counted at all */

static ngx_inline ngx_int_t
ngx_http_playarr_metrics_observe(ngx_http_playarr_metrics_series_t *s,
    double v)
{
    ngx_uint_t                          i, n;
    ngx_http_playarr_metrics_bounds_t  *bounds;

    if (ngx_http_playarr_metrics_add(s, v) != NGX_OK) {
        return NGX_DECLINED;
    }

    bounds = s->bounds;
    n = bounds->n;

    for (i = 0; i < n; i++) {
        if (v <= bounds->le[i]) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&s->values[1 + i], 1);

    return NGX_OK;
}


#if (__GNUC__ >= 4 || __clang__)
#pragma GCC visibility pop
#endif


#endif /* _NGX_HTTP_PLAYARR_METRICS_STORE_H_INCLUDED_ */
