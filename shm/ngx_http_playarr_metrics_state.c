
/*
 * Copyright (C) Playarr metrics module authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http_playarr_metrics_store.h>
#include <ngx_http_playarr_metrics_file.h>

#include <openssl/rand.h>


/*
 * A snapshot of every series of a store, used for the state file and to
 * carry values into a zone of another size on reload.
 *
 *   header   "PLAYARRM", version, byte order mark, payload length, crc32
 *   payload  per family: its definition (name and label names, as the
 *            zone keeps it), type, number of series; per series: key
 *            length, hidden flag, bucket bounds, key, values
 */


#define NGX_HTTP_PLAYARR_METRICS_STATE_MAGIC    "PLAYARRM"
#define NGX_HTTP_PLAYARR_METRICS_STATE_VERSION  1
#define NGX_HTTP_PLAYARR_METRICS_STATE_BOM      0x01020304

/*
 * The largest state file read: a snapshot holds less than its zone, but
 * one written by a zone of another size is read too
 */
#define NGX_HTTP_PLAYARR_METRICS_STATE_ZONES    4

/* a family's name as logged: 128 bytes at most, each as \xHH at worst */
#define NGX_HTTP_PLAYARR_METRICS_STATE_NAME_MAX  128
#define NGX_HTTP_PLAYARR_METRICS_STATE_NAME                                  \
    (4 * NGX_HTTP_PLAYARR_METRICS_STATE_NAME_MAX + sizeof("...") + 1)
#define NGX_HTTP_PLAYARR_METRICS_STATE_MIN_CAP  (64 * 1024 * 1024)


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
static ngx_uint_t ngx_http_playarr_metrics_state_file(ngx_str_t *path,
    u_char *temp, u_char *data, size_t len, ngx_err_t *err);
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
static ngx_http_playarr_metrics_layout_t *
    ngx_http_playarr_metrics_state_layout(
    ngx_http_playarr_metrics_store_t *store,
    ngx_http_playarr_metrics_family_conf_t *fc, double *le, ngx_uint_t n);
static ngx_uint_t ngx_http_playarr_metrics_state_coarser(
    ngx_http_playarr_metrics_layout_t *l, double *le, ngx_uint_t n);
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
    u32 = s->layout ? (uint32_t) s->layout->n : 0;
    nvalues = s->layout ? s->layout->n + 2 : 1;

    if (ngx_http_playarr_metrics_state_put(b, &u16, 2) != NGX_OK
        || ngx_http_playarr_metrics_state_put(b, &s->hidden, 1) != NGX_OK
        || ngx_http_playarr_metrics_state_put(b, &s->overflow, 1) != NGX_OK
        || ngx_http_playarr_metrics_state_put(b, &u32, 4) != NGX_OK
        || (u32 && ngx_http_playarr_metrics_state_put(b, s->layout->le,
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
    ngx_http_playarr_metrics_layout_t       *layout;
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
            || (nle != 0) != (type == NGX_HTTP_PLAYARR_METRICS_HISTOGRAM))
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

        layout = NULL;

        if (nle) {
            layout = ngx_http_playarr_metrics_state_layout(store, fc, le, nle);

            if (layout == NULL) {
                skipped++;
                continue;
            }
        }

        s = ngx_http_playarr_metrics_series(store, fc, layout, key, klen);

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
 * The layout a saved histogram series goes into: the configured one with
 * the same bounds, else the family's if the saved counts map onto it,
 * else any configured one they map onto; NULL if none.
 */

static ngx_http_playarr_metrics_layout_t *
ngx_http_playarr_metrics_state_layout(ngx_http_playarr_metrics_store_t *store,
    ngx_http_playarr_metrics_family_conf_t *fc, double *le, ngx_uint_t n)
{
    ngx_uint_t                          i;
    ngx_http_playarr_metrics_layout_t  *l;

    for (i = 0; i < store->layouts.nelts; i++) {
        l = store->shared_layouts[i];

        if (l->n == n && ngx_memcmp(l->le, le, n * sizeof(double)) == 0) {
            return l;
        }
    }

    if (ngx_http_playarr_metrics_state_coarser(fc->shared->layout, le, n)) {
        return fc->shared->layout;
    }

    for (i = 0; i < store->layouts.nelts; i++) {
        l = store->shared_layouts[i];

        if (ngx_http_playarr_metrics_state_coarser(l, le, n)) {
            return l;
        }
    }

    return NULL;
}


/* every bound of the layout is one of the saved bounds */

static ngx_uint_t
ngx_http_playarr_metrics_state_coarser(ngx_http_playarr_metrics_layout_t *l,
    double *le, ngx_uint_t n)
{
    ngx_uint_t  i, j;

    for (i = 0, j = 0; i < l->n; i++) {
        while (j < n && le[j] < l->le[i]) {
            j++;
        }

        if (j == n || le[j] != l->le[i]) {
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
    ngx_http_playarr_metrics_layout_t  *l;

    l = s->layout;

    if (!ngx_http_playarr_metrics_state_coarser(l, le, n)) {
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

    for (i = 0; i <= l->n; i++) {
        while (j < n && (i == l->n || le[j] <= l->le[i])) {
            count += values[1 + j];
            j++;
        }

        if (i == l->n) {
            count += values[1 + n];
        }

        s->values[1 + i] = count;
        count = 0;
    }

    return NGX_OK;
}


/*
 * The state file: written to a new temporary file of a random name in its
 * directory, then renamed over it.  The directory is writable by the
 * worker user, and the master saves as root at exit: the temporary file
 * is created O_EXCL|O_NOFOLLOW (a link or a file planted there is never
 * opened), and what was opened is checked to be the new, regular file of
 * this process's user before anything is written.
 */

ngx_int_t
ngx_http_playarr_metrics_state_save(ngx_http_playarr_metrics_store_t *store,
    ngx_str_t *path, ngx_log_t *log)
{
    ngx_int_t                          rc;
    ngx_http_playarr_metrics_save_t    sv;

    sv.temp = ngx_alloc(NGX_HTTP_PLAYARR_METRICS_SAVE_TEMP_LEN(path), log);
    if (sv.temp == NULL) {
        return NGX_ERROR;
    }

    sv.keep = 0;

    rc = ngx_http_playarr_metrics_state_save_quiet(store, path, &sv);

    if (rc != NGX_OK) {
        ngx_http_playarr_metrics_state_save_log(path, &sv, log);
    }

    ngx_free(sv.temp);

    return rc;
}


/*
 * The save itself, logging nothing and taking no lock: it runs in a
 * thread of nginx's pool too.  On failure sv->step says what failed and
 * sv->err why; sv->temp has room for the temporary file's name.  With
 * sv->keep, the snapshot's buffer is kept in sv for the next save (no
 * new pages to fault in, nothing copied as it grows, each time).
 */

ngx_int_t
ngx_http_playarr_metrics_state_save_quiet(
    ngx_http_playarr_metrics_store_t *store, ngx_str_t *path,
    ngx_http_playarr_metrics_save_t *sv)
{
    ngx_int_t                             rc;
    ngx_http_playarr_metrics_state_buf_t  b;

    sv->step = NGX_HTTP_PLAYARR_METRICS_SAVE_OK;
    sv->err = 0;
    sv->size = 0;
    sv->temp[0] = '\0';

    ngx_memzero(&b, sizeof(ngx_http_playarr_metrics_state_buf_t));

    if (sv->keep) {
        b.start = sv->buf;
        b.end = sv->buf + sv->buf_size;
    }

    if (ngx_http_playarr_metrics_state_snapshot(store, &b) != NGX_OK) {
        sv->step = NGX_HTTP_PLAYARR_METRICS_SAVE_DUMP;
        sv->err = NGX_ENOMEM;
        sv->size = b.failed;
        rc = NGX_ERROR;
        goto done;
    }

    sv->size = b.pos - b.start;
    sv->step = ngx_http_playarr_metrics_state_file(path, sv->temp, b.start,
                                                   sv->size, &sv->err);

    rc = (sv->step == NGX_HTTP_PLAYARR_METRICS_SAVE_OK) ? NGX_OK : NGX_ERROR;

done:

    if (sv->keep) {
        sv->buf = b.start;
        sv->buf_size = b.end - b.start;

    } else if (b.start) {
        ngx_free(b.start);
    }

    return rc;
}


/* what a failed save says, in the process that asked for it */

void
ngx_http_playarr_metrics_state_save_log(ngx_str_t *path,
    ngx_http_playarr_metrics_save_t *sv, ngx_log_t *log)
{
    switch (sv->step) {

    case NGX_HTTP_PLAYARR_METRICS_SAVE_OK:
        break;

    case NGX_HTTP_PLAYARR_METRICS_SAVE_DUMP:
        ngx_log_error(NGX_LOG_EMERG, log, sv->err,
                      "malloc(%uz) failed", sv->size);
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "no memory for a snapshot, state file \"%V\" "
                      "not written", path);
        break;

    case NGX_HTTP_PLAYARR_METRICS_SAVE_RAND:
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "RAND_bytes() failed for state file \"%V\"", path);
        break;

    case NGX_HTTP_PLAYARR_METRICS_SAVE_OPEN:
        ngx_log_error(NGX_LOG_ERR, log, sv->err,
                      ngx_open_file_n " \"%s\" failed", sv->temp);
        break;

    case NGX_HTTP_PLAYARR_METRICS_SAVE_INFO:
        ngx_log_error(NGX_LOG_ERR, log, sv->err,
                      ngx_fd_info_n " \"%s\" failed", sv->temp);
        break;

    case NGX_HTTP_PLAYARR_METRICS_SAVE_NOT_NEW:
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "state file \"%s\" is not the file just created, "
                      "not written", sv->temp);
        break;

    case NGX_HTTP_PLAYARR_METRICS_SAVE_WRITE:
        ngx_log_error(NGX_LOG_ERR, log, sv->err,
                      ngx_write_fd_n " \"%s\" failed", sv->temp);
        break;

    case NGX_HTTP_PLAYARR_METRICS_SAVE_FSYNC:
        ngx_log_error(NGX_LOG_ERR, log, sv->err,
                      "fsync() \"%s\" failed", sv->temp);
        break;

    case NGX_HTTP_PLAYARR_METRICS_SAVE_CLOSE:
        ngx_log_error(NGX_LOG_ERR, log, sv->err,
                      ngx_close_file_n " \"%s\" failed", sv->temp);
        break;

    default: /* NGX_HTTP_PLAYARR_METRICS_SAVE_RENAME */
        ngx_log_error(NGX_LOG_ERR, log, sv->err,
                      ngx_rename_file_n " \"%s\" to \"%V\" failed",
                      sv->temp, path);
        break;
    }
}


ngx_int_t
ngx_http_playarr_metrics_state_write(ngx_str_t *path, u_char *data,
    size_t len, ngx_log_t *log)
{
    ngx_int_t                          rc;
    ngx_http_playarr_metrics_save_t    sv;

    sv.temp = ngx_alloc(NGX_HTTP_PLAYARR_METRICS_SAVE_TEMP_LEN(path), log);
    if (sv.temp == NULL) {
        return NGX_ERROR;
    }

    sv.temp[0] = '\0';
    sv.err = 0;
    sv.size = len;
    sv.step = ngx_http_playarr_metrics_state_file(path, sv.temp, data, len,
                                                  &sv.err);

    rc = NGX_OK;

    if (sv.step != NGX_HTTP_PLAYARR_METRICS_SAVE_OK) {
        ngx_http_playarr_metrics_state_save_log(path, &sv, log);
        rc = NGX_ERROR;
    }

    ngx_free(sv.temp);

    return rc;
}


/*
 * Writes data to a new temporary file and renames it to path; logs
 * nothing: returns the step that failed, its errno in *err
 */

static ngx_uint_t
ngx_http_playarr_metrics_state_file(ngx_str_t *path, u_char *temp,
    u_char *data, size_t len, ngx_err_t *err)
{
    u_char           *p;
    size_t            rest;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_uint_t        tries;
    ngx_file_info_t   fi;
    u_char            rnd[8];

    fd = NGX_INVALID_FILE;

    for (tries = 0; tries < 8; tries++) {
        if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
            return NGX_HTTP_PLAYARR_METRICS_SAVE_RAND;
        }

        *ngx_hex_dump(ngx_sprintf(temp, "%V.tmp.", path), rnd, sizeof(rnd))
            = '\0';

        fd = ngx_open_file(temp, NGX_FILE_WRONLY|NGX_FILE_NOFOLLOW,
                           O_CREAT|O_EXCL,
                           NGX_FILE_OWNER_ACCESS);

        if (fd != NGX_INVALID_FILE || ngx_errno != NGX_EEXIST) {
            break;
        }
    }

    if (fd == NGX_INVALID_FILE) {
        *err = ngx_errno;
        return NGX_HTTP_PLAYARR_METRICS_SAVE_OPEN;
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        *err = ngx_errno;
        goto close;
    }

    if (!ngx_is_file(&fi) || fi.st_nlink != 1 || fi.st_uid != geteuid()
        || ngx_file_size(&fi) != 0)
    {
        (void) ngx_close_file(fd);
        return NGX_HTTP_PLAYARR_METRICS_SAVE_NOT_NEW;
    }

    /*
     * write() may write less: a full disk says ENOSPC only on the next
     * call, and Linux writes at most 0x7ffff000 bytes at a time
     */

    for (p = data, rest = len; rest; p += n, rest -= n) {
        n = ngx_write_fd(fd, p, rest);

        if (n == -1 || n == 0) {
            *err = (n == -1) ? ngx_errno : 0;
            (void) ngx_close_file(fd);
            (void) ngx_delete_file(temp);
            return NGX_HTTP_PLAYARR_METRICS_SAVE_WRITE;
        }
    }

    if (fsync(fd) == -1) {
        *err = ngx_errno;
        (void) ngx_close_file(fd);
        (void) ngx_delete_file(temp);
        return NGX_HTTP_PLAYARR_METRICS_SAVE_FSYNC;
    }

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        *err = ngx_errno;
        (void) ngx_delete_file(temp);
        return NGX_HTTP_PLAYARR_METRICS_SAVE_CLOSE;
    }

    if (ngx_rename_file(temp, path->data) == NGX_FILE_ERROR) {
        *err = ngx_errno;
        (void) ngx_delete_file(temp);
        return NGX_HTTP_PLAYARR_METRICS_SAVE_RENAME;
    }

    *err = 0;

    return NGX_HTTP_PLAYARR_METRICS_SAVE_OK;

close:

    (void) ngx_close_file(fd);
    (void) ngx_delete_file(temp);

    return NGX_HTTP_PLAYARR_METRICS_SAVE_INFO;
}


/*
 * At start: a missing file is a first start, anything else is said.  The
 * file is read as every file the module reads (a link, a FIFO or a file
 * far larger than any snapshot of this zone is refused with a warning);
 * a snapshot is restored whole or not at all.
 */

void
ngx_http_playarr_metrics_state_restore(ngx_http_playarr_metrics_store_t *store,
    ngx_str_t *path, ngx_log_t *log)
{
    u_char     *from;
    size_t      max;
    ngx_str_t   data;

    max = (size_t) (store->shpool->end - (u_char *) store->shpool);
    max = ngx_max(NGX_HTTP_PLAYARR_METRICS_STATE_MIN_CAP,
                  NGX_HTTP_PLAYARR_METRICS_STATE_ZONES * max);

    switch (ngx_http_playarr_metrics_file_read(NULL, log, NGX_LOG_WARN,
                                               "playarr_metrics_state_file",
                                               path->data, max, &data, NULL))
    {
    case NGX_OK:
        break;

    case NGX_DECLINED:
        return;

    default:
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "state file \"%V\" not restored, "
                      "metrics start from zero", path);
        return;
    }

    from = ngx_alloc(path->len + sizeof("state file \"\""), log);

    if (from == NULL) {
        ngx_free(data.data);
        return;
    }

    ngx_sprintf(from, "state file \"%V\"%Z", path);

    if (ngx_http_playarr_metrics_state_load(store, data.data, data.len,
                                            (char *) from, log)
        == NGX_OK)
    {
        ngx_log_error(NGX_LOG_NOTICE, log, 0, "%s restored", from);
    }

    ngx_free(data.data);
    ngx_free(from);
}


/*
 * A binary upgrade (SIGUSR2) renames the pid file to ".oldbin" and runs
 * the new binary, which starts its zone from the state file.  The first
 * worker of the old binary looks for that file every second and, when it
 * names its own master, saves at once; the new binary waits a few seconds
 * for that save, so that it starts from the counts of the upgrade rather
 * than from the last periodic save.
 *
 * _oldbin() returns NGX_OK when the ".oldbin" file exists and holds the
 * pid of master, its information in fi (the rename set its st_ctim).
 */

ngx_int_t
ngx_http_playarr_metrics_state_oldbin(ngx_str_t *oldpid, ngx_pid_t master,
    ngx_file_info_t *fi)
{
    u_char    *p, *last;
    ssize_t    n;
    ngx_fd_t   fd;
    u_char     buf[NGX_INT64_LEN + 2];

    if (oldpid == NULL || oldpid->len == 0
        || ngx_file_info(oldpid->data, fi) == NGX_FILE_ERROR)
    {
        return NGX_DECLINED;
    }

    fd = ngx_open_file(oldpid->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        return NGX_DECLINED;
    }

    n = ngx_read_fd(fd, buf, sizeof(buf));

    (void) ngx_close_file(fd);

    if (n <= 0) {
        return NGX_DECLINED;
    }

    last = buf + n;

    for (p = buf; p < last && *p >= '0' && *p <= '9'; p++) {
        /* void */
    }

    if (ngx_atoi(buf, p - buf) != (ngx_int_t) master) {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


#define NGX_HTTP_PLAYARR_METRICS_HANDOFF_WAIT  3000
#define NGX_HTTP_PLAYARR_METRICS_HANDOFF_STEP  20


void
ngx_http_playarr_metrics_state_handoff(ngx_http_playarr_metrics_store_t *store,
    ngx_log_t *log)
{
    ngx_uint_t       i;
    ngx_file_info_t  pfi, sfi;

    if (ngx_http_playarr_metrics_state_oldbin(store->oldpid, ngx_parent, &pfi)
        != NGX_OK)
    {
        return;
    }

    for (i = 0;
         i <= NGX_HTTP_PLAYARR_METRICS_HANDOFF_WAIT
              / NGX_HTTP_PLAYARR_METRICS_HANDOFF_STEP;
         i++)
    {
        if (ngx_file_info(store->state_file.data, &sfi) != NGX_FILE_ERROR
            && (sfi.st_mtim.tv_sec > pfi.st_ctim.tv_sec
                || (sfi.st_mtim.tv_sec == pfi.st_ctim.tv_sec
                    && sfi.st_mtim.tv_nsec >= pfi.st_ctim.tv_nsec)))
        {
            ngx_log_error(NGX_LOG_NOTICE, log, 0,
                          "state file \"%V\" saved by the old binary",
                          &store->state_file);
            return;
        }

        ngx_msleep(NGX_HTTP_PLAYARR_METRICS_HANDOFF_STEP);
    }

    ngx_log_error(NGX_LOG_WARN, log, 0,
                  "the old binary did not save state file \"%V\" "
                  "within %ui s, the counts since its last save are lost",
                  &store->state_file,
                  (ngx_uint_t) NGX_HTTP_PLAYARR_METRICS_HANDOFF_WAIT / 1000);
}
