
/*
 * Copyright (C) Playarr metrics module authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ngx_http_playarr_metrics_module.h>

#include <math.h>

#if (NGX_HAVE_LITTLE_ENDIAN && defined(__SSE2__))
#include <emmintrin.h>
#endif


/*
 * Eight bytes are read and written at once where a word can be: a flag
 * in the top bit of each byte of the mask that is one of those bytes,
 * the lowest flag always on the first such byte (a flag can be wrong
 * only above a right one, from the borrow of the subtraction).
 */

#if (NGX_HAVE_LITTLE_ENDIAN && (__GNUC__ >= 4 || __clang__))
#define NGX_HTTP_PLAYARR_METRICS_WORDS  1

#define NGX_HTTP_PLAYARR_METRICS_ONES   0x0101010101010101ULL
#define NGX_HTTP_PLAYARR_METRICS_HIGHS  0x8080808080808080ULL

/* the bytes of x that are zero */
#define ngx_http_playarr_metrics_zero(x)                                      \
    (((x) - NGX_HTTP_PLAYARR_METRICS_ONES) & ~(x))

/* the bytes of w that are c */
#define ngx_http_playarr_metrics_byte(w, c)                                   \
    ngx_http_playarr_metrics_zero((w) ^ (NGX_HTTP_PLAYARR_METRICS_ONES * (c)))

/* and 16 bytes at once with SSE2, the same way */
#if (defined(__SSE2__))
#define NGX_HTTP_PLAYARR_METRICS_SSE2   1
#else
#define NGX_HTTP_PLAYARR_METRICS_SSE2   0
#endif

#else
#define NGX_HTTP_PLAYARR_METRICS_WORDS  0
#define NGX_HTTP_PLAYARR_METRICS_SSE2   0
#endif


/* the longest line a writer is asked to hold at once */
#define NGX_HTTP_PLAYARR_METRICS_LINE_MAX                                     \
    (1024 + NGX_HTTP_PLAYARR_METRICS_MAX_LABELS                               \
            * (256 + 6 * NGX_HTTP_PLAYARR_METRICS_VALUE_MAX))

#define NGX_HTTP_PLAYARR_METRICS_CHUNK                                        \
    (4 * NGX_HTTP_PLAYARR_METRICS_LINE_MAX)

#define NGX_HTTP_PLAYARR_METRICS_NUMBER_MAX   32

/* a bound and its label: le="0.005"}  */
#define NGX_HTTP_PLAYARR_METRICS_LE_MAX                                       \
    (NGX_HTTP_PLAYARR_METRICS_NUMBER_MAX + 8)

/* and 16 bytes more: a bound is copied 16 bytes at once (copy16()) */
#define NGX_HTTP_PLAYARR_METRICS_LE_BUF                                       \
    ((NGX_HTTP_PLAYARR_METRICS_MAX_BUCKETS + 1)                               \
     * NGX_HTTP_PLAYARR_METRICS_LE_MAX + 16)


/* a self metric, the one of the JSON output too */
#define NGX_HTTP_PLAYARR_METRICS_IN_FLIGHT    "playarr_http_requests_in_flight"
#define NGX_HTTP_PLAYARR_METRICS_IN_FLIGHT_HELP                               \
    "HTTP requests being served by nginx, open websockets included"



#if defined(__SIZEOF_INT128__)
#define NGX_HTTP_PLAYARR_METRICS_INT128  1
typedef unsigned __int128  ngx_http_playarr_metrics_u128_t;
#else
#define NGX_HTTP_PLAYARR_METRICS_INT128  0
#endif


/*
 * The body is built in chunks: a step renders whole series until about
 * "limit" bytes are done, into buffers that the caller hands back once
 * sent (ngx_chain_update_chains() with the tag), and the cursor says where
 * the next step starts.  A family's series are those of the list as it
 * was when the family began: series are only ever added at its head and
 * never freed, so the walk meets each of them once, complete, however
 * many are created meanwhile.
 */

/* where the cursor is in a family */
#define NGX_HTTP_PLAYARR_METRICS_RENDER_FAMILY_START   0
#define NGX_HTTP_PLAYARR_METRICS_RENDER_FAMILY_SERIES  1

/* series walked past in one step at most, hidden ones included */
#define NGX_HTTP_PLAYARR_METRICS_STEP_SERIES    16384

struct ngx_http_playarr_metrics_render_s {
    ngx_http_request_t            *request;
    ngx_http_playarr_metrics_store_t  *store;
    ngx_uint_t                     format;
    ngx_buf_tag_t                  tag;

    ngx_chain_t                   *out;
    ngx_chain_t                  **last;
    ngx_chain_t                  **free;
    ngx_buf_t                     *buf;
    off_t                          len;
    off_t                          stop;

    /* the cursor */
    ngx_uint_t                     family;
    ngx_uint_t                     state;
    ngx_uint_t                     first;       /* JSON: no value yet */
    ngx_uint_t                     done;
    ngx_uint_t                     walked;
    ngx_http_playarr_metrics_series_t  *series;

    /* playarr_metrics_merge: the app's families, after nginx's */
    ngx_http_playarr_metrics_app_t  *app;
    ngx_uint_t                    *skip;        /* nginx's ceded to the app */
    ngx_uint_t                     merge;       /* 0 none, 1 failed, 2 up */
    ngx_uint_t                     app_family;
    ngx_uint_t                     app_sample;

    /* the texts each series of the family repeats (family_texts()) */
    ngx_str_t                      head;
    ngx_str_t                      bucket;
    ngx_str_t                      sum;
    ngx_str_t                      count;
    ngx_str_t                      sep[NGX_HTTP_PLAYARR_METRICS_MAX_LABELS + 1];
    size_t                         fixed;       /* of all sep[] */

    /* the bounds as text, once per set of bounds and family */
    ngx_http_playarr_metrics_bounds_t  *bounds;
    size_t                         le_max;
    ngx_str_t                      le[NGX_HTTP_PLAYARR_METRICS_MAX_BUCKETS + 1];
    u_char                         lebuf[NGX_HTTP_PLAYARR_METRICS_LE_BUF];
};


typedef struct {
    ngx_str_t                      name;
    ngx_str_t                      value;
} ngx_http_playarr_metrics_label_t;


static ngx_int_t ngx_http_playarr_metrics_append(
    ngx_http_playarr_metrics_render_t *w, ngx_buf_t *b);
static u_char *ngx_http_playarr_metrics_reserve(
    ngx_http_playarr_metrics_render_t *w, size_t n);
static ngx_chain_t *ngx_http_playarr_metrics_finish(
    ngx_http_playarr_metrics_render_t *w, off_t *len);
static ngx_inline ngx_uint_t ngx_http_playarr_metrics_step_over(
    ngx_http_playarr_metrics_render_t *w,
    ngx_http_playarr_metrics_series_t *s);
static ngx_http_playarr_metrics_inline u_char *
    ngx_http_playarr_metrics_uint(u_char *p, uint64_t n);
static u_char *ngx_http_playarr_metrics_digits(u_char *p, uint64_t n);
static ngx_inline u_char *ngx_http_playarr_metrics_decimal(u_char *p,
    double v);
#if (NGX_HTTP_PLAYARR_METRICS_INT128)
static u_char *ngx_http_playarr_metrics_shortest(u_char *p, double v);
#endif
static u_char *ngx_http_playarr_metrics_number(u_char *p, double v);
static ngx_http_playarr_metrics_noinline u_char *
    ngx_http_playarr_metrics_number_slow(u_char *p, double v);
static u_char *ngx_http_playarr_metrics_escape_help(u_char *p, ngx_str_t *s);
static u_char *ngx_http_playarr_metrics_escape_json(u_char *p, u_char *s,
    size_t len);
static ngx_http_playarr_metrics_inline u_char *
    ngx_http_playarr_metrics_copy(u_char *p, u_char *s, size_t n);
static ngx_http_playarr_metrics_inline u_char *
    ngx_http_playarr_metrics_copy16(u_char *p, ngx_str_t *t);
static u_char *ngx_http_playarr_metrics_pairs_text(
    ngx_http_playarr_metrics_render_t *w, u_char *p, u_char *key, size_t len,
    ngx_uint_t nlabels);
static u_char *ngx_http_playarr_metrics_pairs_json(
    ngx_http_playarr_metrics_render_t *w, u_char *p, u_char *key, size_t len,
    ngx_uint_t nlabels);
static ngx_http_playarr_metrics_inline u_char *
    ngx_http_playarr_metrics_pairs(ngx_http_playarr_metrics_render_t *w,
    u_char *p, u_char *s, u_char *end, ngx_uint_t nlabels, ngx_uint_t esc);
#if (NGX_HTTP_PLAYARR_METRICS_SSE2)
static ngx_http_playarr_metrics_inline ngx_uint_t
    ngx_http_playarr_metrics_special16(__m128i x, ngx_uint_t esc);
#endif
static ngx_int_t ngx_http_playarr_metrics_family_texts(
    ngx_http_playarr_metrics_render_t *w,
    ngx_http_playarr_metrics_family_conf_t *fc);
static void ngx_http_playarr_metrics_le_text(
    ngx_http_playarr_metrics_render_t *w,
    ngx_http_playarr_metrics_bounds_t *bounds, ngx_uint_t nlabels);
static ngx_int_t ngx_http_playarr_metrics_header(
    ngx_http_playarr_metrics_render_t *w, ngx_str_t *name, ngx_str_t *help,
    const char *type);
static ngx_int_t ngx_http_playarr_metrics_family_text(
    ngx_http_playarr_metrics_render_t *w,
    ngx_http_playarr_metrics_family_conf_t *fc);
static ngx_int_t ngx_http_playarr_metrics_self_text(
    ngx_http_playarr_metrics_render_t *w);
static ngx_uint_t ngx_http_playarr_metrics_has_series(
    ngx_http_playarr_metrics_family_conf_t *fc);
static void ngx_http_playarr_metrics_app_drop(
    ngx_http_playarr_metrics_app_t *app, ngx_pool_t *pool, ngx_str_t *name,
    ngx_str_t *suffix);
static ngx_int_t ngx_http_playarr_metrics_app_text(
    ngx_http_playarr_metrics_render_t *w);
static ngx_int_t ngx_http_playarr_metrics_app_json(
    ngx_http_playarr_metrics_render_t *w);
static ngx_int_t ngx_http_playarr_metrics_merge_up_text(
    ngx_http_playarr_metrics_render_t *w);
static ngx_int_t ngx_http_playarr_metrics_family_json(
    ngx_http_playarr_metrics_render_t *w,
    ngx_http_playarr_metrics_family_conf_t *fc);
static ngx_chain_t *ngx_http_playarr_metrics_whole(ngx_http_request_t *r,
    ngx_http_playarr_metrics_main_conf_t *pmcf, ngx_uint_t format,
    off_t *len);
static u_char *ngx_http_playarr_metrics_json_number(u_char *p, double v);
static ngx_inline u_char *ngx_http_playarr_metrics_json_count(u_char *p,
    uint64_t n);


static const char  *ngx_http_playarr_metrics_reasons[] = {
    "malformed", "invalid", "too_large"
};

/* the self metrics: an app's family of one of these names is never served */
static ngx_str_t  ngx_http_playarr_metrics_self_names[] = {
    ngx_string("playarr_metrics_build_info"),
    ngx_string("playarr_metrics_zone_size_bytes"),
    ngx_string("playarr_metrics_zone_used_bytes"),
    ngx_string("playarr_metrics_zone_free_bytes"),
    ngx_string("playarr_metrics_series"),
    ngx_string("playarr_metrics_series_refused_total"),
    ngx_string("playarr_metrics_updates_rejected_total"),
    ngx_string("playarr_metrics_merge_up"),
    ngx_string(NGX_HTTP_PLAYARR_METRICS_IN_FLIGHT),
    ngx_null_string
};

/* 00 to 99 */
static u_char  ngx_http_playarr_metrics_digit_pairs[] =
    "00010203040506070809101112131415161718192021222324252627282930313233"
    "34353637383940414243444546474849505152535455565758596061626364656667"
    "6869707172737475767778798081828384858687888990919293949596979899";

static ngx_str_t  ngx_http_playarr_metrics_histogram_suffixes[] = {
    ngx_string("_bucket"), ngx_string("_sum"), ngx_string("_count"),
    ngx_null_string
};


/* room for n bytes: in the current buffer, one sent before, or a new one */

static u_char *
ngx_http_playarr_metrics_reserve(ngx_http_playarr_metrics_render_t *w,
    size_t n)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl, **ll;

    b = w->buf;

    if (b && (size_t) (b->end - b->last) >= n) {
        return b->last;
    }

    cl = NULL;

    for (ll = w->free; ll && *ll; ll = &(*ll)->next) {
        b = (*ll)->buf;

        if ((size_t) (b->end - b->start) >= n) {
            cl = *ll;
            *ll = cl->next;

            b->pos = b->start;
            b->last = b->start;
            b->flush = 0;
            break;
        }
    }

    if (cl == NULL) {
        b = ngx_create_temp_buf(w->request->pool,
                                ngx_max(n, NGX_HTTP_PLAYARR_METRICS_CHUNK));
        if (b == NULL || ngx_http_playarr_metrics_append(w, b) != NGX_OK) {
            return NULL;
        }

        return b->last;
    }

    cl->next = NULL;

    *w->last = cl;
    w->last = &cl->next;
    w->buf = b;

    return b->last;
}


/* a new buffer of the module's tag, at the end of the body */

static ngx_int_t
ngx_http_playarr_metrics_append(ngx_http_playarr_metrics_render_t *w,
    ngx_buf_t *b)
{
    ngx_chain_t  *cl;

    b->tag = w->tag;

    cl = ngx_alloc_chain_link(w->request->pool);
    if (cl == NULL) {
        return NGX_ERROR;
    }

    cl->buf = b;
    cl->next = NULL;

    *w->last = cl;
    w->last = &cl->next;
    w->buf = b;

    return NGX_OK;
}


#define ngx_http_playarr_metrics_commit(w, p)                                 \
    (w)->len += (p) - (w)->buf->last;                                         \
    (w)->buf->last = (p)


/*
 * Whether this step has rendered its bytes or walked its series, before
 * series s; then the walk of the family resumes at s in the next step.
 */

static ngx_inline ngx_uint_t
ngx_http_playarr_metrics_step_over(ngx_http_playarr_metrics_render_t *w,
    ngx_http_playarr_metrics_series_t *s)
{
    if (w->len < w->stop
        && w->walked++ < NGX_HTTP_PLAYARR_METRICS_STEP_SERIES)
    {
        return 0;
    }

    w->series = s;

    return 1;
}


/* the last buffer of the body, and the chain of a whole body */

static ngx_chain_t *
ngx_http_playarr_metrics_finish(ngx_http_playarr_metrics_render_t *w,
    off_t *len)
{
    ngx_buf_t  *b;

    b = w->buf;

    if (b && b->last == b->pos) {
        /* nothing in it: a buffer that only marks the end */
        b->temporary = 0;

    } else if (b == NULL) {
        b = ngx_calloc_buf(w->request->pool);
        if (b == NULL || ngx_http_playarr_metrics_append(w, b) != NGX_OK) {
            return NULL;
        }
    }

    b->last_buf = (w->request == w->request->main) ? 1 : 0;
    b->last_in_chain = 1;

    w->done = 1;

    if (len) {
        *len = w->len;
    }

    return w->out;
}


/*
 * Two decimal digits at a time, without ngx_sprintf(), written in place
 * from the last one: the number of digits is counted first.  Most counts
 * have one digit.
 */

static ngx_http_playarr_metrics_inline u_char *
ngx_http_playarr_metrics_uint(u_char *p, uint64_t n)
{
    if (n < 10) {
        *p = (u_char) ('0' + n);
        return p + 1;
    }

    return ngx_http_playarr_metrics_digits(p, n);
}


static u_char *
ngx_http_playarr_metrics_digits(u_char *p, uint64_t n)
{
    u_char      *q, *end;
    uint64_t     t;
    ngx_uint_t   d, len;

    for (len = 2, t = n / 100; t; t /= 10) {
        len++;
    }

    end = p + len;
    q = end;

    while (n >= 100) {
        d = (ngx_uint_t) (n % 100) * 2;
        n /= 100;
        *--q = ngx_http_playarr_metrics_digit_pairs[d + 1];
        *--q = ngx_http_playarr_metrics_digit_pairs[d];
    }

    if (n >= 10) {
        d = (ngx_uint_t) n * 2;
        *--q = ngx_http_playarr_metrics_digit_pairs[d + 1];
        *--q = ngx_http_playarr_metrics_digit_pairs[d];

    } else {
        *--q = (u_char) ('0' + n);
    }

    return end;
}


/*
 * A value that is a whole number of thousandths or of millionths (a time
 * in milliseconds, the sum of a few, most bucket bounds), from 1e-4
 * to 1e9 in magnitude: its decimal digits, at most 15, are those "%.15g"
 * prints, and read back as the same double, so printing them is what
 * ngx_http_playarr_metrics_number() would do, without snprintf() and
 * strtod().  NULL for any other value.
 */

static ngx_inline u_char *
ngx_http_playarr_metrics_decimal(u_char *p, double v)
{
    u_char      *end, *q;
    double       a;
    uint64_t     k, ip, fp, div;
    ngx_uint_t   d, places;

    a = (v < 0) ? -v : v;

    if (!(a >= 1e-4 && a < 1e9)) {
        return NULL;
    }

    k = (uint64_t) (a * 1e3 + 0.5);

    if ((double) k / 1e3 == a) {
        places = 3;
        div = 1000;

    } else {
        k = (uint64_t) (a * 1e6 + 0.5);

        if ((double) k / 1e6 != a) {
            return NULL;
        }

        places = 6;
        div = 1000000;
    }

    ip = k / div;
    fp = k % div;

    if (v < 0) {
        *p++ = '-';
    }

    p = ngx_http_playarr_metrics_uint(p, ip);

    if (fp == 0) {
        return p;
    }

    *p++ = '.';

    /* the places digits of fp, leading zeros included, trailing ones not */

    while (fp % 10 == 0) {
        fp /= 10;
        places--;
    }

    end = p + places;

    for (q = end; q - p >= 2; fp /= 100) {
        d = (ngx_uint_t) (fp % 100) * 2;
        *--q = ngx_http_playarr_metrics_digit_pairs[d + 1];
        *--q = ngx_http_playarr_metrics_digit_pairs[d];
    }

    if (q > p) {
        *--q = (u_char) ('0' + fp);
    }

    return end;
}


#if (NGX_HTTP_PLAYARR_METRICS_INT128)

/*
 * What "%.15g", "%.16g" or "%.17g" print, the first that reads back as
 * the same double, for 1e-4 <= |v| < 1e14, computed exactly with 128-bit
 * integers instead of snprintf() and strtod(): v is m * 2^-k, with m of
 * 53 bits and 2 <= k <= 66, so v * 10^q (q <= 20) is m * 10^q / 2^k,
 * an integer quotient and remainder.  Each candidate is v rounded half to
 * even to n significant digits, as glibc's printf() rounds, and is kept
 * when it lies within the interval of the reals that strtod() rounds to
 * v.  The notation is always fixed, as %g chooses for exponents from -4
 * to n - 1.  NULL for any other value.
 */

static u_char *
ngx_http_playarr_metrics_shortest(u_char *p, double v)
{
    int                               x, k, e;
    u_char                            digits[NGX_INT64_LEN];
    uint64_t                          bits, m, c, top;
    ngx_int_t                         i, n, qn, len, point;
    ngx_http_playarr_metrics_u128_t   t, pw, rem, half, lo, hi, l;

    ngx_memcpy(&bits, &v, sizeof(double));

    m = (bits & (((uint64_t) 1 << 52) - 1)) | ((uint64_t) 1 << 52);
    c = 0;
    k = 1075 - (int) ((bits >> 52) & 0x7ff);

    if (k < 2 || k > 66) {
        return NULL;
    }

    /*
     * the decimal exponent, x = floor(log10(|v|)): from the binary one,
     * log10(2) being 78913 / 2^18, then made exact (no libm: nginx does
     * not link with it)
     */

    e = (52 - k) * 78913;
    x = (e >= 0) ? e / 262144 : -((-e + 262143) / 262144);

    for ( ;; ) {
        if (x < -4 || x > 13) {
            return NULL;
        }

        for (pw = 1, i = 0; i < 16 - x; i++) {
            pw *= 10;
        }

        t = ((ngx_http_playarr_metrics_u128_t) m * pw) >> k;

        if (t < (ngx_http_playarr_metrics_u128_t) 10000000000000000ULL) {
            x--;
            continue;
        }

        if (t >= (ngx_http_playarr_metrics_u128_t) 100000000000000000ULL) {
            x++;
            continue;
        }

        break;
    }

    for (n = 15; n <= 17; n++) {

        /* c = v * 10^qn rounded half to even, n digits */

        qn = n - 1 - x;

        for (pw = 1, i = 0; i < qn; i++) {
            pw *= 10;
        }

        t = (ngx_http_playarr_metrics_u128_t) m * pw;
        c = (uint64_t) (t >> k);
        rem = t & ((((ngx_http_playarr_metrics_u128_t) 1) << k) - 1);
        half = ((ngx_http_playarr_metrics_u128_t) 1) << (k - 1);

        if (rem > half || (rem == half && (c & 1))) {
            c++;
        }

        /*
         * c / 10^qn reads back as v when it is within half a unit in the
         * last place of v, the bound included when m is even; all scaled
         * by 4 * 2^k * 10^qn
         */

        l = ((ngx_http_playarr_metrics_u128_t) c) << (k + 2);
        hi = ((ngx_http_playarr_metrics_u128_t) (4 * m + 2)) * pw;
        lo = ((ngx_http_playarr_metrics_u128_t) (4 * m - 2)) * pw;

        if (m == ((uint64_t) 1 << 52)) {
            /* the double below v is nearer: half its distance */
            lo = ((ngx_http_playarr_metrics_u128_t) (4 * m - 1)) * pw;
        }

        if ((m & 1) ? (l > lo && l < hi) : (l >= lo && l <= hi)) {
            break;
        }
    }

    if (n > 17) {
        return NULL;
    }

    /* rounded up to 10^n: one digit fewer, one exponent more */

    for (top = 1, i = 0; i < n; i++) {
        top *= 10;
    }

    if (c >= top) {
        c /= 10;
        x++;
        n--;

        if (x > 13) {
            return NULL;
        }
    }

    /* n digits, then the trailing zeros dropped */

    for (i = n - 1; i >= 0; i--) {
        digits[i] = (u_char) ('0' + c % 10);
        c /= 10;
    }

    for (len = n; len > 1 && digits[len - 1] == '0'; len--) { /* void */ }

    if (v < 0) {
        *p++ = '-';
    }

    if (x < 0) {
        *p++ = '0';
        *p++ = '.';

        for (i = 0; i < -x - 1; i++) {
            *p++ = '0';
        }

        return ngx_cpymem(p, digits, len);
    }

    point = x + 1;

    if (len <= point) {
        p = ngx_cpymem(p, digits, len);

        for (i = len; i < point; i++) {
            *p++ = '0';
        }

        return p;
    }

    p = ngx_cpymem(p, digits, point);
    *p++ = '.';

    return ngx_cpymem(p, digits + point, len - point);
}

#endif


/*
 * Integers (every count, most values) are printed as integers; other
 * values with the fewest digits that read back as the same double.
 */

static u_char *
ngx_http_playarr_metrics_number(u_char *p, double v)
{
    u_char   *q;
    int64_t   i;

    /* not NaN nor an infinity */

    if (v < 9007199254740992.0 && v > -9007199254740992.0) {
        i = (int64_t) v;

        if (v == (double) i) {

            if (i < 0) {
                *p++ = '-';
                return ngx_http_playarr_metrics_uint(p, (uint64_t) -i);
            }

            return ngx_http_playarr_metrics_uint(p, (uint64_t) i);
        }

        q = ngx_http_playarr_metrics_decimal(p, v);
        if (q) {
            return q;
        }
    }

    return ngx_http_playarr_metrics_number_slow(p, v);
}


static ngx_http_playarr_metrics_noinline u_char *
ngx_http_playarr_metrics_number_slow(u_char *p, double v)
{
    int      n, digits;
    u_char   buf[NGX_HTTP_PLAYARR_METRICS_NUMBER_MAX];
#if (NGX_HTTP_PLAYARR_METRICS_INT128)
    u_char  *q;
#endif

    if (isnan(v)) {
        return ngx_cpymem(p, "NaN", 3);
    }

    if (isinf(v)) {
        return ngx_cpymem(p, v > 0 ? "+Inf" : "-Inf", 4);
    }

#if (NGX_HTTP_PLAYARR_METRICS_INT128)

    q = ngx_http_playarr_metrics_shortest(p, v);
    if (q) {
        return q;
    }

#endif

    /* the shortest of 15, 16 or 17 digits, as JavaScript and Go print */

    for (digits = 15; digits < 17; digits++) {
        n = snprintf((char *) buf, sizeof(buf), "%.*g", digits, v);

        if (strtod((char *) buf, NULL) == v) {
            return ngx_cpymem(p, buf, n);
        }
    }

    n = snprintf((char *) buf, sizeof(buf), "%.17g", v);

    return ngx_cpymem(p, buf, n);
}


static u_char *
ngx_http_playarr_metrics_escape_help(u_char *p, ngx_str_t *s)
{
    u_char  *c, *end;

    end = s->data + s->len;

    for (c = s->data; c < end; c++) {
        switch (*c) {
        case '\\':
            *p++ = '\\'; *p++ = '\\';
            break;
        case '\n':
            *p++ = '\\'; *p++ = 'n';
            break;
        default:
            *p++ = *c;
        }
    }

    return p;
}


static u_char *
ngx_http_playarr_metrics_escape_json(u_char *p, u_char *s, size_t len)
{
    u_char         *end;
    static u_char   hex[] = "0123456789abcdef";

    for (end = s + len; s < end; s++) {

        if (*s == '"' || *s == '\\') {
            *p++ = '\\';
            *p++ = *s;

        } else if (*s < 0x20) {
            p = ngx_cpymem(p, "\\u00", 4);
            *p++ = hex[*s >> 4];
            *p++ = hex[*s & 0xf];

        } else {
            *p++ = *s;
        }
    }

    return p;
}


/*
 * Bytes that a label value cannot be copied with as it is: the value
 * separator of a key, and what each format escapes (the text format a
 * backslash, a double quote and a line feed; JSON those two and the
 * control characters).
 */

#define NGX_HTTP_PLAYARR_METRICS_ESC_TEXT  1
#define NGX_HTTP_PLAYARR_METRICS_ESC_JSON  2

static u_char  ngx_http_playarr_metrics_special[256] = {
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3
};


/*
 * A short copy without a call (the family's texts, the bounds, the label
 * pairs, the start of a bucket line): a few words or vectors loaded from
 * each end, overlapping in the middle.
 */

static ngx_http_playarr_metrics_inline u_char *
ngx_http_playarr_metrics_copy(u_char *p, u_char *s, size_t n)
{
    uint32_t  x, y;
    uint64_t  a, b;
#if (NGX_HTTP_PLAYARR_METRICS_SSE2)
    __m128i   v0, v1, v2, v3, v4, v5, v6, v7;

    if (n >= 16) {

        if (n <= 32) {
            v0 = _mm_loadu_si128((__m128i *) s);
            v1 = _mm_loadu_si128((__m128i *) (s + n - 16));
            _mm_storeu_si128((__m128i *) p, v0);
            _mm_storeu_si128((__m128i *) (p + n - 16), v1);

            return p + n;
        }

        if (n <= 64) {
            v0 = _mm_loadu_si128((__m128i *) s);
            v1 = _mm_loadu_si128((__m128i *) (s + 16));
            v2 = _mm_loadu_si128((__m128i *) (s + n - 32));
            v3 = _mm_loadu_si128((__m128i *) (s + n - 16));
            _mm_storeu_si128((__m128i *) p, v0);
            _mm_storeu_si128((__m128i *) (p + 16), v1);
            _mm_storeu_si128((__m128i *) (p + n - 32), v2);
            _mm_storeu_si128((__m128i *) (p + n - 16), v3);

            return p + n;
        }

        if (n <= 128) {
            v0 = _mm_loadu_si128((__m128i *) s);
            v1 = _mm_loadu_si128((__m128i *) (s + 16));
            v2 = _mm_loadu_si128((__m128i *) (s + 32));
            v3 = _mm_loadu_si128((__m128i *) (s + 48));
            v4 = _mm_loadu_si128((__m128i *) (s + n - 64));
            v5 = _mm_loadu_si128((__m128i *) (s + n - 48));
            v6 = _mm_loadu_si128((__m128i *) (s + n - 32));
            v7 = _mm_loadu_si128((__m128i *) (s + n - 16));
            _mm_storeu_si128((__m128i *) p, v0);
            _mm_storeu_si128((__m128i *) (p + 16), v1);
            _mm_storeu_si128((__m128i *) (p + 32), v2);
            _mm_storeu_si128((__m128i *) (p + 48), v3);
            _mm_storeu_si128((__m128i *) (p + n - 64), v4);
            _mm_storeu_si128((__m128i *) (p + n - 48), v5);
            _mm_storeu_si128((__m128i *) (p + n - 32), v6);
            _mm_storeu_si128((__m128i *) (p + n - 16), v7);

            return p + n;
        }

        return ngx_cpymem(p, s, n);
    }
#else
    uint64_t  c, d;

    if (n > 16) {

        if (n > 32) {
            return ngx_cpymem(p, s, n);
        }

        ngx_memcpy(&a, s, 8);
        ngx_memcpy(&b, s + 8, 8);
        ngx_memcpy(&c, s + n - 16, 8);
        ngx_memcpy(&d, s + n - 8, 8);
        ngx_memcpy(p, &a, 8);
        ngx_memcpy(p + 8, &b, 8);
        ngx_memcpy(p + n - 16, &c, 8);
        ngx_memcpy(p + n - 8, &d, 8);

        return p + n;
    }
#endif

    if (n >= 8) {
        ngx_memcpy(&a, s, 8);
        ngx_memcpy(&b, s + n - 8, 8);
        ngx_memcpy(p, &a, 8);
        ngx_memcpy(p + n - 8, &b, 8);

        return p + n;
    }

    if (n >= 4) {
        ngx_memcpy(&x, s, 4);
        ngx_memcpy(&y, s + n - 4, 4);
        ngx_memcpy(p, &x, 4);
        ngx_memcpy(p + n - 4, &y, 4);

        return p + n;
    }

    if (n) {
        p[0] = s[0];
        p[n >> 1] = s[n >> 1];
        p[n - 1] = s[n - 1];
    }

    return p + n;
}


/*
 * A text of the family (family_texts()) or a bound (w->lebuf), both with
 * room after the last one: 16 bytes at once whatever its length, then
 * the rest of a longer one.  The bytes stored past it are in the room of
 * what follows (a value, a count, the closing quote and what the line
 * has after it), and overwritten.
 */

static ngx_http_playarr_metrics_inline u_char *
ngx_http_playarr_metrics_copy16(u_char *p, ngx_str_t *t)
{
#if (NGX_HTTP_PLAYARR_METRICS_SSE2)

    _mm_storeu_si128((__m128i *) p, _mm_loadu_si128((__m128i *) t->data));

    if (t->len <= 16) {
        return p + t->len;
    }

    return ngx_http_playarr_metrics_copy(p + 16, t->data + 16, t->len - 16);

#else

    return ngx_http_playarr_metrics_copy(p, t->data, t->len);

#endif
}


/*
 * A series' label pairs, escaped, from its key in one pass: the family's
 * texts (w->sep[]: name=" before the first value, ",name=" between two,
 * the closing quote; in JSON "name":" and ","name":") around its values,
 * copied 16 bytes (SSE2) or a word at a time up to the next byte that is
 * a separator or is escaped.  Every key has its family's labels; a label
 * missing would be empty, and bytes after the last label's value are
 * never shown.  The output takes at most w->fixed bytes and twice (JSON:
 * six times) the key's.  One copy of the code for each format.
 */

static u_char *
ngx_http_playarr_metrics_pairs_text(ngx_http_playarr_metrics_render_t *w,
    u_char *p, u_char *key, size_t len, ngx_uint_t nlabels)
{
    return ngx_http_playarr_metrics_pairs(w, p, key, key + len, nlabels,
                                          NGX_HTTP_PLAYARR_METRICS_ESC_TEXT);
}


static u_char *
ngx_http_playarr_metrics_pairs_json(ngx_http_playarr_metrics_render_t *w,
    u_char *p, u_char *key, size_t len, ngx_uint_t nlabels)
{
    return ngx_http_playarr_metrics_pairs(w, p, key, key + len, nlabels,
                                          NGX_HTTP_PLAYARR_METRICS_ESC_JSON);
}


static ngx_http_playarr_metrics_inline u_char *
ngx_http_playarr_metrics_pairs(ngx_http_playarr_metrics_render_t *w,
    u_char *p, u_char *s, u_char *end, ngx_uint_t nlabels, ngx_uint_t esc)
{
    u_char          c;
    ngx_uint_t      i;
#if (NGX_HTTP_PLAYARR_METRICS_SSE2)
    __m128i         x;
    ngx_uint_t      k, m;
#elif (NGX_HTTP_PLAYARR_METRICS_WORDS)
    uint64_t        v, t;
    ngx_uint_t      k;
#endif
    static u_char   hex[] = "0123456789abcdef";

    i = 0;
    p = ngx_http_playarr_metrics_copy16(p, &w->sep[0]);

    /*
     * A vector or a word is stored whole before its bytes are looked at:
     * each byte of the key left gives a byte at least, and is counted
     * twice (JSON: six times) in the room of the caller, so the bytes
     * stored past the output are within it, and overwritten.
     */

    for ( ;; ) {

#if (NGX_HTTP_PLAYARR_METRICS_SSE2)

        if (end - s >= 16) {
            x = _mm_loadu_si128((__m128i *) s);
            _mm_storeu_si128((__m128i *) p, x);
            m = ngx_http_playarr_metrics_special16(x, esc);

            if (m == 0) {
                s += 16;
                p += 16;
                continue;
            }

        } else if (end - s >= 8) {
            x = _mm_loadl_epi64((__m128i *) s);
            _mm_storel_epi64((__m128i *) p, x);
            m = ngx_http_playarr_metrics_special16(x, esc) & 0xff;

            if (m == 0) {
                s += 8;
                p += 8;
                continue;
            }

        } else {
            m = 0;
        }

        if (m) {
            k = __builtin_ctz((unsigned int) m);
            s += k;
            p += k;

            goto special;
        }

#elif (NGX_HTTP_PLAYARR_METRICS_WORDS)

        if (end - s >= 8) {
            ngx_memcpy(&v, s, 8);
            ngx_memcpy(p, &v, 8);

            if (esc == NGX_HTTP_PLAYARR_METRICS_ESC_TEXT) {
                t = ngx_http_playarr_metrics_byte(v, '\\')
                    | ngx_http_playarr_metrics_byte(v, '"')
                    | ngx_http_playarr_metrics_byte(v, '\n')
                    | ngx_http_playarr_metrics_zero(~v);

            } else {
                t = ((v - NGX_HTTP_PLAYARR_METRICS_ONES * 0x20) & ~v)
                    | ngx_http_playarr_metrics_byte(v, '\\')
                    | ngx_http_playarr_metrics_byte(v, '"')
                    | ngx_http_playarr_metrics_zero(~v);
            }

            t &= NGX_HTTP_PLAYARR_METRICS_HIGHS;

            if (t == 0) {
                s += 8;
                p += 8;
                continue;
            }

            k = __builtin_ctzll(t) >> 3;
            s += k;
            p += k;

            goto special;
        }

#endif

        /* fewer than 8 bytes left */

        for ( ;; ) {
            if (s == end) {
                goto done;
            }

            if (ngx_http_playarr_metrics_special[*s] & esc) {
                break;
            }

            *p++ = *s++;
        }

#if (NGX_HTTP_PLAYARR_METRICS_WORDS)
    special:
#endif

        c = *s++;

        if (c == NGX_HTTP_PLAYARR_METRICS_SEP) {
            if (++i == nlabels) {
                break;
            }

            p = ngx_http_playarr_metrics_copy16(p, &w->sep[i]);
            continue;
        }

        *p++ = '\\';

        if (esc == NGX_HTTP_PLAYARR_METRICS_ESC_TEXT) {
            *p++ = (c == '\n') ? 'n' : c;

        } else if (c < 0x20) {
            *p++ = 'u';
            *p++ = '0';
            *p++ = '0';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 0xf];

        } else {
            *p++ = c;
        }
    }

done:

    for (i++; i < nlabels; i++) {
        p = ngx_http_playarr_metrics_copy16(p, &w->sep[i]);
    }

    /* sep[nlabels] */
    *p++ = '"';

    return p;
}


#if (NGX_HTTP_PLAYARR_METRICS_SSE2)

/* a bit for each byte of x that is a separator or escaped */

static ngx_http_playarr_metrics_inline ngx_uint_t
ngx_http_playarr_metrics_special16(__m128i x, ngx_uint_t esc)
{
    __m128i  m;

    m = _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('\\')),
                     _mm_cmpeq_epi8(x, _mm_set1_epi8('"')));
    m = _mm_or_si128(m, _mm_cmpeq_epi8(x, _mm_set1_epi8((char) 0xff)));

    if (esc == NGX_HTTP_PLAYARR_METRICS_ESC_TEXT) {
        m = _mm_or_si128(m, _mm_cmpeq_epi8(x, _mm_set1_epi8('\n')));

    } else {
        /* below 0x20: where the unsigned minimum with 0x1f is x */
        m = _mm_or_si128(m, _mm_cmpeq_epi8(_mm_min_epu8(x,
                                                       _mm_set1_epi8(0x1f)),
                                           x));
    }

    return (ngx_uint_t) _mm_movemask_epi8(m);
}

#endif


/*
 * The texts that each series of a family repeats, once per family: the
 * start of its lines and the label names around the values.
 *   text: name{ (name and a space without labels), name_bucket{,
 *         name_sum{, name_count{; name=" and ",name=" and a quote;
 *   JSON: the end of each histogram value, },"metricName":"name_bucket"}
 *         and so on; "name":" and ","name":" and a quote.
 */

static ngx_int_t
ngx_http_playarr_metrics_family_texts(ngx_http_playarr_metrics_render_t *w,
    ngx_http_playarr_metrics_family_conf_t *fc)
{
    u_char      *p, *name;
    size_t       size;
    ngx_uint_t   i, n;

    n = fc->nlabels;

    /* the texts, and room for copy16() after the last */
    size = 4 * fc->name.len + 128 + 16;

    for (i = 0; i < n; i++) {
        size += fc->labels[i].len + 8;
    }

    p = ngx_pnalloc(w->request->pool, size);
    if (p == NULL) {
        return NGX_ERROR;
    }

    name = fc->name.data;

    if (w->format == NGX_HTTP_PLAYARR_METRICS_FORMAT_JSON) {
        w->head.len = 0;

        w->bucket.data = p;
        p = ngx_cpymem(p, "},\"metricName\":\"", 16);
        p = ngx_cpymem(p, name, fc->name.len);
        p = ngx_cpymem(p, "_bucket\"}", 9);
        w->bucket.len = p - w->bucket.data;

        w->sum.data = p;
        p = ngx_cpymem(p, "},\"metricName\":\"", 16);
        p = ngx_cpymem(p, name, fc->name.len);
        p = ngx_cpymem(p, "_sum\"}", 6);
        w->sum.len = p - w->sum.data;

        w->count.data = p;
        p = ngx_cpymem(p, "},\"metricName\":\"", 16);
        p = ngx_cpymem(p, name, fc->name.len);
        p = ngx_cpymem(p, "_count\"}", 8);
        w->count.len = p - w->count.data;

    } else {
        w->head.data = p;
        p = ngx_cpymem(p, name, fc->name.len);
        *p++ = n ? '{' : ' ';
        w->head.len = p - w->head.data;

        /* a bucket line has the brace with or without labels */

        w->bucket.data = p;
        p = ngx_cpymem(p, name, fc->name.len);
        p = ngx_cpymem(p, "_bucket{", 8);
        w->bucket.len = p - w->bucket.data;

        w->sum.data = p;
        p = ngx_cpymem(p, name, fc->name.len);
        p = ngx_cpymem(p, "_sum", 4);
        *p++ = n ? '{' : ' ';
        w->sum.len = p - w->sum.data;

        w->count.data = p;
        p = ngx_cpymem(p, name, fc->name.len);
        p = ngx_cpymem(p, "_count", 6);
        *p++ = n ? '{' : ' ';
        w->count.len = p - w->count.data;
    }

    w->fixed = 0;

    for (i = 0; i <= n; i++) {
        w->sep[i].data = p;

        if (i) {
            *p++ = '"';
        }

        if (i < n) {
            if (i) {
                *p++ = ',';
            }

            if (w->format == NGX_HTTP_PLAYARR_METRICS_FORMAT_JSON) {
                *p++ = '"';
                p = ngx_cpymem(p, fc->labels[i].data, fc->labels[i].len);
                p = ngx_cpymem(p, "\":\"", 3);

            } else {
                p = ngx_cpymem(p, fc->labels[i].data, fc->labels[i].len);
                *p++ = '=';
                *p++ = '"';
            }
        }

        w->sep[i].len = p - w->sep[i].data;
        w->fixed += w->sep[i].len;
    }

    w->bounds = NULL;

    return NGX_OK;
}


/*
 * The end of each bucket line but its count, once per set of bounds and
 * family:
 *   text: ,le="0.005"}  (and a space);
 *   JSON: ,"le":0.005 and ,"le":"+Inf";
 * without the comma when the family has no labels.
 */

static void
ngx_http_playarr_metrics_le_text(ngx_http_playarr_metrics_render_t *w,
    ngx_http_playarr_metrics_bounds_t *bounds, ngx_uint_t nlabels)
{
    u_char      *p;
    ngx_uint_t   i, json;

    json = (w->format == NGX_HTTP_PLAYARR_METRICS_FORMAT_JSON);

    p = w->lebuf;
    w->le_max = 0;

    for (i = 0; i <= bounds->n; i++) {
        w->le[i].data = p;

        if (nlabels) {
            *p++ = ',';
        }

        if (json) {
            p = ngx_cpymem(p, "\"le\":", 5);

            if (i < bounds->n) {
                p = ngx_http_playarr_metrics_number(p, bounds->le[i]);

            } else {
                p = ngx_cpymem(p, "\"+Inf\"", 6);
            }

        } else {
            p = ngx_cpymem(p, "le=\"", 4);

            if (i < bounds->n) {
                p = ngx_http_playarr_metrics_number(p, bounds->le[i]);

            } else {
                p = ngx_cpymem(p, "+Inf", 4);
            }

            *p++ = '"';
            *p++ = '}';
            *p++ = ' ';
        }

        w->le[i].len = p - w->le[i].data;
        w->le_max = ngx_max(w->le_max, w->le[i].len);
    }

    w->bounds = bounds;
}


static ngx_int_t
ngx_http_playarr_metrics_header(ngx_http_playarr_metrics_render_t *w,
    ngx_str_t *name, ngx_str_t *help, const char *type)
{
    u_char  *p;

    p = ngx_http_playarr_metrics_reserve(w, 2 * name->len + 2 * help->len
                                            + 32);
    if (p == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(p, "# HELP ", 7);
    p = ngx_cpymem(p, name->data, name->len);
    *p++ = ' ';
    p = ngx_http_playarr_metrics_escape_help(p, help);
    p = ngx_cpymem(p, "\n# TYPE ", 8);
    p = ngx_cpymem(p, name->data, name->len);
    *p++ = ' ';
    p = ngx_cpymem(p, type, ngx_strlen(type));
    *p++ = '\n';

    ngx_http_playarr_metrics_commit(w, p);

    return NGX_OK;
}


/*
 * One reserve() per series, sized from its own key; the label pairs
 * are escaped once per series, and a histogram's first bucket line up to
 * its bound is copied to the start of each of the others.
 */

static ngx_int_t
ngx_http_playarr_metrics_family_text(ngx_http_playarr_metrics_render_t *w,
    ngx_http_playarr_metrics_family_conf_t *fc)
{
    u_char                             *p, *key, *line, *lab;
    size_t                              size, line_len, lab_len;
    ngx_str_t                          *le;
    ngx_uint_t                          i, n, nb;
    ngx_atomic_uint_t                   count;
    ngx_http_playarr_metrics_series_t  *s;

    if (w->state == NGX_HTTP_PLAYARR_METRICS_RENDER_FAMILY_START) {

        if (ngx_http_playarr_metrics_header(w, &fc->name, &fc->help,
                                    ngx_http_playarr_metrics_types[fc->type])
            != NGX_OK
            || ngx_http_playarr_metrics_family_texts(w, fc) != NGX_OK)
        {
            return NGX_ERROR;
        }

        w->series = fc->shared->head;
        w->state = NGX_HTTP_PLAYARR_METRICS_RENDER_FAMILY_SERIES;
    }

    n = fc->nlabels;

    for (s = w->series; s; s = s->sibling) {

        if (ngx_http_playarr_metrics_step_over(w, s)) {
            return NGX_AGAIN;
        }

        if (s->hidden) {
            continue;
        }

        key = ngx_http_playarr_metrics_series_key(s);

        /* a line: its start, the pairs, "} ", a value and "\n" */

        size = w->bucket.len + w->fixed + 2 * s->len + 3
               + NGX_HTTP_PLAYARR_METRICS_NUMBER_MAX;

        if (fc->type != NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM) {
            p = ngx_http_playarr_metrics_reserve(w, size);
            if (p == NULL) {
                return NGX_ERROR;
            }

            p = ngx_http_playarr_metrics_copy(p, w->head.data, w->head.len);

            if (n) {
                p = ngx_http_playarr_metrics_pairs_text(w, p, key, s->len, n);
                *p++ = '}';
                *p++ = ' ';
            }

            p = ngx_http_playarr_metrics_number(p,
                                ngx_http_playarr_metrics_double(s->values[0]));
            *p++ = '\n';

            ngx_http_playarr_metrics_commit(w, p);
            continue;
        }

        /* the bounds are printed again only when they change */

        if (s->bounds != w->bounds) {
            ngx_http_playarr_metrics_le_text(w, s->bounds, n);
        }

        p = ngx_http_playarr_metrics_reserve(w, (s->bounds->n + 3)
                                                * (size + w->le_max));
        if (p == NULL) {
            return NGX_ERROR;
        }

        line = p;
        p = ngx_http_playarr_metrics_copy(p, w->bucket.data, w->bucket.len);
        lab = p;

        if (n) {
            p = ngx_http_playarr_metrics_pairs_text(w, p, key, s->len, n);
        }

        lab_len = p - lab;
        line_len = p - line;

        /* the stores through p could change s->bounds->n, as C sees it */

        nb = s->bounds->n;
        le = w->le;
        count = 0;

        for (i = 0; i <= nb; i++) {
            if (i) {
                p = ngx_http_playarr_metrics_copy(p, line, line_len);
            }

            p = ngx_http_playarr_metrics_copy16(p, &le[i]);

            count += s->values[1 + i];

            p = ngx_http_playarr_metrics_uint(p, count);
            *p++ = '\n';
        }

        p = ngx_http_playarr_metrics_copy(p, w->sum.data, w->sum.len);

        if (n) {
            p = ngx_http_playarr_metrics_copy(p, lab, lab_len);
            *p++ = '}';
            *p++ = ' ';
        }

        p = ngx_http_playarr_metrics_number(p,
                                ngx_http_playarr_metrics_double(s->values[0]));
        *p++ = '\n';

        p = ngx_http_playarr_metrics_copy(p, w->count.data, w->count.len);

        if (n) {
            p = ngx_http_playarr_metrics_copy(p, lab, lab_len);
            *p++ = '}';
            *p++ = ' ';
        }

        p = ngx_http_playarr_metrics_uint(p, count);
        *p++ = '\n';

        ngx_http_playarr_metrics_commit(w, p);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_playarr_metrics_self_text(ngx_http_playarr_metrics_render_t *w)
{
    u_char                                  *p;
    size_t                                   size;
    ngx_str_t                                name, help;
    ngx_uint_t                               i, j;
    ngx_http_playarr_metrics_store_t        *store;
    ngx_http_playarr_metrics_family_conf_t  *fc;

    store = w->store;
    fc = store->families.elts;

    ngx_str_set(&name, NGX_HTTP_PLAYARR_METRICS_IN_FLIGHT);
    ngx_str_set(&help, NGX_HTTP_PLAYARR_METRICS_IN_FLIGHT_HELP);

    if (ngx_http_playarr_metrics_header(w, &name, &help, "gauge") != NGX_OK) {
        return NGX_ERROR;
    }

    p = ngx_http_playarr_metrics_reserve(w, 128);
    if (p == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(p, NGX_HTTP_PLAYARR_METRICS_IN_FLIGHT " %ui\n",
                    ngx_http_playarr_metrics_in_flight(store));
    ngx_http_playarr_metrics_commit(w, p);

    ngx_str_set(&name, "playarr_metrics_build_info");
    ngx_str_set(&help, "Version of ngx_http_playarr_metrics_module and "
                       "of nginx");

    if (ngx_http_playarr_metrics_header(w, &name, &help, "gauge") != NGX_OK) {
        return NGX_ERROR;
    }

    p = ngx_http_playarr_metrics_reserve(w, 128);
    if (p == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(p, "playarr_metrics_build_info{version=\""
                      NGX_HTTP_PLAYARR_METRICS_VERSION "\",nginx_version=\""
                      NGINX_VERSION "\"} 1\n",
                   sizeof("playarr_metrics_build_info{version=\""
                          NGX_HTTP_PLAYARR_METRICS_VERSION
                          "\",nginx_version=\"" NGINX_VERSION "\"} 1\n") - 1);

    ngx_http_playarr_metrics_commit(w, p);

    ngx_str_set(&name, "playarr_metrics_zone_size_bytes");
    ngx_str_set(&help, "Size of the shared memory zone");

    size = store->shpool->end - store->shpool->start;

    if (ngx_http_playarr_metrics_header(w, &name, &help, "gauge") != NGX_OK) {
        return NGX_ERROR;
    }

    p = ngx_http_playarr_metrics_reserve(w, 256);
    if (p == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(p, "playarr_metrics_zone_size_bytes{zone=\"%V\"} %uz\n",
                    &store->name, size);
    ngx_http_playarr_metrics_commit(w, p);

    ngx_str_set(&name, "playarr_metrics_zone_used_bytes");
    ngx_str_set(&help, "Bytes of the shared memory zone in use");

    if (ngx_http_playarr_metrics_header(w, &name, &help, "gauge") != NGX_OK) {
        return NGX_ERROR;
    }

    p = ngx_http_playarr_metrics_reserve(w, 256);
    if (p == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(p, "playarr_metrics_zone_used_bytes{zone=\"%V\"} %uz\n",
                    &store->name, ngx_http_playarr_metrics_store_used(store));
    ngx_http_playarr_metrics_commit(w, p);

    ngx_str_set(&name, "playarr_metrics_zone_free_bytes");
    ngx_str_set(&help, "Bytes of the shared memory zone still free");

    if (ngx_http_playarr_metrics_header(w, &name, &help, "gauge") != NGX_OK) {
        return NGX_ERROR;
    }

    p = ngx_http_playarr_metrics_reserve(w, 256);
    if (p == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(p, "playarr_metrics_zone_free_bytes{zone=\"%V\"} %uz\n",
                    &store->name, ngx_http_playarr_metrics_store_free(store));
    ngx_http_playarr_metrics_commit(w, p);

    ngx_str_set(&name, "playarr_metrics_series");
    ngx_str_set(&help, "Label sets held per metric family");

    if (ngx_http_playarr_metrics_header(w, &name, &help, "gauge") != NGX_OK) {
        return NGX_ERROR;
    }

    for (i = 0; i < store->families.nelts; i++) {
        p = ngx_http_playarr_metrics_reserve(w, 256 + fc[i].name.len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        p = ngx_sprintf(p, "playarr_metrics_series{family=\"%V\"} %uA\n",
                        &fc[i].name, fc[i].shared->nseries);
        ngx_http_playarr_metrics_commit(w, p);
    }

    ngx_str_set(&name, "playarr_metrics_series_refused_total");
    ngx_str_set(&help, "New label sets folded into the overflow series "
                       "because of playarr_metrics_max_series or a full zone");

    if (ngx_http_playarr_metrics_header(w, &name, &help, "counter") != NGX_OK) {
        return NGX_ERROR;
    }

    for (i = 0; i < store->families.nelts; i++) {
        p = ngx_http_playarr_metrics_reserve(w, 256 + fc[i].name.len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        p = ngx_sprintf(p, "playarr_metrics_series_refused_total"
                           "{family=\"%V\"} %uA\n",
                        &fc[i].name, fc[i].shared->refused);
        ngx_http_playarr_metrics_commit(w, p);
    }

    ngx_str_set(&name, "playarr_metrics_updates_rejected_total");
    ngx_str_set(&help, "Metric updates refused, by source and reason");

    if (ngx_http_playarr_metrics_header(w, &name, &help, "counter") != NGX_OK) {
        return NGX_ERROR;
    }

    for (i = 0; i < NGX_HTTP_PLAYARR_METRICS_SOURCE_COUNT; i++) {
        for (j = 0; j < NGX_HTTP_PLAYARR_METRICS_REJECT_COUNT; j++) {
            p = ngx_http_playarr_metrics_reserve(w, 256);
            if (p == NULL) {
                return NGX_ERROR;
            }

            p = ngx_sprintf(p, "playarr_metrics_updates_rejected_total"
                               "{source=\"%s\",reason=\"%s\"} %uA\n",
                            ngx_http_playarr_metrics_sources[i],
                            ngx_http_playarr_metrics_reasons[j],
                            store->sh->rejected.count[i][j]);
            ngx_http_playarr_metrics_commit(w, p);
        }
    }

    return NGX_OK;
}


/*
 * prom-client's register.getMetricsAsJSON(): an array of families, each
 * {"name", "help", "type", "values": [{"value", "labels"}...],
 * "aggregator": "sum"}; a histogram's values are its buckets (with an
 * "le" label, a number, or "+Inf"), then its sum and count, each with
 * "metricName".
 */

static ngx_int_t
ngx_http_playarr_metrics_family_json(ngx_http_playarr_metrics_render_t *w,
    ngx_http_playarr_metrics_family_conf_t *fc)
{
    u_char                             *p, *key, *lab;
    double                              v;
    size_t                              size, lab_len;
    ngx_uint_t                          i, n;
    ngx_atomic_uint_t                   count;
    ngx_http_playarr_metrics_series_t  *s;

    if (w->state == NGX_HTTP_PLAYARR_METRICS_RENDER_FAMILY_START) {

        p = ngx_http_playarr_metrics_reserve(w, 2 * fc->name.len
                                                + 6 * fc->help.len + 64);
        if (p == NULL) {
            return NGX_ERROR;
        }

        /* the families are the elements of one array */

        *p++ = w->family ? ',' : '[';

        p = ngx_cpymem(p, "{\"name\":\"", 9);
        p = ngx_cpymem(p, fc->name.data, fc->name.len);
        p = ngx_cpymem(p, "\",\"help\":\"", 10);
        p = ngx_http_playarr_metrics_escape_json(p, fc->help.data,
                                                 fc->help.len);
        p = ngx_cpymem(p, "\",\"type\":\"", 10);
        p = ngx_cpymem(p, ngx_http_playarr_metrics_types[fc->type],
                       ngx_strlen(ngx_http_playarr_metrics_types[fc->type]));
        p = ngx_cpymem(p, "\",\"values\":[", 12);

        ngx_http_playarr_metrics_commit(w, p);

        if (ngx_http_playarr_metrics_family_texts(w, fc) != NGX_OK) {
            return NGX_ERROR;
        }

        w->first = 1;
        w->series = fc->shared->head;
        w->state = NGX_HTTP_PLAYARR_METRICS_RENDER_FAMILY_SERIES;
    }

    n = fc->nlabels;

    for (s = w->series; s; s = s->sibling) {

        if (ngx_http_playarr_metrics_step_over(w, s)) {
            return NGX_AGAIN;
        }

        if (s->hidden) {
            continue;
        }

        key = ngx_http_playarr_metrics_series_key(s);

        /*
         * a value: a comma, {"value":, a number, ,"labels":{, the pairs,
         * the end of a histogram's value (the longest) or }}
         */

        size = 1 + 9 + NGX_HTTP_PLAYARR_METRICS_NUMBER_MAX + 11 + w->fixed
               + 6 * s->len + w->bucket.len;

        if (fc->type != NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM) {
            p = ngx_http_playarr_metrics_reserve(w, size);
            if (p == NULL) {
                return NGX_ERROR;
            }

            if (!w->first) {
                *p++ = ',';
            }

            w->first = 0;

            p = ngx_http_playarr_metrics_copy(p, (u_char *) "{\"value\":", 9);
            p = ngx_http_playarr_metrics_json_number(p,
                                ngx_http_playarr_metrics_double(s->values[0]));
            p = ngx_http_playarr_metrics_copy(p, (u_char *) ",\"labels\":{",
                                              11);

            if (n) {
                p = ngx_http_playarr_metrics_pairs_json(w, p, key, s->len, n);
            }

            *p++ = '}';
            *p++ = '}';

            ngx_http_playarr_metrics_commit(w, p);
            continue;
        }

        if (s->bounds != w->bounds) {
            ngx_http_playarr_metrics_le_text(w, s->bounds, n);
        }

        p = ngx_http_playarr_metrics_reserve(w, (s->bounds->n + 3)
                                                * (size + w->le_max));
        if (p == NULL) {
            return NGX_ERROR;
        }

        /* the pairs are escaped in the first bucket, copied to the others */

        lab = NULL;
        lab_len = 0;
        count = 0;

        for (i = 0; i <= s->bounds->n; i++) {
            if (!w->first) {
                *p++ = ',';
            }

            w->first = 0;

            count += s->values[1 + i];

            p = ngx_http_playarr_metrics_copy(p, (u_char *) "{\"value\":", 9);
            p = ngx_http_playarr_metrics_json_count(p, count);
            p = ngx_http_playarr_metrics_copy(p, (u_char *) ",\"labels\":{",
                                              11);

            if (lab) {
                p = ngx_http_playarr_metrics_copy(p, lab, lab_len);

            } else {
                lab = p;

                if (n) {
                    p = ngx_http_playarr_metrics_pairs_json(w, p, key,
                                                             s->len, n);
                }

                lab_len = p - lab;
            }

            p = ngx_http_playarr_metrics_copy16(p, &w->le[i]);
            p = ngx_http_playarr_metrics_copy(p, w->bucket.data,
                                              w->bucket.len);
        }

        v = ngx_http_playarr_metrics_double(s->values[0]);

        p = ngx_http_playarr_metrics_copy(p, (u_char *) ",{\"value\":", 10);
        p = ngx_http_playarr_metrics_json_number(p, v);
        p = ngx_http_playarr_metrics_copy(p, (u_char *) ",\"labels\":{", 11);
        p = ngx_http_playarr_metrics_copy(p, lab, lab_len);
        p = ngx_http_playarr_metrics_copy(p, w->sum.data, w->sum.len);

        p = ngx_http_playarr_metrics_copy(p, (u_char *) ",{\"value\":", 10);
        p = ngx_http_playarr_metrics_json_count(p, count);
        p = ngx_http_playarr_metrics_copy(p, (u_char *) ",\"labels\":{", 11);
        p = ngx_http_playarr_metrics_copy(p, lab, lab_len);
        p = ngx_http_playarr_metrics_copy(p, w->count.data, w->count.len);

        ngx_http_playarr_metrics_commit(w, p);
    }

    p = ngx_http_playarr_metrics_reserve(w, 32);
    if (p == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(p, "],\"aggregator\":\"sum\"}", 21);

    ngx_http_playarr_metrics_commit(w, p);

    return NGX_OK;
}


/* a JSON value: a number, or null (JSON has no NaN nor infinities) */

static u_char *
ngx_http_playarr_metrics_json_number(u_char *p, double v)
{
    if (isfinite(v)) {
        return ngx_http_playarr_metrics_number(p, v);
    }

    return ngx_cpymem(p, "null", 4);
}


/* a count as the number it reads as in JavaScript: a double */

static ngx_inline u_char *
ngx_http_playarr_metrics_json_count(u_char *p, uint64_t n)
{
    if (n < ((uint64_t) 1 << 53)) {
        return ngx_http_playarr_metrics_uint(p, n);
    }

    return ngx_http_playarr_metrics_number(p, (double) n);
}


/*
 * A renderer of the whole body, prometheus or JSON, step by step; the
 * tag marks its buffers for ngx_chain_update_chains().
 */

ngx_http_playarr_metrics_render_t *
ngx_http_playarr_metrics_render_create(ngx_http_request_t *r,
    ngx_http_playarr_metrics_store_t *store, ngx_uint_t format,
    ngx_buf_tag_t tag)
{
    ngx_http_playarr_metrics_render_t  *w;

    w = ngx_pcalloc(r->pool, sizeof(ngx_http_playarr_metrics_render_t));
    if (w == NULL) {
        return NULL;
    }

    w->request = r;
    w->store = store;
    w->format = format;
    w->tag = tag;
    w->last = &w->out;

    return w;
}


/*
 * One step: whole series from the cursor on, until about limit bytes (0:
 * no limit), in buffers taken from *free when they are large enough.
 * NGX_AGAIN: *out holds the step, possibly nothing, and more is to come;
 * NGX_OK: *out ends with the last buffer of the body.
 */

ngx_int_t
ngx_http_playarr_metrics_render(ngx_http_playarr_metrics_render_t *w,
    ngx_chain_t **free, size_t limit, ngx_chain_t **out)
{
    u_char                                  *p;
    ngx_int_t                                rc;
    ngx_uint_t                               n;
    ngx_http_playarr_metrics_family_conf_t  *fc;

    *out = NULL;

    if (w->done) {
        return NGX_OK;
    }

    w->free = free;
    w->stop = limit ? w->len + (off_t) limit : NGX_MAX_OFF_T_VALUE;
    w->walked = 0;

    fc = w->store->families.elts;
    n = w->store->families.nelts;

    rc = NGX_OK;

    while (w->family < n) {

        if (w->skip && w->skip[w->family]) {
            w->family++;
            continue;
        }

        if (w->format == NGX_HTTP_PLAYARR_METRICS_FORMAT_JSON) {
            rc = ngx_http_playarr_metrics_family_json(w, &fc[w->family]);

        } else {
            rc = ngx_http_playarr_metrics_family_text(w, &fc[w->family]);
        }

        if (rc != NGX_OK) {
            break;
        }

        w->state = NGX_HTTP_PLAYARR_METRICS_RENDER_FAMILY_START;
        w->family++;
    }

    if (rc == NGX_OK && w->app) {
        rc = (w->format == NGX_HTTP_PLAYARR_METRICS_FORMAT_JSON)
             ? ngx_http_playarr_metrics_app_json(w)
             : ngx_http_playarr_metrics_app_text(w);
    }

    if (rc == NGX_OK) {

        if (w->format == NGX_HTTP_PLAYARR_METRICS_FORMAT_JSON) {
            p = ngx_http_playarr_metrics_reserve(w, 512);
            if (p == NULL) {
                return NGX_ERROR;
            }

            *p++ = n ? ',' : '[';

            if (w->merge) {
                p = ngx_sprintf(p, "{\"name\":\"playarr_metrics_merge_up\","
                                "\"help\":\"Whether the app's own metrics "
                                "were merged into this scrape "
                                "(playarr_metrics_merge)\",\"type\":\"gauge\","
                                "\"values\":[{\"value\":%ui,\"labels\":{}}],"
                                "\"aggregator\":\"sum\"},",
                                (ngx_uint_t) (w->merge == 2));
            }

            /* the one self metric that Playarr's UI reads: the last */

            p = ngx_sprintf(p, "{\"name\":\"" NGX_HTTP_PLAYARR_METRICS_IN_FLIGHT
                               "\",\"help\":\""
                               NGX_HTTP_PLAYARR_METRICS_IN_FLIGHT_HELP
                               "\",\"type\":\"gauge\",\"values\":"
                               "[{\"value\":%ui,\"labels\":{}}],"
                               "\"aggregator\":\"sum\"}]",
                            ngx_http_playarr_metrics_in_flight(w->store));
            ngx_http_playarr_metrics_commit(w, p);

        } else if (ngx_http_playarr_metrics_self_text(w) != NGX_OK
                   || (w->merge
                       && ngx_http_playarr_metrics_merge_up_text(w)
                          != NGX_OK))
        {
            return NGX_ERROR;
        }

        if (ngx_http_playarr_metrics_finish(w, NULL) == NULL) {
            return NGX_ERROR;
        }

    } else if (rc == NGX_ERROR) {
        return NGX_ERROR;

    } else if (w->buf) {
        /* a step is sent whole, never kept back by a filter */
        w->buf->flush = 1;
    }

    *out = w->out;

    w->out = NULL;
    w->last = &w->out;
    w->buf = NULL;
    w->free = NULL;

    return rc;
}


/*
 * playarr_metrics_merge: the app's families (NULL: the merge failed) and
 * the family rule.  A family both sides have is served once: nginx's when
 * it is a built-in HTTP family or has series in the zone, else the app's.
 * An app's family whose samples would be named as one of nginx's, or as
 * a self metric, is not served either.
 */

ngx_int_t
ngx_http_playarr_metrics_render_merge(ngx_http_playarr_metrics_render_t *w,
    ngx_http_playarr_metrics_app_t *app, ngx_uint_t up)
{
    ngx_str_t                               *sfx;
    ngx_uint_t                               i, n;
    ngx_pool_t                              *pool;
    ngx_http_playarr_metrics_app_family_t   *af;
    ngx_http_playarr_metrics_family_conf_t  *fc;

    w->merge = up ? 2 : 1;

    if (app == NULL) {
        return NGX_OK;
    }

    pool = w->request->pool;
    fc = w->store->families.elts;
    n = w->store->families.nelts;

    w->skip = ngx_pcalloc(pool, (n + 1) * sizeof(ngx_uint_t));
    if (w->skip == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        af = ngx_http_playarr_metrics_merge_owner(app, fc[i].name.data,
                                                  fc[i].name.len);
        if (af) {
            if (af->name.len == fc[i].name.len
                && i >= NGX_HTTP_PLAYARR_METRICS_FAMILY_HTTP_COUNT
                && !ngx_http_playarr_metrics_has_series(&fc[i]))
            {
                w->skip[i] = 1;
                continue;
            }

            af->dropped = 1;
        }

        if (fc[i].type != NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM) {
            continue;
        }

        for (sfx = ngx_http_playarr_metrics_histogram_suffixes;
             sfx->len;
             sfx++)
        {
            ngx_http_playarr_metrics_app_drop(app, pool, &fc[i].name, sfx);
        }
    }

    for (sfx = ngx_http_playarr_metrics_self_names; sfx->len; sfx++) {
        ngx_http_playarr_metrics_app_drop(app, pool, sfx, NULL);
    }

    w->app = app;

    return NGX_OK;
}


/* the app's family whose samples a name (and suffix) would be: dropped */

static void
ngx_http_playarr_metrics_app_drop(ngx_http_playarr_metrics_app_t *app,
    ngx_pool_t *pool, ngx_str_t *name, ngx_str_t *suffix)
{
    u_char                                 *p;
    size_t                                  len;
    ngx_http_playarr_metrics_app_family_t  *af;

    p = name->data;
    len = name->len;

    if (suffix) {
        p = ngx_pnalloc(pool, len + suffix->len);
        if (p == NULL) {
            return;
        }

        ngx_memcpy(p, name->data, len);
        ngx_memcpy(p + len, suffix->data, suffix->len);
        len += suffix->len;
    }

    af = ngx_http_playarr_metrics_merge_owner(app, p, len);

    if (af) {
        af->dropped = 1;
    }
}


/*
 * A family has series in the zone when one is shown; the one series of
 * a family without labels is shown from the start, reading 0: it counts
 * once it reads anything else.
 */

static ngx_uint_t
ngx_http_playarr_metrics_has_series(
    ngx_http_playarr_metrics_family_conf_t *fc)
{
    ngx_uint_t                          i, n;
    ngx_http_playarr_metrics_series_t  *s;

    if (fc->shared == NULL) {
        return 0;
    }

    for (s = fc->shared->head; s; s = s->sibling) {
        if (s->hidden) {
            continue;
        }

        if (fc->nlabels) {
            return 1;
        }

        n = s->bounds ? s->bounds->n + 2 : 1;

        for (i = 0; i < n; i++) {
            if (s->values[i] != 0) {
                return 1;
            }
        }
    }

    return 0;
}


/* the app's families that are served, after nginx's, a step at a time */

static ngx_int_t
ngx_http_playarr_metrics_app_text(ngx_http_playarr_metrics_render_t *w)
{
    u_char                                 *p;
    ngx_http_playarr_metrics_sample_t      *s;
    ngx_http_playarr_metrics_app_family_t  *af;

    af = w->app->families.elts;

    for ( /* void */ ;
         w->app_family < w->app->families.nelts;
         w->app_family++)
    {
        if (af[w->app_family].dropped) {
            continue;
        }

        if (w->state == NGX_HTTP_PLAYARR_METRICS_RENDER_FAMILY_START) {
            p = ngx_http_playarr_metrics_reserve(w,
                     ngx_http_playarr_metrics_merge_header_size(
                                                       &af[w->app_family]));
            if (p == NULL) {
                return NGX_ERROR;
            }

            p = ngx_http_playarr_metrics_merge_header(p, &af[w->app_family]);
            ngx_http_playarr_metrics_commit(w, p);

            w->app_sample = 0;
            w->state = NGX_HTTP_PLAYARR_METRICS_RENDER_FAMILY_SERIES;
        }

        s = af[w->app_family].samples.elts;

        for ( /* void */ ;
             w->app_sample < af[w->app_family].samples.nelts;
             w->app_sample++)
        {
            if (w->len >= w->stop
                || w->walked++ >= NGX_HTTP_PLAYARR_METRICS_STEP_SERIES)
            {
                return NGX_AGAIN;
            }

            p = ngx_http_playarr_metrics_reserve(w,
                       ngx_http_playarr_metrics_merge_sample_size(
                                                       &s[w->app_sample]));
            if (p == NULL) {
                return NGX_ERROR;
            }

            p = ngx_http_playarr_metrics_merge_sample_text(p,
                                                        &s[w->app_sample]);
            ngx_http_playarr_metrics_commit(w, p);
        }

        w->state = NGX_HTTP_PLAYARR_METRICS_RENDER_FAMILY_START;
    }

    return NGX_OK;
}


/*
 * JSON: each family of the app's that is served, whole, after nginx's
 * (there are always some: the built-in ones), a step at a time
 */

static ngx_int_t
ngx_http_playarr_metrics_app_json(ngx_http_playarr_metrics_render_t *w)
{
    u_char                                 *p;
    ngx_http_playarr_metrics_app_family_t  *af;

    af = w->app->families.elts;

    for ( /* void */ ;
         w->app_family < w->app->families.nelts;
         w->app_family++)
    {
        if (af[w->app_family].dropped) {
            continue;
        }

        if (w->len >= w->stop) {
            return NGX_AGAIN;
        }

        p = ngx_http_playarr_metrics_reserve(w,
                                             af[w->app_family].json.len + 1);
        if (p == NULL) {
            return NGX_ERROR;
        }

        *p++ = ',';
        p = ngx_cpymem(p, af[w->app_family].json.data,
                       af[w->app_family].json.len);
        ngx_http_playarr_metrics_commit(w, p);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_playarr_metrics_merge_up_text(ngx_http_playarr_metrics_render_t *w)
{
    u_char     *p;
    ngx_str_t   name, help;

    ngx_str_set(&name, "playarr_metrics_merge_up");
    ngx_str_set(&help, "Whether the app's own metrics were merged into "
                       "this scrape (playarr_metrics_merge)");

    if (ngx_http_playarr_metrics_header(w, &name, &help, "gauge") != NGX_OK) {
        return NGX_ERROR;
    }

    p = ngx_http_playarr_metrics_reserve(w, 32);
    if (p == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(p, "playarr_metrics_merge_up %ui\n",
                    (ngx_uint_t) (w->merge == 2));
    ngx_http_playarr_metrics_commit(w, p);

    return NGX_OK;
}


static ngx_chain_t *
ngx_http_playarr_metrics_whole(ngx_http_request_t *r,
    ngx_http_playarr_metrics_main_conf_t *pmcf, ngx_uint_t format,
    off_t *len)
{
    ngx_chain_t                        *out;
    ngx_http_playarr_metrics_render_t  *w;

    w = ngx_http_playarr_metrics_render_create(r, pmcf->store, format, NULL);
    if (w == NULL) {
        return NULL;
    }

    if (ngx_http_playarr_metrics_render(w, NULL, 0, &out) != NGX_OK) {
        return NULL;
    }

    *len = w->len;

    return out;
}


/* the whole body at once, in one chain (subrequests, tests) */

ngx_chain_t *
ngx_http_playarr_metrics_prometheus(ngx_http_request_t *r,
    ngx_http_playarr_metrics_main_conf_t *pmcf, off_t *len)
{
    return ngx_http_playarr_metrics_whole(r, pmcf,
                                    NGX_HTTP_PLAYARR_METRICS_FORMAT_PROMETHEUS,
                                    len);
}


ngx_chain_t *
ngx_http_playarr_metrics_json(ngx_http_request_t *r,
    ngx_http_playarr_metrics_main_conf_t *pmcf, off_t *len)
{
    return ngx_http_playarr_metrics_whole(r, pmcf,
                                          NGX_HTTP_PLAYARR_METRICS_FORMAT_JSON,
                                          len);
}
