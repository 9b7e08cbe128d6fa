
/*
 * Copyright (C) Playarr metrics module authors
 */


/*
 * Stand-ins for exactly the nginx core functions and variables that the
 * module's store.c, state.c, route.c, update.c, family.c, format.c and
 * token.c use, so that the fuzz harnesses link those files unchanged
 * without the nginx core (Debian ships its headers only).
 *
 * They are small on purpose, and strict where nginx is lenient:
 *
 * - pools: every allocation is its own malloc() block, freed with the
 *   pool, so that AddressSanitizer sees an overflow of any of them;
 *   ngx_palloc() and ngx_pnalloc() memory is filled with 0xa5, not zero;
 * - the shared zone: a real ngx_slab_pool_t header whose allocations are
 *   malloc() blocks too, counted in pages as nginx's slab allocator does
 *   (a request over half a page takes whole pages, a smaller one its size
 *   rounded up to a power of two), failing when the zone's pages are used
 *   up; the slab mutex is checked: locking it twice (a deadlock in nginx),
 *   unlocking it when free, ngx_slab_alloc() with it held or
 *   ngx_slab_alloc_locked() without it abort;
 * - ngx_vslprintf(): the conversions nginx documents, integers, strings
 *   and ngx_str_t; an unknown one aborts rather than print something;
 * - logging formats every message, hands it to fuzz_log_hook, prints
 *   nothing unless FUZZ_LOG is set in the environment.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "fuzz.h"


#define FUZZ_FILL  0xa5


typedef struct fuzz_block_s  fuzz_block_t;

struct fuzz_block_s {
    fuzz_block_t     *next;
    void             *data;
    size_t            size;
    ngx_uint_t        pages;     /* whole pages, or 0 */
    size_t            small;     /* bytes in shared small-object pages */
};


typedef struct {
    ngx_slab_pool_t   pool;      /* first: shm.addr points here */
    ngx_uint_t        pages;     /* in the zone */
    ngx_uint_t        big;       /* pages taken by large allocations */
    size_t            small;     /* bytes taken by small ones */
    fuzz_block_t     *blocks;
} fuzz_zone_t;


static void *fuzz_alloc(ngx_pool_t *pool, size_t size, int fill);
static u_char *fuzz_number(u_char *buf, u_char *last, uint64_t ui64,
    u_char zero, ngx_uint_t hex, ngx_uint_t width);
static void fuzz_log_message(ngx_uint_t level, ngx_err_t err,
    const char *fmt, va_list args);
static ngx_uint_t fuzz_zone_used(fuzz_zone_t *zone);


static uint32_t        fuzz_crc32_table16[16];


volatile ngx_cycle_t  *ngx_cycle;
volatile ngx_time_t   *ngx_cached_time;
ngx_uint_t             ngx_pagesize = 4096;
ngx_uint_t             ngx_pagesize_shift = 12;
ngx_uint_t             ngx_cacheline_size = 64;
ngx_pid_t              ngx_pid = 1;
ngx_pid_t              ngx_parent;
ngx_uint_t             ngx_inherited;
ngx_uint_t             ngx_test_config;
ngx_module_t           ngx_core_module;
uint32_t               ngx_crc32_table256[256];
uint32_t              *ngx_crc32_table_short = fuzz_crc32_table16;

ngx_log_t              fuzz_log;
ngx_uint_t             fuzz_fail_after;
ngx_uint_t             fuzz_slab_fail_after;
void                 (*fuzz_log_hook)(ngx_uint_t level, u_char *msg,
                                      size_t len);

static ngx_cycle_t     fuzz_cycle;
static ngx_time_t      fuzz_time;
static ngx_uint_t      fuzz_log_stderr;


void
fuzz_init(void)
{
    uint32_t    c;
    ngx_uint_t  i, k;

    /* CRC-32 (IEEE 802.3, reflected): tables for a byte and a nibble */

    for (i = 0; i < 256; i++) {
        c = (uint32_t) i;

        for (k = 0; k < 8; k++) {
            c = (c & 1) ? 0xedb88320 ^ (c >> 1) : c >> 1;

            if (k == 3 && i < 16) {
                fuzz_crc32_table16[i] = c;
            }
        }

        ngx_crc32_table256[i] = c;
    }

    fuzz_log.log_level = NGX_LOG_DEBUG | NGX_LOG_DEBUG_ALL;

    /* an empty list of shared zones: no zone of the previous cycle */

    fuzz_cycle.log = &fuzz_log;
    fuzz_cycle.shared_memory.last = &fuzz_cycle.shared_memory.part;
    fuzz_cycle.shared_memory.size = sizeof(ngx_shm_zone_t);
    fuzz_cycle.shared_memory.nalloc = 1;
    ngx_cycle = &fuzz_cycle;

    fuzz_time.sec = time(NULL);
    ngx_cached_time = &fuzz_time;

    fuzz_log_stderr = (getenv("FUZZ_LOG") != NULL);
}


void
fuzz_fatal(const char *fmt, ...)
{
    va_list  args;

    fprintf(stderr, "FUZZ: ");
    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);
    fprintf(stderr, "\n");

    abort();
}


/* memory */

void *
ngx_alloc(size_t size, ngx_log_t *log)
{
    if (fuzz_fail_after && --fuzz_fail_after == 0) {
        return NULL;
    }

    return malloc(size ? size : 1);
}


void *
ngx_calloc(size_t size, ngx_log_t *log)
{
    void  *p;

    p = ngx_alloc(size, log);
    if (p) {
        ngx_memzero(p, size);
    }

    return p;
}


/* pools */

ngx_pool_t *
ngx_create_pool(size_t size, ngx_log_t *log)
{
    ngx_pool_t  *pool;

    pool = calloc(1, sizeof(ngx_pool_t));
    if (pool == NULL) {
        return NULL;
    }

    pool->max = size;
    pool->current = pool;
    pool->log = log;

    return pool;
}


void
ngx_destroy_pool(ngx_pool_t *pool)
{
    ngx_pool_large_t    *l, *next;
    ngx_pool_cleanup_t  *c;

    for (c = pool->cleanup; c; c = c->next) {
        if (c->handler) {
            c->handler(c->data);
        }
    }

    for (l = pool->large; l; l = next) {
        next = l->next;
        free(l->alloc);
        free(l);
    }

    free(pool);
}


static void *
fuzz_alloc(ngx_pool_t *pool, size_t size, int fill)
{
    void              *p;
    ngx_pool_large_t  *l;

    if (fuzz_fail_after && --fuzz_fail_after == 0) {
        return NULL;
    }

    p = malloc(size ? size : 1);
    if (p == NULL) {
        return NULL;
    }

    l = malloc(sizeof(ngx_pool_large_t));
    if (l == NULL) {
        free(p);
        return NULL;
    }

    memset(p, fill, size);

    l->alloc = p;
    l->next = pool->large;
    pool->large = l;

    return p;
}


void *
ngx_palloc(ngx_pool_t *pool, size_t size)
{
    return fuzz_alloc(pool, size, FUZZ_FILL);
}


void *
ngx_pnalloc(ngx_pool_t *pool, size_t size)
{
    return fuzz_alloc(pool, size, FUZZ_FILL);
}


void *
ngx_pcalloc(ngx_pool_t *pool, size_t size)
{
    return fuzz_alloc(pool, size, 0);
}


ngx_pool_cleanup_t *
ngx_pool_cleanup_add(ngx_pool_t *p, size_t size)
{
    ngx_pool_cleanup_t  *c;

    c = ngx_palloc(p, sizeof(ngx_pool_cleanup_t));
    if (c == NULL) {
        return NULL;
    }

    c->data = NULL;

    if (size) {
        c->data = ngx_palloc(p, size);
        if (c->data == NULL) {
            return NULL;
        }
    }

    c->handler = NULL;
    c->next = p->cleanup;
    p->cleanup = c;

    return c;
}


/* arrays, lists, buffers */

ngx_array_t *
ngx_array_create(ngx_pool_t *p, ngx_uint_t n, size_t size)
{
    ngx_array_t  *a;

    a = ngx_palloc(p, sizeof(ngx_array_t));
    if (a == NULL) {
        return NULL;
    }

    if (ngx_array_init(a, p, n, size) != NGX_OK) {
        return NULL;
    }

    return a;
}


/* a full array moves to a block twice as large; the old one stays valid */

void *
ngx_array_push(ngx_array_t *a)
{
    return ngx_array_push_n(a, 1);
}


void *
ngx_array_push_n(ngx_array_t *a, ngx_uint_t n)
{
    void        *elt, *new;
    ngx_uint_t   nalloc;

    if (a->nelts + n > a->nalloc) {
        nalloc = 2 * ngx_max(n, a->nalloc);

        new = ngx_palloc(a->pool, nalloc * a->size);
        if (new == NULL) {
            return NULL;
        }

        ngx_memcpy(new, a->elts, a->nelts * a->size);
        a->elts = new;
        a->nalloc = nalloc;
    }

    elt = (u_char *) a->elts + a->size * a->nelts;
    a->nelts += n;

    return elt;
}


void *
ngx_list_push(ngx_list_t *l)
{
    void             *elt;
    ngx_list_part_t  *last;

    last = l->last;

    if (last->nelts == l->nalloc) {

        last = ngx_palloc(l->pool, sizeof(ngx_list_part_t));
        if (last == NULL) {
            return NULL;
        }

        last->elts = ngx_palloc(l->pool, l->nalloc * l->size);
        if (last->elts == NULL) {
            return NULL;
        }

        last->nelts = 0;
        last->next = NULL;

        l->last->next = last;
        l->last = last;
    }

    elt = (char *) last->elts + l->size * last->nelts;
    last->nelts++;

    return elt;
}


ngx_buf_t *
ngx_create_temp_buf(ngx_pool_t *pool, size_t size)
{
    ngx_buf_t  *b;

    b = ngx_pcalloc(pool, sizeof(ngx_buf_t));
    if (b == NULL) {
        return NULL;
    }

    b->start = ngx_palloc(pool, size);
    if (b->start == NULL) {
        return NULL;
    }

    b->pos = b->start;
    b->last = b->start;
    b->end = b->start + size;
    b->temporary = 1;

    return b;
}


ngx_chain_t *
ngx_alloc_chain_link(ngx_pool_t *pool)
{
    return ngx_palloc(pool, sizeof(ngx_chain_t));
}


/* strings */

ngx_int_t
ngx_atoi(u_char *line, size_t n)
{
    ngx_int_t  value;

    if (n == 0) {
        return NGX_ERROR;
    }

    for (value = 0; n--; line++) {
        if (*line < '0' || *line > '9' || value > NGX_MAX_INT_T_VALUE / 10) {
            return NGX_ERROR;
        }

        value = value * 10 + (*line - '0');
    }

    return value < 0 ? NGX_ERROR : value;
}


void
ngx_strlow(u_char *dst, u_char *src, size_t n)
{
    while (n--) {
        *dst++ = ngx_tolower(*src);
        src++;
    }
}


ngx_int_t
ngx_strncasecmp(u_char *s1, u_char *s2, size_t n)
{
    ngx_uint_t  c1, c2;

    while (n--) {
        c1 = ngx_tolower(*s1);
        c2 = ngx_tolower(*s2);

        if (c1 != c2) {
            return c1 - c2;
        }

        if (c1 == 0) {
            return 0;
        }

        s1++;
        s2++;
    }

    return 0;
}


u_char *
ngx_cpystrn(u_char *dst, u_char *src, size_t n)
{
    if (n == 0) {
        return dst;
    }

    while (--n) {
        *dst = *src;

        if (*dst == '\0') {
            return dst;
        }

        dst++;
        src++;
    }

    *dst = '\0';

    return dst;
}


u_char *
ngx_pstrdup(ngx_pool_t *pool, ngx_str_t *src)
{
    u_char  *dst;

    dst = ngx_pnalloc(pool, src->len);
    if (dst == NULL) {
        return NULL;
    }

    ngx_memcpy(dst, src->data, src->len);

    return dst;
}


u_char *
ngx_hex_dump(u_char *dst, u_char *src, size_t len)
{
    static u_char  hex[] = "0123456789abcdef";

    while (len--) {
        *dst++ = hex[*src >> 4];
        *dst++ = hex[*src++ & 0xf];
    }

    return dst;
}


/* base64url without padding; decoding as nginx does, "=" ends the input */

static u_char  fuzz_b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";


void
ngx_encode_base64url(ngx_str_t *dst, ngx_str_t *src)
{
    u_char  *d, *s;
    size_t   len;

    s = src->data;
    len = src->len;
    d = dst->data;

    while (len > 2) {
        *d++ = fuzz_b64url[(s[0] >> 2) & 0x3f];
        *d++ = fuzz_b64url[((s[0] & 3) << 4) | (s[1] >> 4)];
        *d++ = fuzz_b64url[((s[1] & 0x0f) << 2) | (s[2] >> 6)];
        *d++ = fuzz_b64url[s[2] & 0x3f];
        s += 3;
        len -= 3;
    }

    if (len) {
        *d++ = fuzz_b64url[(s[0] >> 2) & 0x3f];

        if (len == 1) {
            *d++ = fuzz_b64url[(s[0] & 3) << 4];

        } else {
            *d++ = fuzz_b64url[((s[0] & 3) << 4) | (s[1] >> 4)];
            *d++ = fuzz_b64url[(s[1] & 0x0f) << 2];
        }
    }

    dst->len = d - dst->data;
}


ngx_int_t
ngx_decode_base64url(ngx_str_t *dst, ngx_str_t *src)
{
    u_char  *d, *s, *p;
    size_t   len, i;
    u_char   v[4];

    for (len = 0; len < src->len; len++) {
        if (src->data[len] == '=') {
            break;
        }

        p = (u_char *) strchr((char *) fuzz_b64url, src->data[len]);

        if (src->data[len] == '\0' || p == NULL) {
            return NGX_ERROR;
        }
    }

    if (len % 4 == 1) {
        return NGX_ERROR;
    }

    s = src->data;
    d = dst->data;

    while (len) {
        for (i = 0; i < 4 && i < len; i++) {
            v[i] = (u_char) (strchr((char *) fuzz_b64url, s[i])
                             - (char *) fuzz_b64url);
        }

        *d++ = (u_char) (v[0] << 2 | v[1] >> 4);

        if (len > 2) {
            *d++ = (u_char) (v[1] << 4 | v[2] >> 2);
        }

        if (len > 3) {
            *d++ = (u_char) (v[2] << 6 | v[3]);
        }

        s += ngx_min(len, 4);
        len -= ngx_min(len, 4);
    }

    dst->len = d - dst->data;

    return NGX_OK;
}


void
ngx_explicit_memzero(void *buf, size_t n)
{
    ngx_memzero(buf, n);
    __asm__ __volatile__ ("" : : "r" (buf) : "memory");
}


/* nginx's hash: key * 31 + byte */

ngx_uint_t
ngx_hash_key(u_char *data, size_t len)
{
    ngx_uint_t  i, key;

    key = 0;

    for (i = 0; i < len; i++) {
        key = ngx_hash(key, data[i]);
    }

    return key;
}


/*
 * One UTF-8 character as nginx decodes it: the code point, 0xffffffff for
 * an invalid sequence (p moved on), 0xfffffffe when n is too short for it
 * (p unchanged).  Like nginx, a continuation byte is only checked to be
 * 0x80 or more, and code points up to 0x1fffff come back as such.
 */

uint32_t
ngx_utf8_decode(u_char **p, size_t n)
{
    size_t    len;
    uint32_t  u, c, min;

    u = **p;

    if (u >= 0xf0) {
        u &= 0x07;
        len = 3;
        min = 0x10000;

    } else if (u >= 0xe0) {
        u &= 0x0f;
        len = 2;
        min = 0x800;

    } else if (u >= 0xc2) {
        u &= 0x1f;
        len = 1;
        min = 0x80;

    } else {
        (*p)++;
        return 0xffffffff;
    }

    if (n - 1 < len) {
        return 0xfffffffe;
    }

    (*p)++;

    for ( /* void */ ; len; len--) {
        c = *(*p)++;

        if (c < 0x80) {
            return 0xffffffff;
        }

        u = (u << 6) | (c & 0x3f);
    }

    return (u >= min) ? u : 0xffffffff;
}


/* formatted output */

u_char * ngx_cdecl
ngx_sprintf(u_char *buf, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, (void *) -1, fmt, args);
    va_end(args);

    return p;
}


u_char * ngx_cdecl
ngx_snprintf(u_char *buf, size_t max, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, buf + max, fmt, args);
    va_end(args);

    return p;
}


u_char * ngx_cdecl
ngx_slprintf(u_char *buf, u_char *last, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, last, fmt, args);
    va_end(args);

    return p;
}


/*
 * nginx's conversions: %[0][width][u][x|X] with O (off_t), T (time_t),
 * z (size_t), i (ngx_int_t, "m" for its full width), d (int), l (long),
 * D (int32_t), L (int64_t), A (ngx_atomic_int_t, "m" too), M (ngx_msec_t),
 * P (ngx_pid_t), p (pointer); V (ngx_str_t *), v (variable value),
 * s (NUL-terminated or, with "*", of a size_t length), Z (NUL),
 * N (LF), c (char), %.  Nothing is written at or past last.
 */

u_char *
ngx_vslprintf(u_char *buf, u_char *last, const char *fmt, va_list args)
{
    u_char                *p, zero;
    size_t                 len, slen;
    int64_t                i64;
    uint64_t               ui64;
    ngx_str_t             *v;
    ngx_msec_t             ms;
    ngx_uint_t             width, sign, hex, max_width;
    ngx_variable_value_t  *vv;

#define fuzz_room()  ((size_t) ((uintptr_t) last - (uintptr_t) buf))

    while (*fmt && buf < last) {

        if (*fmt != '%') {
            *buf++ = *fmt++;
            continue;
        }

        fmt++;

        zero = (u_char) ((*fmt == '0') ? '0' : ' ');
        width = 0;
        sign = 1;
        hex = 0;
        max_width = 0;
        slen = (size_t) -1;
        i64 = 0;
        ui64 = 0;

        while (*fmt >= '0' && *fmt <= '9') {
            width = width * 10 + (*fmt++ - '0');
        }

        for ( ;; ) {
            switch (*fmt) {

            case 'u':
                sign = 0;
                fmt++;
                continue;

            case 'm':
                max_width = 1;
                fmt++;
                continue;

            case 'X':
                hex = 2;
                sign = 0;
                fmt++;
                continue;

            case 'x':
                hex = 1;
                sign = 0;
                fmt++;
                continue;

            case '*':
                slen = va_arg(args, size_t);
                fmt++;
                continue;

            default:
                break;
            }

            break;
        }

        switch (*fmt) {

        case 'V':
            v = va_arg(args, ngx_str_t *);

            if (hex) {
                fuzz_fatal("ngx_vslprintf(): %%xV is not supported");
            }

            len = ngx_min(fuzz_room(), v->len);
            buf = ngx_cpymem(buf, v->data, len);
            fmt++;
            continue;

        case 'v':
            vv = va_arg(args, ngx_variable_value_t *);

            len = ngx_min(fuzz_room(), vv->len);
            buf = ngx_cpymem(buf, vv->data, len);
            fmt++;
            continue;

        case 's':
            p = va_arg(args, u_char *);

            if (hex) {
                fuzz_fatal("ngx_vslprintf(): %%xs is not supported");
            }

            if (slen == (size_t) -1) {
                while (*p && buf < last) {
                    *buf++ = *p++;
                }

            } else {
                len = ngx_min(fuzz_room(), slen);
                buf = ngx_cpymem(buf, p, len);
            }

            fmt++;
            continue;

        case 'O':
            i64 = (int64_t) va_arg(args, off_t);
            sign = 1;
            break;

        case 'P':
            i64 = (int64_t) va_arg(args, ngx_pid_t);
            sign = 1;
            break;

        case 'T':
            i64 = (int64_t) va_arg(args, time_t);
            sign = 1;
            break;

        case 'M':
            ms = (ngx_msec_t) va_arg(args, ngx_msec_t);

            if ((ngx_msec_int_t) ms == -1) {
                sign = 1;
                i64 = -1;

            } else {
                sign = 0;
                ui64 = (uint64_t) ms;
            }

            break;

        case 'z':
            if (sign) {
                i64 = (int64_t) va_arg(args, ssize_t);
            } else {
                ui64 = (uint64_t) va_arg(args, size_t);
            }

            break;

        case 'i':
            if (sign) {
                i64 = (int64_t) va_arg(args, ngx_int_t);
            } else {
                ui64 = (uint64_t) va_arg(args, ngx_uint_t);
            }

            if (max_width) {
                width = NGX_INT_T_LEN;
            }

            break;

        case 'd':
            if (sign) {
                i64 = (int64_t) va_arg(args, int);
            } else {
                ui64 = (uint64_t) va_arg(args, u_int);
            }

            break;

        case 'l':
            if (sign) {
                i64 = (int64_t) va_arg(args, long);
            } else {
                ui64 = (uint64_t) va_arg(args, u_long);
            }

            break;

        case 'D':
            if (sign) {
                i64 = (int64_t) va_arg(args, int32_t);
            } else {
                ui64 = (uint64_t) va_arg(args, uint32_t);
            }

            break;

        case 'L':
            if (sign) {
                i64 = va_arg(args, int64_t);
            } else {
                ui64 = va_arg(args, uint64_t);
            }

            break;

        case 'A':
            if (sign) {
                i64 = (int64_t) va_arg(args, ngx_atomic_int_t);
            } else {
                ui64 = (uint64_t) va_arg(args, ngx_atomic_uint_t);
            }

            if (max_width) {
                width = NGX_ATOMIC_T_LEN;
            }

            break;

        case 'p':
            ui64 = (uintptr_t) va_arg(args, void *);
            hex = 2;
            sign = 0;
            zero = '0';
            width = 2 * sizeof(void *);
            break;

        case 'c':
            *buf++ = (u_char) (va_arg(args, int) & 0xff);
            fmt++;
            continue;

        case 'Z':
            *buf++ = '\0';
            fmt++;
            continue;

        case 'N':
            *buf++ = LF;
            fmt++;
            continue;

        case '%':
            *buf++ = '%';
            fmt++;
            continue;

        default:
            fuzz_fatal("ngx_vslprintf(): unsupported conversion \"%%%c\"",
                       *fmt ? *fmt : '0');
        }

        if (sign) {
            if (i64 < 0) {
                *buf++ = '-';
                ui64 = (uint64_t) 0 - (uint64_t) i64;

            } else {
                ui64 = (uint64_t) i64;
            }
        }

        buf = fuzz_number(buf, last, ui64, zero, hex, width);

        fmt++;
    }

#undef fuzz_room

    return buf;
}


static u_char *
fuzz_number(u_char *buf, u_char *last, uint64_t ui64, u_char zero,
    ngx_uint_t hex, ngx_uint_t width)
{
    u_char         *p, temp[NGX_INT64_LEN + 1];
    size_t          len;
    static u_char   lower[] = "0123456789abcdef";
    static u_char   upper[] = "0123456789ABCDEF";

    p = temp + NGX_INT64_LEN;

    do {
        if (hex) {
            *--p = (hex == 1 ? lower : upper)[ui64 & 0xf];
            ui64 >>= 4;

        } else {
            *--p = (u_char) (ui64 % 10 + '0');
            ui64 /= 10;
        }

    } while (ui64);

    len = (temp + NGX_INT64_LEN) - p;

    while (len++ < width && buf < last) {
        *buf++ = zero;
    }

    len = (temp + NGX_INT64_LEN) - p;

    if ((size_t) ((uintptr_t) last - (uintptr_t) buf) < len) {
        len = (uintptr_t) last - (uintptr_t) buf;
    }

    return ngx_cpymem(buf, p, len);
}


/* logging */

static void
fuzz_log_message(ngx_uint_t level, ngx_err_t err, const char *fmt,
    va_list args)
{
    u_char  *p, *last;
    u_char   msg[NGX_MAX_ERROR_STR];

    last = msg + NGX_MAX_ERROR_STR;

    p = ngx_vslprintf(msg, last, fmt, args);

    if (err) {
        p = ngx_slprintf(p, last, " (%d: %s)", err, strerror(err));
    }

    if (fuzz_log_hook) {
        fuzz_log_hook(level, msg, p - msg);
    }

    if (fuzz_log_stderr) {
        fprintf(stderr, "[log %d] %.*s\n", (int) level, (int) (p - msg), msg);
    }
}


void
ngx_log_error_core(ngx_uint_t level, ngx_log_t *log, ngx_err_t err,
    const char *fmt, ...)
{
    va_list  args;

    va_start(args, fmt);
    fuzz_log_message(level, err, fmt, args);
    va_end(args);
}


void ngx_cdecl
ngx_conf_log_error(ngx_uint_t level, ngx_conf_t *cf, ngx_err_t err,
    const char *fmt, ...)
{
    va_list  args;

    va_start(args, fmt);
    fuzz_log_message(level, err, fmt, args);
    va_end(args);
}


/* the shared zone */

ngx_slab_pool_t *
fuzz_zone_create(ngx_uint_t pages)
{
    fuzz_zone_t  *zone;

    zone = calloc(1, sizeof(fuzz_zone_t));
    if (zone == NULL) {
        fuzz_fatal("calloc() failed");
    }

    zone->pages = pages;

    zone->pool.min_shift = 3;
    zone->pool.min_size = 8;
    zone->pool.pfree = pages;
    zone->pool.log_nomem = 1;
    zone->pool.mutex.lock = &zone->pool.lock.lock;

    /* only the size counts: the store reports it as used + free bytes */
    zone->pool.start = (u_char *) zone;
    zone->pool.end = zone->pool.start + pages * ngx_pagesize;

    zone->pool.addr = zone;

    return &zone->pool;
}


void
fuzz_zone_destroy(ngx_slab_pool_t *shpool)
{
    fuzz_zone_t   *zone;
    fuzz_block_t  *b, *next;

    zone = (fuzz_zone_t *) shpool;

    if (*shpool->mutex.lock) {
        fuzz_fatal("the slab mutex is still held");
    }

    for (b = zone->blocks; b; b = next) {
        next = b->next;
        free(b->data);
        free(b);
    }

    free(zone);
}


size_t
fuzz_zone_size(ngx_slab_pool_t *shpool)
{
    /* the slab pool header and page descriptors come on top in nginx */

    return ((fuzz_zone_t *) shpool)->pages * ngx_pagesize
           + sizeof(ngx_slab_pool_t);
}


static ngx_uint_t
fuzz_zone_used(fuzz_zone_t *zone)
{
    return zone->big + (zone->small + ngx_pagesize - 1) / ngx_pagesize;
}


void
ngx_shmtx_lock(ngx_shmtx_t *mtx)
{
    if (*mtx->lock) {
        fuzz_fatal("ngx_shmtx_lock(): the mutex is already held, "
                   "a deadlock in nginx");
    }

    *mtx->lock = (ngx_atomic_uint_t) ngx_pid;
}


void
ngx_shmtx_unlock(ngx_shmtx_t *mtx)
{
    if (*mtx->lock == 0) {
        fuzz_fatal("ngx_shmtx_unlock(): the mutex is not held");
    }

    *mtx->lock = 0;
}


void *
ngx_slab_alloc(ngx_slab_pool_t *pool, size_t size)
{
    void  *p;

    if (*pool->mutex.lock) {
        fuzz_fatal("ngx_slab_alloc() with the slab mutex held, "
                   "a deadlock in nginx");
    }

    ngx_shmtx_lock(&pool->mutex);
    p = ngx_slab_alloc_locked(pool, size);
    ngx_shmtx_unlock(&pool->mutex);

    return p;
}


void *
ngx_slab_alloc_locked(ngx_slab_pool_t *pool, size_t size)
{
    size_t         small;
    ngx_uint_t     pages;
    fuzz_zone_t   *zone;
    fuzz_block_t  *b;

    zone = (fuzz_zone_t *) pool;

    if (*pool->mutex.lock == 0) {
        fuzz_fatal("ngx_slab_alloc_locked() without the slab mutex");
    }

    if (fuzz_slab_fail_after && --fuzz_slab_fail_after == 0) {
        return NULL;
    }

    pages = 0;
    small = 0;

    if (size > ngx_pagesize / 2) {
        pages = (size + ngx_pagesize - 1) / ngx_pagesize;

    } else {
        for (small = 8; small < size; small <<= 1) { /* void */ }
    }

    zone->big += pages;
    zone->small += small;

    if (fuzz_zone_used(zone) > zone->pages) {
        zone->big -= pages;
        zone->small -= small;
        return NULL;
    }

    b = malloc(sizeof(fuzz_block_t));
    if (b == NULL) {
        fuzz_fatal("malloc() failed");
    }

    b->data = malloc(size ? size : 1);
    if (b->data == NULL) {
        fuzz_fatal("malloc() failed");
    }

    memset(b->data, FUZZ_FILL, size);

    b->size = size;
    b->pages = pages;
    b->small = small;
    b->next = zone->blocks;
    zone->blocks = b;

    pool->pfree = zone->pages - fuzz_zone_used(zone);

    return b->data;
}


void *
ngx_slab_calloc(ngx_slab_pool_t *pool, size_t size)
{
    void  *p;

    p = ngx_slab_alloc(pool, size);
    if (p) {
        ngx_memzero(p, size);
    }

    return p;
}


void *
ngx_slab_calloc_locked(ngx_slab_pool_t *pool, size_t size)
{
    void  *p;

    p = ngx_slab_alloc_locked(pool, size);
    if (p) {
        ngx_memzero(p, size);
    }

    return p;
}


void
ngx_slab_free(ngx_slab_pool_t *pool, void *p)
{
    if (*pool->mutex.lock) {
        fuzz_fatal("ngx_slab_free() with the slab mutex held, "
                   "a deadlock in nginx");
    }

    ngx_shmtx_lock(&pool->mutex);
    ngx_slab_free_locked(pool, p);
    ngx_shmtx_unlock(&pool->mutex);
}


void
ngx_slab_free_locked(ngx_slab_pool_t *pool, void *p)
{
    fuzz_zone_t   *zone;
    fuzz_block_t  *b, **prev;

    zone = (fuzz_zone_t *) pool;

    if (*pool->mutex.lock == 0) {
        fuzz_fatal("ngx_slab_free_locked() without the slab mutex");
    }

    for (prev = &zone->blocks; *prev; prev = &(*prev)->next) {
        b = *prev;

        if (b->data != p) {
            continue;
        }

        *prev = b->next;
        zone->big -= b->pages;
        zone->small -= b->small;
        pool->pfree = zone->pages - fuzz_zone_used(zone);

        free(b->data);
        free(b);

        return;
    }

    fuzz_fatal("ngx_slab_free(): %p was not allocated from the zone", p);
}
