
/*
 * Copyright (C) Playarr metrics module authors
 */


/*
 * The exposition renderers and the label value escaping: arbitrary bytes
 * go through ngx_http_playarr_metrics_value_copy() into label values, as
 * a user name or an error type does in the log phase; series are created
 * with them in a store of Playarr's families and given arbitrary values
 * (NaN, infinities and negative zero included); then both renderers run
 * and their output is checked (fuzz_check.c).
 *
 * Input: records of
 *     family (1 byte), operation (1 byte), value (8 bytes, a double),
 *     then per label of the family: length (1 byte), bytes;
 * the zone size and playarr_metrics_max_series come from a hash of the
 * input, small enough at times for the overflow series to be used.
 *
 * value_copy() is checked against its contract (store.c): valid UTF-8 of
 * at most 128 bytes, a NUL or an invalid byte becoming U+FFFD, cut on a
 * character boundary.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "fuzz.h"


int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t fuzz_value(u_char *dst, const u_char *src, size_t len);
static size_t fuzz_char(const u_char *p, const u_char *last);


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) fuzz_playarr_families();
    (void) fuzz_min_pages();

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                                  *key, *k;
    double                                   v;
    size_t                                   len, n, ref;
    uint32_t                                 h;
    ngx_uint_t                               i, op, pages, max;
    ngx_pool_t                              *pool;
    const uint8_t                           *p, *last;
    ngx_http_playarr_metrics_store_t        *store;
    ngx_http_playarr_metrics_series_t       *s;
    ngx_http_playarr_metrics_family_conf_t  *fc;
    u_char            value[NGX_HTTP_PLAYARR_METRICS_VALUE_MAX];
    u_char            expect[NGX_HTTP_PLAYARR_METRICS_VALUE_MAX];

    h = fuzz_hash(data, size);

    pages = (h & 3) ? 1024 : fuzz_min_pages() + ((h >> 2) & 7);
    max = ((h >> 5) & 3) ? 10000 : 3;

    pool = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, &fuzz_log);
    if (pool == NULL) {
        fuzz_fatal("ngx_create_pool() failed");
    }

    store = fuzz_store_create(pool, pages, max);
    if (store == NULL) {
        fuzz_fatal("no store in %lu pages", pages);
    }

    key = ngx_pnalloc(pool, NGX_HTTP_PLAYARR_METRICS_KEY_MAX);
    if (key == NULL) {
        fuzz_fatal("ngx_pnalloc() failed");
    }

    p = data;
    last = data + size;

    while (last - p >= 2) {
        fc = store->families.elts;
        fc = &fc[p[0] % store->families.nelts];
        op = p[1];
        p += 2;

        v = 0;
        n = ngx_min((size_t) (last - p), sizeof(double));
        ngx_memcpy(&v, p, n);
        p += n;

        k = key;

        for (i = 0; i < fc->nlabels; i++) {
            len = 0;

            if (p < last) {
                len = ngx_min((size_t) *p, (size_t) (last - p - 1));
                p++;
            }

            n = ngx_http_playarr_metrics_value_copy(value, (u_char *) p, len);
            ref = fuzz_value(expect, p, len);

            if (n != ref || ngx_memcmp(value, expect, n) != 0) {
                fuzz_fatal("value_copy() of \"%.*s\" gives \"%.*s\", "
                           "not \"%.*s\"", (int) len, p, (int) n, value,
                           (int) ref, expect);
            }

            if (i) {
                *k++ = NGX_HTTP_PLAYARR_METRICS_SEP;
            }

            k = ngx_cpymem(k, value, n);
            p += len;
        }

        s = ngx_http_playarr_metrics_series(store, fc, NULL, key, k - key);

        if (s == NULL || s->family != fc->shared) {
            fuzz_fatal("series() gave a series of another family");
        }

        if (s != fc->shared->overflow
            && (s->len != k - key
                || ngx_memcmp(ngx_http_playarr_metrics_series_key(s), key,
                              k - key)
                   != 0))
        {
            fuzz_fatal("series() gave a series of another key");
        }

        if (fc->shared->nseries > max) {
            fuzz_fatal("\"%s\" has %lu series, the cap is %lu",
                       fc->name.data, fc->shared->nseries, max);
        }

        switch (op & 3) {

        case 0:
            if (fc->type == NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM) {
                ngx_http_playarr_metrics_observe(s, v);

            } else {
                ngx_http_playarr_metrics_add(s, v);
            }

            break;

        case 1:
            if (fc->type == NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM) {
                ngx_http_playarr_metrics_observe(s, v);

            } else {
                ngx_http_playarr_metrics_set(s, v);
            }

            break;

        case 2:
            if (fc->type == NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM) {
                ngx_http_playarr_metrics_observe(s, (double) (op >> 2));

            } else {
                ngx_http_playarr_metrics_add(s, 1);
            }

            break;

        default:
            if ((op >> 2) == 0) {
                ngx_http_playarr_metrics_hide(fc->shared);
            }
        }
    }

    if (fuzz_render(pool, store) != NGX_OK) {
        fuzz_fatal("a renderer failed");
    }

    fuzz_store_destroy(store);
    ngx_destroy_pool(pool);

    return 0;
}


/* value_copy() as its comment says it is */

static size_t
fuzz_value(u_char *dst, const u_char *src, size_t len)
{
    size_t          n, out;
    const u_char   *last;

    last = src + len;
    out = 0;

    while (src < last) {
        n = fuzz_char(src, last);

        if (n == 0 || (n == 1 && *src == '\0')) {

            /* U+FFFD */

            if (out + 3 > NGX_HTTP_PLAYARR_METRICS_VALUE_MAX) {
                break;
            }

            dst[out++] = 0xef;
            dst[out++] = 0xbf;
            dst[out++] = 0xbd;
            src++;
            continue;
        }

        if (out + n > NGX_HTTP_PLAYARR_METRICS_VALUE_MAX) {
            break;
        }

        ngx_memcpy(dst + out, src, n);
        out += n;
        src += n;
    }

    if (!fuzz_utf8_valid(dst, out)) {
        fuzz_fatal("the reference is not UTF-8");
    }

    return out;
}


/* the length of the UTF-8 character at p (RFC 3629), 0 if invalid */

static size_t
fuzz_char(const u_char *p, const u_char *last)
{
    size_t  n;

    for (n = 1; n <= 4 && p + n <= last; n++) {
        if (fuzz_utf8_valid((u_char *) p, n)) {
            return n;
        }
    }

    return 0;
}
