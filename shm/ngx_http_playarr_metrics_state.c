
/*
 * Copyright (C) Playarr metrics module authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http_playarr_metrics_store.h>


/*
 * A snapshot of every series of a store, the format of the state file:
 * taken and loaded here, written and read by persist.c.  A zone of
 * another size on reload starts from zero, without one.
 *
 *   header   "PLAYARRM", version, byte order mark, payload length, crc32
 *   payload  per family: its definition (name and label names, as the
 *            zone keeps it), type, number of series; per series: key
 *            length, hidden flag, bucket bounds, key, values
 */


#define NGX_HTTP_PLAYARR_METRICS_STATE_MAGIC    "PLAYARRM"
#define NGX_HTTP_PLAYARR_METRICS_STATE_VERSION  1
#define NGX_HTTP_PLAYARR_METRICS_STATE_BOM      0x01020304

/* a family's name as logged: 128 bytes at most, each as \xHH at worst */
#define NGX_HTTP_PLAYARR_METRICS_STATE_NAME_MAX  128
#define NGX_HTTP_PLAYARR_METRICS_STATE_NAME                                  \
    (4 * NGX_HTTP_PLAYARR_METRICS_STATE_NAME_MAX + sizeof("...") + 1)


typedef struct {
    u_char                              magic[8];
    uint32_t                            version;
    uint32_t                            bom;
    uint64_t                            len;
    uint32_t                            crc;
    uint32_t                            nfamilies;
} ngx_http_playarr_metrics_state_header_t;


typedef struct {
    u_char                             *start;
    u_char                             *pos;
    u_char                             *end;
    ngx_log_t                          *log;      /* NULL: says nothing */
    size_t                              failed;   /* the size not had */
} ngx_http_playarr_metrics_state_buf_t;


static ngx_int_t ngx_http_playarr_metrics_state_put(
    ngx_http_playarr_metrics_state_buf_t *b, void *data, size_t len);
static ngx_int_t ngx_http_playarr_metrics_state_snapshot(
    ngx_http_playarr_metrics_store_t *store,
    ngx_http_playarr_metrics_state_buf_t *b);
static uint32_t ngx_http_playarr_metrics_state_crc32(u_char *p, size_t len);
static ngx_int_t ngx_http_playarr_metrics_state_series(
    ngx_http_playarr_metrics_state_buf_t *b,
    ngx_http_playarr_metrics_series_t *s);
static void *ngx_http_playarr_metrics_state_get(
    ngx_http_playarr_metrics_state_buf_t *b, size_t len);
static ngx_int_t ngx_http_playarr_metrics_state_family(
    ngx_http_playarr_metrics_store_t *store,
    ngx_http_playarr_metrics_state_buf_t *b, ngx_uint_t apply,
    const char *from, ngx_log_t *log);
static ngx_http_playarr_metrics_family_conf_t *
    ngx_http_playarr_metrics_state_find(
    ngx_http_playarr_metrics_store_t *store, u_char *def, size_t len,
    ngx_uint_t *same);
static ngx_http_playarr_metrics_bounds_t *
    ngx_http_playarr_metrics_state_bounds(
    ngx_http_playarr_metrics_store_t *store,
    ngx_http_playarr_metrics_family_conf_t *fc, double *le, ngx_uint_t n);
static ngx_uint_t ngx_http_playarr_metrics_state_coarser(
    ngx_http_playarr_metrics_bounds_t *bounds, double *le, ngx_uint_t n);
static ngx_int_t ngx_http_playarr_metrics_state_buckets(
    ngx_http_playarr_metrics_series_t *s, double *le, ngx_uint_t n,
    uint64_t *values);


#if (NGX_HAVE_LITTLE_ENDIAN)

/* ngx_crc32_long()'s CRC, 8 bytes a step: filled at the first snapshot */
static uint32_t  ngx_http_playarr_metrics_state_crc[8][256];

#endif


/*
 * The snapshot, in memory from malloc(); NULL on failure.  It reads the
 * zone without a lock, as a scrape does, and may run in a thread of
 * nginx's pool (the periodic save): with log NULL it calls nothing that
 * logs, and what it could not allocate is left in *len.
 *
 * Series are never freed nor moved while their zone lives (a reset only
 * zeroes their values), and a family's list only grows at its head, each
 * series published complete: the head read once, the list behind it is
 * fixed, whatever another worker or this one creates meanwhile.
 */

u_char *
ngx_http_playarr_metrics_state_dump(ngx_http_playarr_metrics_store_t *store,
    size_t *len, ngx_log_t *log)
{
    ngx_http_playarr_metrics_state_buf_t  b;

    ngx_memzero(&b, sizeof(ngx_http_playarr_metrics_state_buf_t));

    b.log = log;

    if (ngx_http_playarr_metrics_state_snapshot(store, &b) != NGX_OK) {
        if (b.start) {
            ngx_free(b.start);
        }

        *len = b.failed;

        return NULL;
    }

    *len = b.pos - b.start;

    return b.start;
}


/*
 * The snapshot, quietly (a thread of nginx's pool takes it): into *buf, a
 * buffer of *size bytes kept from an earlier one or NULL, grown as
 * needed (*buf and *size then follow); its length in *len.  NGX_ERROR:
 * no memory, *len is the size not had, *buf is still the caller's to free.
 */

ngx_int_t
ngx_http_playarr_metrics_state_take(ngx_http_playarr_metrics_store_t *store,
    u_char **buf, size_t *size, size_t *len)
{
    ngx_int_t                             rc;
    ngx_http_playarr_metrics_state_buf_t  b;

    ngx_memzero(&b, sizeof(ngx_http_playarr_metrics_state_buf_t));

    b.start = *buf;
    b.end = *buf ? *buf + *size : NULL;

    rc = ngx_http_playarr_metrics_state_snapshot(store, &b);

    *buf = b.start;
    *size = b.end - b.start;
    *len = (rc == NGX_OK) ? (size_t) (b.pos - b.start) : b.failed;

    return rc;
}


/* the snapshot into b, from b->start on: a buffer reused, or none yet */

static ngx_int_t
ngx_http_playarr_metrics_state_snapshot(
    ngx_http_playarr_metrics_store_t *store,
    ngx_http_playarr_metrics_state_buf_t *b)
{
    size_t                                   at;
    uint32_t                                 u32;
    ngx_uint_t                               i, n;
    ngx_http_playarr_metrics_series_t       *s, *head;
    ngx_http_playarr_metrics_family_t       *f;
    ngx_http_playarr_metrics_family_conf_t  *fc;
    ngx_http_playarr_metrics_state_header_t  h;

    ngx_memzero(&h, sizeof(ngx_http_playarr_metrics_state_header_t));

    b->pos = b->start;

    if (ngx_http_playarr_metrics_state_put(b, &h, sizeof(h)) != NGX_OK) {
        return NGX_ERROR;
    }

    fc = store->families.elts;

    for (i = 0; i < store->families.nelts; i++) {
        f = fc[i].shared;

        u32 = (uint32_t) f->def_len;

        if (ngx_http_playarr_metrics_state_put(b, &u32, 4) != NGX_OK
            || ngx_http_playarr_metrics_state_put(b, f->def, f->def_len)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        u32 = (uint32_t) f->type;

        if (ngx_http_playarr_metrics_state_put(b, &u32, 4) != NGX_OK) {
            return NGX_ERROR;
        }

        /* the number of series, known once they are written */

        at = b->pos - b->start;

        if (ngx_http_playarr_metrics_state_put(b, &u32, 4) != NGX_OK) {
            return NGX_ERROR;
        }

        head = f->head;
        ngx_memory_barrier();

        n = 0;

        for (s = head; s; s = s->sibling) {
            if (ngx_http_playarr_metrics_state_series(b, s) != NGX_OK) {
                return NGX_ERROR;
            }

            n++;
        }

        u32 = (uint32_t) n;
        ngx_memcpy(b->start + at, &u32, 4);
    }

    ngx_memcpy(h.magic, NGX_HTTP_PLAYARR_METRICS_STATE_MAGIC, 8);
    h.version = NGX_HTTP_PLAYARR_METRICS_STATE_VERSION;
    h.bom = NGX_HTTP_PLAYARR_METRICS_STATE_BOM;
    h.len = (b->pos - b->start) - sizeof(h);
    h.crc = ngx_http_playarr_metrics_state_crc32(b->start + sizeof(h), h.len);
    h.nfamilies = (uint32_t) store->families.nelts;

    ngx_memcpy(b->start, &h, sizeof(h));

    return NGX_OK;
}


/*
 * The CRC-32 of ngx_crc32_long(), which the load checks, computed with 8
 * tables ("slicing by 8"): a byte costs a few cycles less, what a save of
 * 300,000 series, 45 MB, spends most of its time on.  Only one snapshot
 * is taken at a time in a process, the tables are filled by the first.
 */

static uint32_t
ngx_http_playarr_metrics_state_crc32(u_char *p, size_t len)
{
#if (NGX_HAVE_LITTLE_ENDIAN)
    uint32_t     c, (*t)[256];
    uint64_t     w;
    ngx_uint_t   i, k;

    t = ngx_http_playarr_metrics_state_crc;

    if (t[0][1] == 0) {
        for (i = 0; i < 256; i++) {
            c = (uint32_t) i;

            for (k = 0; k < 8; k++) {
                c = (c & 1) ? (c >> 1) ^ 0xedb88320 : c >> 1;
            }

            t[0][i] = c;
        }

        for (i = 0; i < 256; i++) {
            for (k = 1; k < 8; k++) {
                t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xff];
            }
        }
    }

    c = 0xffffffff;

    while (len && ((uintptr_t) p & 7)) {
        c = t[0][(c ^ *p++) & 0xff] ^ (c >> 8);
        len--;
    }

    while (len >= 8) {
        ngx_memcpy(&w, p, 8);
        w ^= c;

        c = t[7][w & 0xff] ^ t[6][(w >> 8) & 0xff]
            ^ t[5][(w >> 16) & 0xff] ^ t[4][(w >> 24) & 0xff]
            ^ t[3][(w >> 32) & 0xff] ^ t[2][(w >> 40) & 0xff]
            ^ t[1][(w >> 48) & 0xff] ^ t[0][w >> 56];

        p += 8;
        len -= 8;
    }

    while (len--) {
        c = t[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    }

    return c ^ 0xffffffff;

#else

    return ngx_crc32_long(p, len);

#endif
}


static ngx_int_t
ngx_http_playarr_metrics_state_series(ngx_http_playarr_metrics_state_buf_t *b,
    ngx_http_playarr_metrics_series_t *s)
{
    u_char      *p;
    uint16_t     u16;
    uint32_t     u32;
    uint64_t     v;
    ngx_uint_t   i, nvalues;

    u16 = s->len;
    u32 = s->bounds ? (uint32_t) s->bounds->n : 0;
    nvalues = s->bounds ? s->bounds->n + 2 : 1;

    if (ngx_http_playarr_metrics_state_put(b, &u16, 2) != NGX_OK
        || ngx_http_playarr_metrics_state_put(b, &s->hidden, 1) != NGX_OK
        || ngx_http_playarr_metrics_state_put(b, &s->overflow, 1) != NGX_OK
        || ngx_http_playarr_metrics_state_put(b, &u32, 4) != NGX_OK
        || (u32 && ngx_http_playarr_metrics_state_put(b, s->bounds->le,
                                                      u32 * sizeof(double))
                   != NGX_OK)
        || ngx_http_playarr_metrics_state_put(b,
                                    ngx_http_playarr_metrics_series_key(s),
                                    s->len)
           != NGX_OK
        || ngx_http_playarr_metrics_state_put(b, NULL,
                                              nvalues * sizeof(uint64_t))
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* each value read whole, as other workers keep adding to them */

    p = b->pos - nvalues * sizeof(uint64_t);

    for (i = 0; i < nvalues; i++) {
        v = s->values[i];
        p = ngx_cpymem(p, &v, sizeof(uint64_t));
    }

    return NGX_OK;
}


/* data NULL: room for len bytes, left to the caller to fill */

static ngx_int_t
ngx_http_playarr_metrics_state_put(ngx_http_playarr_metrics_state_buf_t *b,
    void *data, size_t len)
{
    u_char  *p;
    size_t   size, used;

    if ((size_t) (b->end - b->pos) < len) {
        used = b->pos - b->start;
        size = ngx_max(2 * (size_t) (b->end - b->start), used + len);
        size = ngx_max(size, 65536);

        if (b->log) {
            p = ngx_alloc(size, b->log);

        } else {
            p = malloc(size);
        }

        if (p == NULL) {
            b->failed = size;
            return NGX_ERROR;
        }

        if (b->start) {
            ngx_memcpy(p, b->start, used);
            ngx_free(b->start);
        }

        b->start = p;
        b->pos = p + used;
        b->end = p + size;
    }

    if (data) {
        b->pos = ngx_cpymem(b->pos, data, len);

    } else {
        b->pos += len;
    }

    return NGX_OK;
}


static void *
ngx_http_playarr_metrics_state_get(ngx_http_playarr_metrics_state_buf_t *b,
    size_t len)
{
    u_char  *p;

    if ((size_t) (b->end - b->pos) < len) {
        return NULL;
    }

    p = b->pos;
    b->pos += len;

    return p;
}


/*
 * Puts a snapshot into the store.  A snapshot that is not one, or is
 * damaged, is refused whole; a family no longer configured is dropped;
 * one whose type or labels changed starts from zero; a histogram whose
 * buckets changed keeps what the old bounds still say.
 */

ngx_int_t
ngx_http_playarr_metrics_state_load(ngx_http_playarr_metrics_store_t *store,
    u_char *data, size_t len, const char *from, ngx_log_t *log)
{
    ngx_uint_t                                i, apply;
    ngx_http_playarr_metrics_state_buf_t      b;
    ngx_http_playarr_metrics_state_header_t   h;

    if (len < 8
        || ngx_memcmp(data, NGX_HTTP_PLAYARR_METRICS_STATE_MAGIC, 8) != 0)
    {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "%s is not a playarr_metrics state file, "
                      "metrics start from zero", from);
        return NGX_DECLINED;
    }

    if (len < sizeof(h)) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "%s is truncated, metrics start from zero", from);
        return NGX_DECLINED;
    }

    ngx_memcpy(&h, data, sizeof(h));

    if (h.bom != NGX_HTTP_PLAYARR_METRICS_STATE_BOM) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "%s was written on another architecture, "
                      "metrics start from zero", from);
        return NGX_DECLINED;
    }

    if (h.version != NGX_HTTP_PLAYARR_METRICS_STATE_VERSION) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "%s has version %uD, not %d, metrics start from zero",
                      from, h.version, NGX_HTTP_PLAYARR_METRICS_STATE_VERSION);
        return NGX_DECLINED;
    }

    if (h.len != len - sizeof(h)) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "%s is truncated, metrics start from zero", from);
        return NGX_DECLINED;
    }

    if (ngx_crc32_long(data + sizeof(h), h.len) != h.crc) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "%s is corrupt (checksum), metrics start from zero",
                      from);
        return NGX_DECLINED;
    }

    /*
     * Walked twice: first only checked, so that a snapshot whose checksum
     * is right but whose structure is not restores nothing at all
     */

    for (apply = 0; apply < 2; apply++) {
        b.start = data;
        b.pos = data + sizeof(h);
        b.end = data + len;

        for (i = 0; i < h.nfamilies; i++) {
            if (ngx_http_playarr_metrics_state_family(store, &b, apply, from,
                                                      log)
                != NGX_OK)
            {
                ngx_log_error(NGX_LOG_WARN, log, 0,
                              "%s is corrupt, metrics start from zero",
                              from);
                return NGX_DECLINED;
            }
        }

        if (b.pos != b.end) {
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "%s is corrupt, metrics start from zero", from);
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_playarr_metrics_state_family(ngx_http_playarr_metrics_store_t *store,
    ngx_http_playarr_metrics_state_buf_t *b, ngx_uint_t apply,
    const char *from, ngx_log_t *log)
{
    u_char                                  *def, *key, *hidden, *p;
    uint16_t                                 klen;
    uint32_t                                 dlen, type, nseries, nle;
    ngx_uint_t                               i, same, skipped;
    ngx_http_playarr_metrics_series_t       *s;
    ngx_http_playarr_metrics_bounds_t       *bounds;
    ngx_http_playarr_metrics_family_conf_t  *fc;
    double               le[NGX_HTTP_PLAYARR_METRICS_MAX_BUCKETS];
    uint64_t             values[NGX_HTTP_PLAYARR_METRICS_MAX_BUCKETS + 2];
    u_char               name[NGX_HTTP_PLAYARR_METRICS_STATE_NAME];

    if (ngx_http_playarr_metrics_state_get(b, 4) == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(&dlen, b->pos - 4, 4);

    def = ngx_http_playarr_metrics_state_get(b, dlen);

    if (def == NULL || dlen == 0 || def[dlen - 1] != '\0'
        || ngx_http_playarr_metrics_state_get(b, 8) == NULL)
    {
        return NGX_ERROR;
    }

    ngx_memcpy(&type, b->pos - 8, 4);
    ngx_memcpy(&nseries, b->pos - 4, 4);

    /* the file is the worker user's: what it names is logged escaped */

    *ngx_http_playarr_metrics_escape(name, def, ngx_strlen(def),
                                     NGX_HTTP_PLAYARR_METRICS_STATE_NAME_MAX, 1)
        = '\0';

    fc = ngx_http_playarr_metrics_state_find(store, def, dlen, &same);

    if (!apply) {
        /* the check: the keys of a known family, nothing said */

        if (fc && (!same || fc->type != type)) {
            fc = NULL;
        }

    } else if (fc == NULL) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "%s: family \"%s\" is no longer configured, dropped",
                      from, name);

    } else if (!same || fc->type != type) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "%s: family \"%s\" changed its type or labels, "
                      "it starts from zero", from, name);
        fc = NULL;
    }

    skipped = 0;

    for (i = 0; i < nseries; i++) {

        if (ngx_http_playarr_metrics_state_get(b, 8) == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(&klen, b->pos - 8, 2);
        hidden = b->pos - 6;
        ngx_memcpy(&nle, b->pos - 4, 4);

        if (nle > NGX_HTTP_PLAYARR_METRICS_MAX_BUCKETS
            || (nle != 0) != (type == NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM))
        {
            return NGX_ERROR;
        }

        /* copied out: nothing in the snapshot is aligned */

        p = ngx_http_playarr_metrics_state_get(b, nle * sizeof(double));
        if (p == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(le, p, nle * sizeof(double));

        key = ngx_http_playarr_metrics_state_get(b, klen);
        if (key == NULL) {
            return NGX_ERROR;
        }

        p = ngx_http_playarr_metrics_state_get(b,
                                       (nle ? nle + 2 : 1) * sizeof(uint64_t));
        if (p == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(values, p, (nle ? nle + 2 : 1) * sizeof(uint64_t));

        if (fc == NULL) {
            continue;
        }

        if (!ngx_http_playarr_metrics_key_valid(key, klen, fc->nlabels)) {
            return NGX_ERROR;
        }

        if (!apply) {
            continue;
        }

        bounds = NULL;

        if (nle) {
            bounds = ngx_http_playarr_metrics_state_bounds(store, fc, le, nle);

            if (bounds == NULL) {
                skipped++;
                continue;
            }
        }

        s = ngx_http_playarr_metrics_series(store, fc, bounds, key, klen);

        if (nle == 0) {
            s->values[0] = values[0];

        } else if (ngx_http_playarr_metrics_state_buckets(s, le, nle, values)
                   != NGX_OK)
        {
            skipped++;
            continue;
        }

        s->hidden = *hidden;
    }

    if (skipped) {
        /* only the applying walk skips */
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "%s: family \"%s\" changed its buckets, %ui series "
                      "could not be restored", from, name, skipped);
    }

    return NGX_OK;
}


static ngx_http_playarr_metrics_family_conf_t *
ngx_http_playarr_metrics_state_find(ngx_http_playarr_metrics_store_t *store,
    u_char *def, size_t len, ngx_uint_t *same)
{
    ngx_uint_t                               i;
    ngx_http_playarr_metrics_family_conf_t  *fc;

    fc = store->families.elts;

    for (i = 0; i < store->families.nelts; i++) {
        if (ngx_strcmp(fc[i].shared->def, def) == 0) {
            *same = (fc[i].shared->def_len == len
                     && ngx_memcmp(fc[i].shared->def, def, len) == 0);
            return &fc[i];
        }
    }

    return NULL;
}


/*
 * The bounds a saved histogram series goes into: configured ones equal to
 * the saved bounds, else the family's if the saved counts map onto them,
 * else any configured ones they map onto; NULL if none.
 */

static ngx_http_playarr_metrics_bounds_t *
ngx_http_playarr_metrics_state_bounds(ngx_http_playarr_metrics_store_t *store,
    ngx_http_playarr_metrics_family_conf_t *fc, double *le, ngx_uint_t n)
{
    ngx_uint_t                          i;
    ngx_http_playarr_metrics_bounds_t  *bounds;

    for (i = 0; i < store->buckets.nelts; i++) {
        bounds = store->bounds[i];

        if (bounds->n == n
            && ngx_memcmp(bounds->le, le, n * sizeof(double)) == 0)
        {
            return bounds;
        }
    }

    if (ngx_http_playarr_metrics_state_coarser(fc->shared->bounds, le, n)) {
        return fc->shared->bounds;
    }

    for (i = 0; i < store->buckets.nelts; i++) {
        bounds = store->bounds[i];

        if (ngx_http_playarr_metrics_state_coarser(bounds, le, n)) {
            return bounds;
        }
    }

    return NULL;
}


/* each of the bounds is one of the saved bounds */

static ngx_uint_t
ngx_http_playarr_metrics_state_coarser(
    ngx_http_playarr_metrics_bounds_t *bounds, double *le, ngx_uint_t n)
{
    ngx_uint_t  i, j;

    for (i = 0, j = 0; i < bounds->n; i++) {
        while (j < n && le[j] < bounds->le[i]) {
            j++;
        }

        if (j == n || le[j] != bounds->le[i]) {
            return 0;
        }
    }

    return 1;
}


/*
 * The saved counts are per bucket; the series' bounds must be a subset of
 * the saved ones (the same, or coarser) for the counts to carry over.
 */

static ngx_int_t
ngx_http_playarr_metrics_state_buckets(ngx_http_playarr_metrics_series_t *s,
    double *le, ngx_uint_t n, uint64_t *values)
{
    uint64_t                            count;
    ngx_uint_t                          i, j;
    ngx_http_playarr_metrics_bounds_t  *bounds;

    bounds = s->bounds;

    if (!ngx_http_playarr_metrics_state_coarser(bounds, le, n)) {
        return NGX_DECLINED;
    }

    /* counts that would wrap when added up are not counts */

    count = 0;

    for (j = 0; j <= n; j++) {
        if (count + values[1 + j] < count) {
            return NGX_DECLINED;
        }

        count += values[1 + j];
    }

    s->values[0] = values[0];

    count = 0;
    j = 0;

    for (i = 0; i <= bounds->n; i++) {
        while (j < n && (i == bounds->n || le[j] <= bounds->le[i])) {
            count += values[1 + j];
            j++;
        }

        if (i == bounds->n) {
            count += values[1 + n];
        }

        s->values[1 + i] = count;
        count = 0;
    }

    return NGX_OK;
}
