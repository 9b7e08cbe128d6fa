
/*
 * Copyright (C) Playarr metrics module authors
 */


/*
 * The state file reader, ngx_http_playarr_metrics_state_load(), and the
 * writer, _state_dump(), against a store of Playarr's families: a file
 * that is corrupt, truncated, foreign or of another schema must never
 * crash, and whatever it restored must render as valid Prometheus text
 * and JSON (fuzz_check.c).
 *
 * Input: a flags byte, then
 * - flags & 3 == 0: a state file, as is;
 * - flags & 3 == 1: the payload of a state file, given a valid header
 *   (magic, version, byte order, length, checksum, flags >> 2 families),
 *   so that what is behind the checksum is reached;
 * - otherwise: records as fuzz_render.c reads them fill a store, which is
 *   dumped and loaded into a new one: both must render the same samples.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "fuzz.h"


/* as state.c writes it */
typedef struct {
    u_char                              magic[8];
    uint32_t                            version;
    uint32_t                            bom;
    uint64_t                            len;
    uint32_t                            crc;
    uint32_t                            nfamilies;
} fuzz_state_header_t;


int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_load(ngx_pool_t *pool, u_char *data, size_t len);
static void fuzz_round_trip(ngx_pool_t *pool, const uint8_t *data,
    size_t size);
static void fuzz_fill(ngx_http_playarr_metrics_store_t *store,
    const uint8_t *p, const uint8_t *last);
static u_char *fuzz_samples(ngx_pool_t *pool,
    ngx_http_playarr_metrics_store_t *store, size_t *len);
static int fuzz_cmp_line(const void *a, const void *b);


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) fuzz_playarr_families();

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char               *file;
    size_t                len;
    ngx_pool_t           *pool;
    fuzz_state_header_t   h;

    if (size == 0) {
        return 0;
    }

    pool = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, &fuzz_log);
    if (pool == NULL) {
        fuzz_fatal("ngx_create_pool() failed");
    }

    switch (data[0] & 3) {

    case 0:
        len = size - 1;

        file = malloc(len ? len : 1);
        if (file == NULL) {
            fuzz_fatal("malloc() failed");
        }

        ngx_memcpy(file, data + 1, len);
        fuzz_load(pool, file, len);
        free(file);
        break;

    case 1:
        len = sizeof(fuzz_state_header_t) + size - 1;

        file = malloc(len);
        if (file == NULL) {
            fuzz_fatal("malloc() failed");
        }

        ngx_memcpy(h.magic, "PLAYARRM", 8);
        h.version = 1;
        h.bom = 0x01020304;
        h.len = size - 1;
        h.crc = ngx_crc32_long((u_char *) data + 1, size - 1);
        h.nfamilies = data[0] >> 2;

        ngx_memcpy(file, &h, sizeof(fuzz_state_header_t));
        ngx_memcpy(file + sizeof(fuzz_state_header_t), data + 1, size - 1);

        fuzz_load(pool, file, len);
        free(file);
        break;

    default:
        fuzz_round_trip(pool, data + 1, size - 1);
    }

    ngx_destroy_pool(pool);

    return 0;
}


static void
fuzz_load(ngx_pool_t *pool, u_char *data, size_t len)
{
    u_char                            *copy;
    ngx_int_t                          rc;
    ngx_http_playarr_metrics_store_t  *store;

    store = fuzz_store_create(pool, 1024, 10000);
    if (store == NULL) {
        fuzz_fatal("no store");
    }

    copy = malloc(len ? len : 1);
    if (copy == NULL) {
        fuzz_fatal("malloc() failed");
    }

    ngx_memcpy(copy, data, len);

    rc = ngx_http_playarr_metrics_state_load(store, data, len, "fuzz",
                                             &fuzz_log);

    if (rc != NGX_OK && rc != NGX_DECLINED) {
        fuzz_fatal("state_load() returned %ld", rc);
    }

    if (ngx_memcmp(copy, data, len) != 0) {
        fuzz_fatal("state_load() changed the file");
    }

    free(copy);

    if (fuzz_render(pool, store) != NGX_OK) {
        fuzz_fatal("a renderer failed");
    }

    fuzz_store_destroy(store);
}


static void
fuzz_round_trip(ngx_pool_t *pool, const uint8_t *data, size_t size)
{
    u_char                            *file, *a, *b;
    size_t                             len, alen, blen;
    ngx_int_t                          rc;
    ngx_http_playarr_metrics_store_t  *one, *two;

    one = fuzz_store_create(pool, 1024, 10000);
    two = fuzz_store_create(pool, 1024, 10000);

    if (one == NULL || two == NULL) {
        fuzz_fatal("no store");
    }

    fuzz_fill(one, data, data + size);

    file = ngx_http_playarr_metrics_state_dump(one, &len, &fuzz_log);
    if (file == NULL) {
        fuzz_fatal("state_dump() failed");
    }

    rc = ngx_http_playarr_metrics_state_load(two, file, len, "fuzz",
                                             &fuzz_log);
    if (rc != NGX_OK) {
        fuzz_fatal("a dump is not loaded back: %ld", rc);
    }

    ngx_free(file);

    a = fuzz_samples(pool, one, &alen);
    b = fuzz_samples(pool, two, &blen);

    if (alen != blen || ngx_memcmp(a, b, alen) != 0) {
        fuzz_fatal("restored, the samples differ:\n%.*s\n--- restored:\n%.*s",
                   (int) alen, a, (int) blen, b);
    }

    fuzz_store_destroy(one);
    fuzz_store_destroy(two);
}


/* records: family, operation, value (a double), label lengths and bytes */

static void
fuzz_fill(ngx_http_playarr_metrics_store_t *store, const uint8_t *p,
    const uint8_t *last)
{
    u_char                                  *k;
    double                                   v;
    size_t                                   len, n;
    ngx_uint_t                               i;
    ngx_http_playarr_metrics_series_t       *s;
    ngx_http_playarr_metrics_family_conf_t  *fc;
    u_char            key[NGX_HTTP_PLAYARR_METRICS_KEY_MAX];

    while (last - p >= 2) {
        fc = store->families.elts;
        fc = &fc[p[0] % store->families.nelts];
        n = p[1];
        p += 2;

        v = 0;
        len = ngx_min((size_t) (last - p), sizeof(double));
        ngx_memcpy(&v, p, len);
        p += len;

        k = key;

        for (i = 0; i < fc->nlabels; i++) {
            len = 0;

            if (p < last) {
                len = ngx_min((size_t) *p, (size_t) (last - p - 1));
                p++;
            }

            if (i) {
                *k++ = NGX_HTTP_PLAYARR_METRICS_SEP;
            }

            k += ngx_http_playarr_metrics_value_copy(k, (u_char *) p, len);
            p += len;
        }

        s = ngx_http_playarr_metrics_series(store, fc, NULL, key, k - key);

        if (fc->type == NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM) {
            ngx_http_playarr_metrics_observe(s, v);

        } else if (n & 1) {
            ngx_http_playarr_metrics_set(s, v);

        } else if ((n & 0x0e) == 0x0e) {
            ngx_http_playarr_metrics_hide(fc->shared);

        } else {
            ngx_http_playarr_metrics_add(s, v);
        }
    }
}


/* the Prometheus text of the families, lines sorted, self metrics out */

static u_char *
fuzz_samples(ngx_pool_t *pool, ngx_http_playarr_metrics_store_t *store,
    size_t *len)
{
    off_t                                  size;
    u_char                                *text, *p, *q, *last, *out;
    u_char                               **lines;
    ngx_uint_t                             n, i;
    ngx_chain_t                           *cl;
    ngx_http_request_t                    *r;
    ngx_http_playarr_metrics_main_conf_t  *pmcf;

    r = ngx_pcalloc(pool, sizeof(ngx_http_request_t));
    pmcf = ngx_pcalloc(pool, sizeof(ngx_http_playarr_metrics_main_conf_t));

    if (r == NULL || pmcf == NULL) {
        fuzz_fatal("ngx_pcalloc() failed");
    }

    r->pool = pool;
    r->main = r;
    pmcf->store = store;

    cl = ngx_http_playarr_metrics_prometheus(r, pmcf, &size);
    if (cl == NULL) {
        fuzz_fatal("the Prometheus renderer failed");
    }

    text = fuzz_flatten(cl, size);
    (void) fuzz_check_prometheus(store, text, size);

    last = text + size;
    n = 0;

    for (p = text; p < last; p++) {
        n += (*p == '\n');
    }

    lines = ngx_palloc(pool, (n + 1) * sizeof(u_char *));
    out = ngx_pnalloc(pool, size + 1);

    if (lines == NULL || out == NULL) {
        fuzz_fatal("ngx_palloc() failed");
    }

    n = 0;

    for (p = text; p < last; p = q + 1) {
        q = ngx_strlchr(p, last, '\n');
        *q = '\0';

        if (ngx_strncmp(p, "playarr_metrics_", 16) != 0
            && ngx_strncmp(p, "# HELP playarr_metrics_", 23) != 0
            && ngx_strncmp(p, "# TYPE playarr_metrics_", 23) != 0)
        {
            lines[n++] = p;
        }
    }

    qsort(lines, n, sizeof(u_char *), fuzz_cmp_line);

    q = out;

    for (i = 0; i < n; i++) {
        q = ngx_cpymem(q, lines[i], ngx_strlen(lines[i]));
        *q++ = '\n';
    }

    *len = q - out;

    free(text);

    return out;
}


static int
fuzz_cmp_line(const void *a, const void *b)
{
    return ngx_strcmp(*(u_char **) a, *(u_char **) b);
}
