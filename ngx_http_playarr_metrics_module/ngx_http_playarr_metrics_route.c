
/*
 * Copyright (C) Playarr metrics module authors
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_playarr_metrics_route.h"

/* the "/" of a path found 16 bytes at a time */
#if ((__GNUC__ || __clang__) && __SSE2__)
#include <emmintrin.h>
#define NGX_HTTP_PLAYARR_METRICS_SSE2  1
#endif


/*
 * The templates form a trie with one level per path segment.  A node has
 * at most one child per distinct literal (compared case-insensitively),
 * kept in an open-addressing table keyed by a hash of the segment, one
 * child per distinct ".ext" suffix, kept longest first, one ":name" child,
 * and may end a "*" template.
 *
 * Matching is a depth-first search trying the literal child, then the
 * suffixes, then the parameter, then "*": the first complete match is the
 * most specific template, and every node is entered at most once.  It
 * first goes down without backtracking, by the first alternative of each
 * node (_find()); only a path that ends in a dead end past a node with
 * alternatives left is searched again, with a small stack of those nodes
 * (_search()).  The "/" of a path shorter than 64 bytes are found at
 * once, a bit each (16 bytes at a time with SSE2), so that a segment ends
 * at the lowest bit left; the search reads longer paths 8 bytes at a
 * time, the end of a segment, its first two words and its hash coming
 * from a few word operations.  A literal of up to 16 bytes is found with,
 * usually, one probe and two compares, whatever the number of templates.
 *
 * A word holds up to 8 consecutive bytes, the first one in the low bits
 * whatever the byte order of the machine, the bytes past the end zero.
 */


#define NGX_HTTP_PLAYARR_METRICS_ROUTE_LITERAL  0
#define NGX_HTTP_PLAYARR_METRICS_ROUTE_PARAM    1
#define NGX_HTTP_PLAYARR_METRICS_ROUTE_EXT      2
#define NGX_HTTP_PLAYARR_METRICS_ROUTE_STAR     3

/* slots in a node's first literal table; at most a quarter is used */
#define NGX_HTTP_PLAYARR_METRICS_ROUTE_SLOTS    4

/* the most words a segment of a template may have */
#define NGX_HTTP_PLAYARR_METRICS_ROUTE_WORDS                                 \
    ((NGX_HTTP_PLAYARR_METRICS_ROUTE_MAX_LEN + 7) / 8)

#define NGX_HTTP_PLAYARR_METRICS_ROUTE_ONES     0x0101010101010101ULL
#define NGX_HTTP_PLAYARR_METRICS_ROUTE_HIGHS    0x8080808080808080ULL
#define NGX_HTTP_PLAYARR_METRICS_ROUTE_SLASHES  0x2f2f2f2f2f2f2f2fULL
#define NGX_HTTP_PLAYARR_METRICS_ROUTE_FOLD     0x2020202020202020ULL
#define NGX_HTTP_PLAYARR_METRICS_ROUTE_GOLDEN   0x9e3779b97f4a7c15ULL
#define NGX_HTTP_PLAYARR_METRICS_ROUTE_LOWS     0x7f7f7f7f7f7f7f7fULL
#define NGX_HTTP_PLAYARR_METRICS_ROUTE_GATHER   0x0102040810204080ULL

#if (NGX_HTTP_PLAYARR_METRICS_SSE2)

/* a bit for each byte of b that is the byte of s */
#define ngx_http_playarr_metrics_route_sse(b, s)                             \
    ((uint64_t) (uint32_t) _mm_movemask_epi8(_mm_cmpeq_epi8(b, s)))
#endif


/* the low n bytes of a word, 1 <= n <= 8 */
#define ngx_http_playarr_metrics_route_mask(n)                               \
    (~(uint64_t) 0 >> (64 - 8 * (n)))

/* the high bit set in each "/" byte; above the lowest one, in others too */
#define ngx_http_playarr_metrics_route_slash(w)                              \
    ((((w) ^ NGX_HTTP_PLAYARR_METRICS_ROUTE_SLASHES)                         \
      - NGX_HTTP_PLAYARR_METRICS_ROUTE_ONES)                                  \
     & ~((w) ^ NGX_HTTP_PLAYARR_METRICS_ROUTE_SLASHES)                        \
     & NGX_HTTP_PLAYARR_METRICS_ROUTE_HIGHS)

/* the mask of the bytes below the lowest byte flagged in x, x != 0 */
#define ngx_http_playarr_metrics_route_before(x)                             \
    ((((x) & (0 - (x))) >> 7) - 1)

/* case-insensitive: bit 5 is set in every byte before hashing */
#define ngx_http_playarr_metrics_route_hash(h, w)                            \
    (((h) ^ ((w) | NGX_HTTP_PLAYARR_METRICS_ROUTE_FOLD))                      \
     * NGX_HTTP_PLAYARR_METRICS_ROUTE_GOLDEN)

#if (__GNUC__ || __clang__)
#define ngx_http_playarr_metrics_route_ctz(w)  (ngx_uint_t) __builtin_ctzll(w)
#else
#define ngx_http_playarr_metrics_route_ctz(w)                                \
    ngx_http_playarr_metrics_route_ctz_slow(w)
#endif


typedef struct ngx_http_playarr_metrics_route_node_s
    ngx_http_playarr_metrics_route_node_t;


/* a literal child: one slot of the parent's table */
typedef struct {
    uint64_t                                 word;    /* node->name[0] */
    uint64_t                                 word2;   /* name[1], or 0 */
    size_t                                   len;
    ngx_http_playarr_metrics_route_node_t   *node;    /* NULL: free slot */
} ngx_http_playarr_metrics_route_lit_t;


/* a ":name.ext" child */
typedef struct {
    uint64_t                                 word;    /* words[0] */
    size_t                                   len;     /* of ".ext" */
    uint64_t                                *words;   /* lowercase */
    ngx_http_playarr_metrics_route_node_t   *node;
} ngx_http_playarr_metrics_route_ext_t;


/*
 * A node and its literal table each start a cache line, and what the
 * match reads of a node on its way down, the first eight fields, is in
 * the node's first line.
 */

struct ngx_http_playarr_metrics_route_node_s {
    ngx_uint_t                               inner;   /* any child but "*" */
    ngx_uint_t                               nlits;
    ngx_http_playarr_metrics_route_lit_t    *lits;
    ngx_uint_t                               shift;   /* 64 - log2(slots) */
    ngx_uint_t                               more;    /* exts, param, "*" */
    ngx_uint_t                               nexts;
    ngx_http_playarr_metrics_route_node_t   *param;
    ngx_uint_t                               route;   /* template ends here */

    ngx_http_playarr_metrics_route_ext_t    *exts;    /* longest first */
    ngx_uint_t                               star;    /* "*" template */
    ngx_uint_t                               mask;    /* lits slots - 1 */

    /* a literal child's own segment: lowercase words, and their hash */
    uint64_t                                *name;
    uint64_t                                 hash;
};


struct ngx_http_playarr_metrics_routes_s {
    ngx_http_playarr_metrics_route_node_t   *root;
    ngx_array_t                              templates;   /* route_t */
    ngx_pool_t                              *pool;
};


/* a node _match() may come back to, with its path segment */
typedef struct {
    ngx_http_playarr_metrics_route_node_t   *node;
    ngx_uint_t                               next;    /* alternative */
    u_char                                  *start;
    u_char                                  *end;
} ngx_http_playarr_metrics_route_frame_t;


static char *ngx_http_playarr_metrics_route_segment(u_char *p, u_char *last,
    ngx_uint_t *type, ngx_str_t *ext);
static char *ngx_http_playarr_metrics_route_bytes(u_char *p, u_char *last);
static ngx_http_playarr_metrics_route_node_t *
    ngx_http_playarr_metrics_route_node(ngx_pool_t *pool);
static void *ngx_http_playarr_metrics_route_calloc(ngx_pool_t *pool,
    size_t size);
static ngx_http_playarr_metrics_route_node_t *
    ngx_http_playarr_metrics_route_add_literal(ngx_pool_t *pool,
    ngx_http_playarr_metrics_route_node_t *node, u_char *p, size_t len);
static ngx_int_t ngx_http_playarr_metrics_route_grow(ngx_pool_t *pool,
    ngx_http_playarr_metrics_route_node_t *node);
static void ngx_http_playarr_metrics_route_put(
    ngx_http_playarr_metrics_route_node_t *node,
    ngx_http_playarr_metrics_route_lit_t *lit);
static ngx_http_playarr_metrics_route_node_t *
    ngx_http_playarr_metrics_route_add_ext(ngx_pool_t *pool,
    ngx_http_playarr_metrics_route_node_t *node, ngx_str_t *ext);
static uint64_t ngx_http_playarr_metrics_route_words(uint64_t *words,
    u_char *p, size_t len);
static ngx_inline ngx_http_playarr_metrics_route_lit_t *
    ngx_http_playarr_metrics_route_find(
    ngx_http_playarr_metrics_route_node_t *node, u_char *p, size_t len,
    uint64_t word, uint64_t word2, uint64_t hash, u_char *base,
    u_char *last);
static ngx_http_playarr_metrics_route_lit_t *
    ngx_http_playarr_metrics_route_find_slow(
    ngx_http_playarr_metrics_route_node_t *node, ngx_uint_t i, u_char *p,
    size_t len, u_char *base, u_char *last);
static ngx_inline ngx_http_playarr_metrics_route_t *
    ngx_http_playarr_metrics_route_at(ngx_http_playarr_metrics_routes_t *routes,
    ngx_uint_t n);
static ngx_uint_t ngx_http_playarr_metrics_route_search(
    ngx_http_playarr_metrics_routes_t *routes, u_char *path, size_t len);
static ngx_uint_t ngx_http_playarr_metrics_route_same(u_char *p, size_t n,
    uint64_t *words, u_char *base, u_char *last);
static ngx_inline uint64_t ngx_http_playarr_metrics_route_word(u_char *p,
    size_t n, u_char *base, u_char *last);
static ngx_inline uint64_t ngx_http_playarr_metrics_route_load(u_char *p);
static ngx_inline uint64_t ngx_http_playarr_metrics_route_slashes(
    u_char *path, size_t len);
static ngx_inline uint64_t ngx_http_playarr_metrics_route_bits(uint64_t w);
static ngx_inline uint64_t ngx_http_playarr_metrics_route_lower(uint64_t w);
#if !(__GNUC__ || __clang__)
static ngx_uint_t ngx_http_playarr_metrics_route_ctz_slow(uint64_t w);
#endif


/* the low n bytes of a word, 0 <= n <= 8 */
static const uint64_t  ngx_http_playarr_metrics_route_masks[] = {
    0, 0xff, 0xffff, 0xffffff, 0xffffffffULL, 0xffffffffffULL,
    0xffffffffffffULL, 0xffffffffffffffULL, 0xffffffffffffffffULL
};


ngx_http_playarr_metrics_routes_t *
ngx_http_playarr_metrics_routes_create(ngx_pool_t *pool)
{
    ngx_http_playarr_metrics_routes_t  *routes;

    routes = ngx_pcalloc(pool, sizeof(ngx_http_playarr_metrics_routes_t));
    if (routes == NULL) {
        return NULL;
    }

    routes->root = ngx_http_playarr_metrics_route_node(pool);
    if (routes->root == NULL) {
        return NULL;
    }

    if (ngx_array_init(&routes->templates, pool, 16,
                       sizeof(ngx_http_playarr_metrics_route_t))
        != NGX_OK)
    {
        return NULL;
    }

    routes->pool = pool;

    return routes;
}


char *
ngx_http_playarr_metrics_routes_add(ngx_conf_t *cf,
    ngx_http_playarr_metrics_routes_t *routes, ngx_str_t *template)
{
    u_char                                 *p, *q, *last;
    char                                   *reason;
    ngx_str_t                               ext, *prev;
    ngx_uint_t                              n, type, depth, user;
    ngx_http_playarr_metrics_route_t       *route;
    ngx_http_playarr_metrics_route_node_t  *node, *child;

    if (template->len == 0 || template->data[0] != '/') {
        reason = "it must start with \"/\"";
        goto invalid;
    }

    if (template->len > NGX_HTTP_PLAYARR_METRICS_ROUTE_MAX_LEN) {
        reason = "longer than "
                 ngx_value(NGX_HTTP_PLAYARR_METRICS_ROUTE_MAX_LEN) " bytes";
        goto invalid;
    }

    last = template->data + template->len;

    /* the template is a label value */

    for (p = template->data; p < last; /* void */) {

        if (*p < 0x80) {
            p++;
            continue;
        }

        if (ngx_utf8_decode(&p, last - p) > 0x10ffff) {
            reason = "not valid UTF-8";
            goto invalid;
        }
    }

    if (template->len > 1 && last[-1] == '/') {

        if (last[-2] == '/') {
            reason = "empty segment";
            goto invalid;
        }

        /* a single trailing slash is ignored */
        last--;
    }

    /* check the whole template before changing the trie */

    depth = 0;
    user = 0;

    for (p = template->data + 1; p < last; p = q + 1) {

        for (q = p; q < last && *q != '/'; q++) { /* void */ }

        if (q == p) {
            reason = "empty segment";
            goto invalid;
        }

        if (++depth > NGX_HTTP_PLAYARR_METRICS_ROUTE_MAX_DEPTH) {
            reason = "more than "
                     ngx_value(NGX_HTTP_PLAYARR_METRICS_ROUTE_MAX_DEPTH)
                     " segments";
            goto invalid;
        }

        reason = ngx_http_playarr_metrics_route_segment(p, q, &type, &ext);
        if (reason != NULL) {
            goto invalid;
        }

        if (type == NGX_HTTP_PLAYARR_METRICS_ROUTE_STAR && q != last) {
            reason = "\"*\" is allowed only as the whole last segment";
            goto invalid;
        }

        if (user == 0 && type == NGX_HTTP_PLAYARR_METRICS_ROUTE_PARAM
            && q - p == sizeof(":username") - 1
            && ngx_strncmp(p, ":username", q - p) == 0)
        {
            user = depth;
        }
    }

    n = routes->templates.nelts;
    node = routes->root;

    for (p = template->data + 1; p < last; p = q + 1) {

        for (q = p; q < last && *q != '/'; q++) { /* void */ }

        (void) ngx_http_playarr_metrics_route_segment(p, q, &type, &ext);

        if (type == NGX_HTTP_PLAYARR_METRICS_ROUTE_STAR) {

            if (node->star != NGX_HTTP_PLAYARR_METRICS_NO_ROUTE) {
                prev = ngx_http_playarr_metrics_routes_template(routes,
                                                                node->star);
                goto duplicate;
            }

            /* the last segment: p < last tells it below */
            break;
        }

        if (type == NGX_HTTP_PLAYARR_METRICS_ROUTE_PARAM) {

            child = node->param;

            if (child == NULL) {
                child = ngx_http_playarr_metrics_route_node(routes->pool);
                if (child == NULL) {
                    return NGX_CONF_ERROR;
                }

                node->param = child;
                node->inner = 1;
                node->more++;
            }

        } else if (type == NGX_HTTP_PLAYARR_METRICS_ROUTE_EXT) {

            child = ngx_http_playarr_metrics_route_add_ext(routes->pool, node,
                                                           &ext);
            if (child == NULL) {
                return NGX_CONF_ERROR;
            }

        } else {

            child = ngx_http_playarr_metrics_route_add_literal(routes->pool,
                                                               node, p, q - p);
            if (child == NULL) {
                return NGX_CONF_ERROR;
            }
        }

        node = child;
    }

    if (p >= last && node->route != NGX_HTTP_PLAYARR_METRICS_NO_ROUTE) {
        prev = ngx_http_playarr_metrics_routes_template(routes, node->route);
        goto duplicate;
    }

    route = ngx_array_push(&routes->templates);
    if (route == NULL) {
        return NGX_CONF_ERROR;
    }

    route->template.len = template->len;
    route->template.data = ngx_pstrdup(routes->pool, template);
    if (route->template.data == NULL) {
        return NGX_CONF_ERROR;
    }

    route->user = user;

    if (p < last) {
        node->star = n;
        node->more++;

    } else {
        node->route = n;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, cf->log, 0,
                   "playarr_metrics route \"%V\" is template %ui",
                   template, n);

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid route template \"%V\": %s", template, reason);

    return NGX_CONF_ERROR;

duplicate:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "duplicate route template \"%V\", previous is \"%V\"",
                       template, prev);

    return NGX_CONF_ERROR;
}


/*
 * Classifies the segment p..last (not empty, no "/"); returns NULL, or why
 * it is malformed.  For ":name.ext", ext is set to ".ext".
 */

static char *
ngx_http_playarr_metrics_route_segment(u_char *p, u_char *last,
    ngx_uint_t *type, ngx_str_t *ext)
{
    u_char  c, *name;

    if (*p == '*' && last - p == 1) {
        *type = NGX_HTTP_PLAYARR_METRICS_ROUTE_STAR;
        return NULL;
    }

    if (*p != ':') {

        if (*p == '.' && (last - p == 1 || (last - p == 2 && p[1] == '.'))) {
            return "\".\" and \"..\" segments never match";
        }

        *type = NGX_HTTP_PLAYARR_METRICS_ROUTE_LITERAL;
        return ngx_http_playarr_metrics_route_bytes(p, last);
    }

    for (name = p + 1; name < last; name++) {
        c = *name;

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
            || (c >= '0' && c <= '9') || c == '_')
        {
            continue;
        }

        break;
    }

    if (name == p + 1) {
        return "empty parameter name";
    }

    if (name == last) {
        *type = NGX_HTTP_PLAYARR_METRICS_ROUTE_PARAM;
        return NULL;
    }

    switch (*name) {

    case '.':
        break;

    case '?':
    case '+':
    case '*':
    case '(':
        return "optional, repeated and regex parameters are not supported";

    default:
        return "a parameter name must be followed by \".ext\" or \"/\"";
    }

    if (last - name == 1) {
        return "empty parameter suffix";
    }

    *type = NGX_HTTP_PLAYARR_METRICS_ROUTE_EXT;
    ext->data = name;
    ext->len = last - name;

    return ngx_http_playarr_metrics_route_bytes(name, last);
}


static char *
ngx_http_playarr_metrics_route_bytes(u_char *p, u_char *last)
{
    for ( /* void */ ; p < last; p++) {

        switch (*p) {

        case ':':
            return "\":\" is allowed only at the start of a segment";

        case '*':
            return "\"*\" is allowed only as the whole last segment";

        case '(':
        case ')':
            return "regular expressions are not supported";

        case '?':
        case '#':
            return "\"?\" and \"#\" are not allowed";

        default:
            break;
        }
    }

    return NULL;
}


static ngx_http_playarr_metrics_route_node_t *
ngx_http_playarr_metrics_route_node(ngx_pool_t *pool)
{
    ngx_http_playarr_metrics_route_node_t  *node;

    node = ngx_http_playarr_metrics_route_calloc(pool,
                                 sizeof(ngx_http_playarr_metrics_route_node_t));
    if (node == NULL) {
        return NULL;
    }

    node->route = NGX_HTTP_PLAYARR_METRICS_NO_ROUTE;
    node->star = NGX_HTTP_PLAYARR_METRICS_NO_ROUTE;

    return node;
}


/* zeroed memory that starts a cache line */

static void *
ngx_http_playarr_metrics_route_calloc(ngx_pool_t *pool, size_t size)
{
    u_char  *p;

    p = ngx_pcalloc(pool, size + NGX_CPU_CACHE_LINE - 1);
    if (p == NULL) {
        return NULL;
    }

    return ngx_align_ptr(p, NGX_CPU_CACHE_LINE);
}


static ngx_http_playarr_metrics_route_node_t *
ngx_http_playarr_metrics_route_add_literal(ngx_pool_t *pool,
    ngx_http_playarr_metrics_route_node_t *node, u_char *p, size_t len)
{
    uint64_t                              *words, hash;
    ngx_http_playarr_metrics_route_lit_t   lit, *found;

    uint64_t  buf[NGX_HTTP_PLAYARR_METRICS_ROUTE_WORDS];

    hash = ngx_http_playarr_metrics_route_words(buf, p, len);

    lit.word = buf[0];
    lit.word2 = (len > 8) ? buf[1] : 0;
    lit.len = len;

    if (node->lits != NULL) {
        found = ngx_http_playarr_metrics_route_find(node, p, len, lit.word,
                                                    lit.word2, hash, p,
                                                    p + len);
        if (found != NULL) {
            return found->node;
        }
    }

    words = ngx_palloc(pool, (len + 7) / 8 * sizeof(uint64_t));
    if (words == NULL) {
        return NULL;
    }

    ngx_memcpy(words, buf, (len + 7) / 8 * sizeof(uint64_t));

    if (node->lits == NULL || (node->nlits + 1) * 4 > node->mask + 1) {
        if (ngx_http_playarr_metrics_route_grow(pool, node) != NGX_OK) {
            return NULL;
        }
    }

    lit.node = ngx_http_playarr_metrics_route_node(pool);
    if (lit.node == NULL) {
        return NULL;
    }

    lit.node->name = words;
    lit.node->hash = hash;

    ngx_http_playarr_metrics_route_put(node, &lit);

    node->nlits++;
    node->inner = 1;

    return lit.node;
}


static ngx_int_t
ngx_http_playarr_metrics_route_grow(ngx_pool_t *pool,
    ngx_http_playarr_metrics_route_node_t *node)
{
    ngx_uint_t                             i, n, slots, bits;
    ngx_http_playarr_metrics_route_lit_t  *old, *lits;

    old = node->lits;
    n = (old == NULL) ? 0 : node->mask + 1;
    slots = (old == NULL) ? NGX_HTTP_PLAYARR_METRICS_ROUTE_SLOTS : n * 2;

    for (bits = 0; ((ngx_uint_t) 1 << bits) < slots; bits++) { /* void */ }

    lits = ngx_http_playarr_metrics_route_calloc(pool,
                         slots * sizeof(ngx_http_playarr_metrics_route_lit_t));
    if (lits == NULL) {
        return NGX_ERROR;
    }

    node->lits = lits;
    node->mask = slots - 1;
    node->shift = 64 - bits;

    for (i = 0; i < n; i++) {
        if (old[i].node != NULL) {
            ngx_http_playarr_metrics_route_put(node, &old[i]);
        }
    }

    return NGX_OK;
}


static void
ngx_http_playarr_metrics_route_put(ngx_http_playarr_metrics_route_node_t *node,
    ngx_http_playarr_metrics_route_lit_t *lit)
{
    ngx_uint_t  i;

    i = (ngx_uint_t) (lit->node->hash >> node->shift);

    while (node->lits[i].node != NULL) {
        i = (i + 1) & node->mask;
    }

    node->lits[i] = *lit;
}


static ngx_http_playarr_metrics_route_node_t *
ngx_http_playarr_metrics_route_add_ext(ngx_pool_t *pool,
    ngx_http_playarr_metrics_route_node_t *node, ngx_str_t *ext)
{
    uint64_t                              *words;
    ngx_uint_t                             i, k;
    ngx_http_playarr_metrics_route_ext_t  *exts;

    for (i = 0; i < node->nexts; i++) {
        if (node->exts[i].len == ext->len
            && ngx_http_playarr_metrics_route_same(ext->data, ext->len,
                                                   node->exts[i].words,
                                                   ext->data,
                                                   ext->data + ext->len))
        {
            return node->exts[i].node;
        }
    }

    words = ngx_palloc(pool, (ext->len + 7) / 8 * sizeof(uint64_t));
    if (words == NULL) {
        return NULL;
    }

    (void) ngx_http_playarr_metrics_route_words(words, ext->data, ext->len);

    exts = ngx_palloc(pool, (node->nexts + 1)
                            * sizeof(ngx_http_playarr_metrics_route_ext_t));
    if (exts == NULL) {
        return NULL;
    }

    /* the longest suffix first, the first added first among equals */

    for (k = 0; k < node->nexts && node->exts[k].len >= ext->len; k++) {
        exts[k] = node->exts[k];
    }

    exts[k].word = words[0];
    exts[k].len = ext->len;
    exts[k].words = words;

    exts[k].node = ngx_http_playarr_metrics_route_node(pool);
    if (exts[k].node == NULL) {
        return NULL;
    }

    for (i = k; i < node->nexts; i++) {
        exts[i + 1] = node->exts[i];
    }

    node->exts = exts;
    node->nexts++;
    node->inner = 1;
    node->more++;

    return exts[k].node;
}


/*
 * Sets words to the lowercase words of p..p+len, and returns their hash as
 * _match() computes it.
 */

static uint64_t
ngx_http_playarr_metrics_route_words(uint64_t *words, u_char *p, size_t len)
{
    size_t       n;
    uint64_t     w, h;
    ngx_uint_t   i;

    h = 0;

    for (i = 0; i * 8 < len; i++) {
        n = ngx_min(len - i * 8, 8);
        w = ngx_http_playarr_metrics_route_word(p + i * 8, n, p, p + len);
        w = ngx_http_playarr_metrics_route_lower(w);
        words[i] = w;
        h = ngx_http_playarr_metrics_route_hash(h, w);
    }

    return h;
}


ngx_uint_t
ngx_http_playarr_metrics_routes_count(
    ngx_http_playarr_metrics_routes_t *routes)
{
    return routes->templates.nelts;
}


ngx_str_t *
ngx_http_playarr_metrics_routes_template(
    ngx_http_playarr_metrics_routes_t *routes, ngx_uint_t n)
{
    ngx_http_playarr_metrics_route_t  *route;

    if (n >= routes->templates.nelts) {
        return NULL;
    }

    route = routes->templates.elts;

    return &route[n].template;
}


ngx_uint_t
ngx_http_playarr_metrics_routes_user(ngx_http_playarr_metrics_routes_t *routes,
    ngx_uint_t n)
{
    ngx_http_playarr_metrics_route_t  *route;

    route = routes->templates.elts;

    return route[n].user;
}


ngx_uint_t
ngx_http_playarr_metrics_routes_match(
    ngx_http_playarr_metrics_routes_t *routes, u_char *path, size_t len)
{
    ngx_http_playarr_metrics_route_t  *route;

    route = ngx_http_playarr_metrics_routes_find(routes, path, len);

    if (route == NULL) {
        return NGX_HTTP_PLAYARR_METRICS_NO_ROUTE;
    }

    return route - (ngx_http_playarr_metrics_route_t *) routes->templates.elts;
}


/*
 * The search goes down first by the best alternative of each node: a
 * literal, the suffixes, the parameter, "*".  When that path matches, it
 * is the one the depth-first search would find first; when it does not,
 * and no node on the way had an alternative left, nothing matches.  Only
 * otherwise does _search() go through the trie again with backtracking,
 * so that the usual request keeps no stack of nodes.
 *
 * A path shorter than 64 bytes (longer ones are left to _search()) has
 * the positions of all its "/" found at once, a bit each, and one more
 * bit where it ends: a segment ends at the lowest bit left, and its first
 * word is loaded directly.
 */

ngx_http_playarr_metrics_route_t *
ngx_http_playarr_metrics_routes_find(ngx_http_playarr_metrics_routes_t *routes,
    u_char *path, size_t len)
{
    u_char                                 *p, *q, *last;
    size_t                                  n;
    uint64_t                                sl, w, w2, v, h;
    ngx_uint_t                              i, alt;
    ngx_http_playarr_metrics_route_lit_t   *lit;
    ngx_http_playarr_metrics_route_ext_t   *ext;
    ngx_http_playarr_metrics_route_node_t  *node;

    if (len == 0 || path[0] != '/') {
        return NULL;
    }

    if (len >= 64) {
        return ngx_http_playarr_metrics_route_at(routes,
                     ngx_http_playarr_metrics_route_search(routes, path, len));
    }

    last = path + len;

    /* the bits of the "/" after the first one, and of the end */

    sl = ngx_http_playarr_metrics_route_slashes(path, len);
    sl = (sl & (sl - 1)) | (uint64_t) 1 << len;

    p = path + 1;
    node = routes->root;
    alt = 0;

    for ( ;; ) {

        /* the segment p .. q, n bytes */

        q = path + ngx_http_playarr_metrics_route_ctz(sl);
        sl &= sl - 1;
        n = q - p;

        if (n == 0) {
            /* an empty segment, or a "/" that ends the path (no bit left) */

            if (sl == 0) {
                break;
            }

            p = q + 1;
            continue;
        }

        if (node->nlits == 0) {
            goto other;
        }

        if (n <= 8) {
            if (last - p >= 8) {
                w = ngx_http_playarr_metrics_route_load(p)
                    & ngx_http_playarr_metrics_route_masks[n];

            } else {
                w = ngx_http_playarr_metrics_route_word(p, n, path, last);
            }

            h = ngx_http_playarr_metrics_route_hash(0, w);
            lit = &node->lits[h >> node->shift];

            if (lit->word != w || lit->len != n) {

                if (lit->node == NULL) {
                    goto other;
                }

                lit = ngx_http_playarr_metrics_route_find(node, p, n, w, 0, h,
                                                          path, last);
                if (lit == NULL) {
                    goto other;
                }
            }

        } else {
            w = ngx_http_playarr_metrics_route_load(p);
            h = ngx_http_playarr_metrics_route_hash(0, w);
            w2 = 0;

            for (i = 8; i < n; i += 8) {
                v = ngx_http_playarr_metrics_route_word(p + i,
                                                        ngx_min(n - i, 8),
                                                        path, last);
                if (i == 8) {
                    w2 = v;
                }

                h = ngx_http_playarr_metrics_route_hash(h, v);
            }

            lit = ngx_http_playarr_metrics_route_find(node, p, n, w, w2, h,
                                                      path, last);
            if (lit == NULL) {
                goto other;
            }
        }

        alt |= node->more;
        node = lit->node;
        goto next;

    other:

        for (i = 0; i < node->nexts; i++) {
            ext = &node->exts[i];

            if (n <= ext->len) {
                continue;
            }

            if (ext->len <= 8) {
                v = ngx_http_playarr_metrics_route_word(p + n - ext->len,
                                                        ext->len, path, last);
                if (v != ext->word
                    && ngx_http_playarr_metrics_route_lower(v) != ext->word)
                {
                    continue;
                }

            } else if (!ngx_http_playarr_metrics_route_same(p + n - ext->len,
                                                            ext->len,
                                                            ext->words,
                                                            path, last))
            {
                continue;
            }

            alt |= (i + 1 < node->more);
            node = ext->node;
            goto next;
        }

        if (node->param) {
            alt |= (node->star != NGX_HTTP_PLAYARR_METRICS_NO_ROUTE);
            node = node->param;
            goto next;
        }

        /* a segment starts here, so "*" matches the rest of the path */

        if (node->star != NGX_HTTP_PLAYARR_METRICS_NO_ROUTE) {
            return ngx_http_playarr_metrics_route_at(routes, node->star);
        }

        goto dead;

    next:

        if (sl == 0) {
            break;
        }

        p = q + 1;
    }

    /* the path ends here */

    if (node->route != NGX_HTTP_PLAYARR_METRICS_NO_ROUTE) {
        return ngx_http_playarr_metrics_route_at(routes, node->route);
    }

dead:

    if (!alt) {
        return NULL;
    }

    return ngx_http_playarr_metrics_route_at(routes,
                     ngx_http_playarr_metrics_route_search(routes, path, len));
}


/*
 * A bit for each "/" of the len bytes at path, len below 64: bit i for
 * path[i].  With SSE2, 16 bytes at a time (or 8, for a path shorter than
 * 16), else 8 at a time; the last load ends where the path does,
 * overlapping the one before it, and a path shorter than 8 bytes is read
 * in pieces.
 */

static ngx_inline uint64_t
ngx_http_playarr_metrics_route_slashes(u_char *path, size_t len)
{
    size_t    i;
    uint64_t  m, w;
#if (NGX_HTTP_PLAYARR_METRICS_SSE2)
    __m128i   s;

    s = _mm_set1_epi8('/');

    if (len >= 16) {
        m = ngx_http_playarr_metrics_route_sse(_mm_loadu_si128(
                                                   (__m128i *) path), s);

        if (len > 32) {
            m |= ngx_http_playarr_metrics_route_sse(_mm_loadu_si128(
                                               (__m128i *) (path + 16)), s)
                 << 16;

            if (len > 48) {
                m |= ngx_http_playarr_metrics_route_sse(_mm_loadu_si128(
                                               (__m128i *) (path + 32)), s)
                     << 32;
            }
        }

        if (len > 16) {
            m |= ngx_http_playarr_metrics_route_sse(_mm_loadu_si128(
                                         (__m128i *) (path + len - 16)), s)
                 << (len - 16);
        }

        return m;
    }

    if (len >= 8) {
        m = ngx_http_playarr_metrics_route_sse(_mm_loadl_epi64(
                                                   (__m128i *) path), s)
            & 0xff;

        return m | (ngx_http_playarr_metrics_route_sse(_mm_loadl_epi64(
                                          (__m128i *) (path + len - 8)), s)
                    & 0xff) << (len - 8);
    }
#endif

    if (len < 8) {
        w = ngx_http_playarr_metrics_route_word(path, len, path, path + len);
        return ngx_http_playarr_metrics_route_bits(w);
    }

    m = 0;

    for (i = 0; i + 8 <= len; i += 8) {
        w = ngx_http_playarr_metrics_route_load(path + i);
        m |= ngx_http_playarr_metrics_route_bits(w) << i;
    }

    if (i < len) {
        w = ngx_http_playarr_metrics_route_load(path + len - 8);
        m |= ngx_http_playarr_metrics_route_bits(w) << (len - 8);
    }

    return m;
}


/*
 * The n-th non-empty segment of a path (from 1, empty ones skipped as
 * the match skips them): NGX_OK and *start, *end, or NGX_DECLINED.
 */

ngx_int_t
ngx_http_playarr_metrics_routes_segment(u_char *path, size_t len,
    ngx_uint_t n, u_char **start, u_char **end)
{
    u_char    *p, *q, *last;
    uint64_t   sl;

    if (len < 64) {
        sl = ngx_http_playarr_metrics_route_slashes(path, len)
             | (uint64_t) 1 << len;

        for (p = path; sl; p = q + 1) {
            q = path + ngx_http_playarr_metrics_route_ctz(sl);
            sl &= sl - 1;

            if (q > p && --n == 0) {
                *start = p;
                *end = q;
                return NGX_OK;
            }
        }

        return NGX_DECLINED;
    }

    last = path + len;

    for (p = path; p < last; p = q) {

        while (p < last && *p == '/') {
            p++;
        }

        for (q = p; q < last && *q != '/'; q++) { /* void */ }

        if (q > p && --n == 0) {
            *start = p;
            *end = q;
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


/* template n, or NULL for NGX_HTTP_PLAYARR_METRICS_NO_ROUTE */

static ngx_inline ngx_http_playarr_metrics_route_t *
ngx_http_playarr_metrics_route_at(ngx_http_playarr_metrics_routes_t *routes,
    ngx_uint_t n)
{
    ngx_http_playarr_metrics_route_t  *route;

    if (n == NGX_HTTP_PLAYARR_METRICS_NO_ROUTE) {
        return NULL;
    }

    route = routes->templates.elts;

    return &route[n];
}


/* the depth-first search, with backtracking */

static ngx_uint_t
ngx_http_playarr_metrics_route_search(
    ngx_http_playarr_metrics_routes_t *routes, u_char *path, size_t len)
{
    u_char                                  *p, *last, *start, *end, *next;
    size_t                                   n;
    uint64_t                                 w, w2, v, x, h;
    ngx_uint_t                               i;
    ngx_http_playarr_metrics_route_lit_t    *lit;
    ngx_http_playarr_metrics_route_ext_t    *ext;
    ngx_http_playarr_metrics_route_node_t   *node, *child;
    ngx_http_playarr_metrics_route_frame_t  *f;
    ngx_http_playarr_metrics_route_frame_t
                          frames[NGX_HTTP_PLAYARR_METRICS_ROUTE_MAX_DEPTH];

    if (len == 0 || path[0] != '/') {
        return NGX_HTTP_PLAYARR_METRICS_NO_ROUTE;
    }

    p = path + 1;
    last = path + len;
    node = routes->root;
    f = frames;

    /*
     * On a fresh entry into a node, p is past the "/" that ended the
     * previous segment, and the literal child is tried first.  A node
     * left with alternatives still untried is pushed on frames[], with its
     * segment start .. end; back there, the search resumes at alternative
     * i: exts[0 .. nexts - 1], the parameter (nexts), "*".  The next
     * segment starts at next, past the "/" that follows end, if any.
     */

    for ( ;; ) {

        if (p == last) {
            /* the path ends here */

            if (node->route != NGX_HTTP_PLAYARR_METRICS_NO_ROUTE) {
                return node->route;
            }

            goto back;
        }

        if (*p == '/') {
            /* an empty segment */
            p++;
            continue;
        }

        if (!node->inner) {
            /* no need to find where this segment ends */
            goto star;
        }

        /*
         * Find the end of the segment, its first two words, and the hash
         * of all of them; node->inner implies a depth below the maximum.
         */

        start = p;

        if (last - p >= 8) {
            w = ngx_http_playarr_metrics_route_load(p);

        } else {
            w = ngx_http_playarr_metrics_route_word(p, last - p, path, last);
        }

        x = ngx_http_playarr_metrics_route_slash(w);

        if (x) {
            /* the usual case: the segment is in w, and "/" follows */
            w &= ngx_http_playarr_metrics_route_before(x);
            end = p + ngx_http_playarr_metrics_route_ctz(x) / 8;
            next = end + 1;

        } else if (last - p <= 8) {
            /* the last segment, in w */
            end = last;
            next = last;

        } else {
            goto long_segment;
        }

        /* a segment of at most 8 bytes: its literal, usually at once */

        h = ngx_http_playarr_metrics_route_hash(0, w);
        i = 0;

        if (node->nlits) {
            lit = &node->lits[h >> node->shift];

            if (lit->word == w && lit->len == (size_t) (end - start)) {
                child = lit->node;
                goto descend;
            }

            lit = ngx_http_playarr_metrics_route_find(node, start, end - start,
                                                      w, 0, h, path, last);
            if (lit != NULL) {
                child = lit->node;
                goto descend;
            }
        }

        goto resume;

    long_segment:

        h = ngx_http_playarr_metrics_route_hash(0, w);
        w2 = 0;
        p += 8;

        for ( ;; ) {

            if (last - p >= 8) {
                n = 8;
                v = ngx_http_playarr_metrics_route_load(p);

            } else {
                n = last - p;
                v = ngx_http_playarr_metrics_route_word(p, n, path, last);
            }

            x = ngx_http_playarr_metrics_route_slash(v);

            if (x) {
                v &= ngx_http_playarr_metrics_route_before(x);
                n = ngx_http_playarr_metrics_route_ctz(x) / 8;

                if (n == 0) {
                    break;
                }
            }

            if (p - start == 8) {
                w2 = v;
            }

            h = ngx_http_playarr_metrics_route_hash(h, v);
            p += n;

            if (x || p == last) {
                break;
            }
        }

        end = p;
        next = (end == last) ? last : end + 1;
        i = 0;

        if (node->nlits) {
            lit = ngx_http_playarr_metrics_route_find(node, start, end - start,
                                                      w, w2, h, path, last);
            if (lit != NULL) {
                child = lit->node;
                goto descend;
            }
        }

    resume:

        n = end - start;

        for ( /* void */ ; i < node->nexts; i++) {
            ext = &node->exts[i];

            if (n <= ext->len) {
                continue;
            }

            if (ext->len <= 8) {
                v = ngx_http_playarr_metrics_route_word(end - ext->len,
                                                        ext->len, path, last);
                if (v != ext->word
                    && ngx_http_playarr_metrics_route_lower(v) != ext->word)
                {
                    continue;
                }

            } else if (!ngx_http_playarr_metrics_route_same(end - ext->len,
                                                            ext->len,
                                                            ext->words,
                                                            path, last))
            {
                continue;
            }

            child = ext->node;
            i++;
            goto descend;
        }

        if (i == node->nexts && node->param != NULL) {
            child = node->param;
            i++;
            goto descend;
        }

    star:

        /* a segment starts here, so "*" matches the rest of the path */

        if (node->star != NGX_HTTP_PLAYARR_METRICS_NO_ROUTE) {
            return node->star;
        }

    back:

        if (f == frames) {
            return NGX_HTTP_PLAYARR_METRICS_NO_ROUTE;
        }

        f--;
        node = f->node;
        i = f->next;
        start = f->start;
        end = f->end;
        next = (end == last) ? last : end + 1;

        goto resume;

    descend:

        if (i < node->more) {
            f->node = node;
            f->next = i;
            f->start = start;
            f->end = end;
            f++;
        }

        node = child;
        p = next;
    }
}


/*
 * The literal child of node that the segment p..p+len is, if any; word and
 * word2 are its first and second words, hash its hash.
 */

static ngx_inline ngx_http_playarr_metrics_route_lit_t *
ngx_http_playarr_metrics_route_find(ngx_http_playarr_metrics_route_node_t *node,
    u_char *p, size_t len, uint64_t word, uint64_t word2, uint64_t hash,
    u_char *base, u_char *last)
{
    ngx_uint_t                             i;
    ngx_http_playarr_metrics_route_lit_t  *lit;

    i = (ngx_uint_t) (hash >> node->shift);

    for ( ;; ) {
        lit = &node->lits[i];

        if (lit->node == NULL) {
            return NULL;
        }

        if (lit->len == len) {

            if (lit->word == word && lit->word2 == word2 && len <= 16) {
                return lit;
            }

            if ((((lit->word ^ word) | (lit->word2 ^ word2))
                 & ~NGX_HTTP_PLAYARR_METRICS_ROUTE_FOLD)
                == 0)
            {
                /* longer, or not all lowercase, or another literal */
                return ngx_http_playarr_metrics_route_find_slow(node, i, p,
                                                                len, base,
                                                                last);
            }
        }

        i = (i + 1) & node->mask;
    }
}


/* _find() going on from slot i, comparing all the bytes */

static ngx_http_playarr_metrics_route_lit_t *
ngx_http_playarr_metrics_route_find_slow(
    ngx_http_playarr_metrics_route_node_t *node, ngx_uint_t i, u_char *p,
    size_t len, u_char *base, u_char *last)
{
    ngx_http_playarr_metrics_route_lit_t  *lit;

    for ( ;; ) {
        lit = &node->lits[i];

        if (lit->node == NULL) {
            return NULL;
        }

        if (lit->len == len
            && ngx_http_playarr_metrics_route_same(p, len, lit->node->name,
                                                   base, last))
        {
            return lit;
        }

        i = (i + 1) & node->mask;
    }
}


/* the n bytes at p, lowercased, are those of words */

static ngx_uint_t
ngx_http_playarr_metrics_route_same(u_char *p, size_t n, uint64_t *words,
    u_char *base, u_char *last)
{
    size_t    k;
    uint64_t  w;

    while (n) {
        k = ngx_min(n, 8);
        w = ngx_http_playarr_metrics_route_word(p, k, base, last);

        if (w != *words && ngx_http_playarr_metrics_route_lower(w) != *words) {
            return 0;
        }

        p += k;
        n -= k;
        words++;
    }

    return 1;
}


/*
 * The word of the n bytes at p, 1 <= n <= 8; base..last is the buffer
 * around them, the only memory read.
 */

static ngx_inline uint64_t
ngx_http_playarr_metrics_route_word(u_char *p, size_t n, u_char *base,
    u_char *last)
{
    uint64_t  w;

    if (last - p >= 8) {
        return ngx_http_playarr_metrics_route_load(p)
               & ngx_http_playarr_metrics_route_mask(n);
    }

    if (p + n - base >= 8) {
        return ngx_http_playarr_metrics_route_load(p + n - 8) >> (64 - 8 * n);
    }

    /* a buffer shorter than 8 bytes */

    w = 0;

    while (n--) {
        w = (w << 8) | p[n];
    }

    return w;
}


static ngx_inline uint64_t
ngx_http_playarr_metrics_route_load(u_char *p)
{
#if (NGX_HAVE_LITTLE_ENDIAN && NGX_HAVE_NONALIGNED)

    uint64_t  w;

    ngx_memcpy(&w, p, sizeof(uint64_t));

    return w;

#else

    return (uint64_t) p[0]
           | (uint64_t) p[1] << 8
           | (uint64_t) p[2] << 16
           | (uint64_t) p[3] << 24
           | (uint64_t) p[4] << 32
           | (uint64_t) p[5] << 40
           | (uint64_t) p[6] << 48
           | (uint64_t) p[7] << 56;

#endif
}


/* a bit for each "/" byte of w, exactly: bit i for byte i */

static ngx_inline uint64_t
ngx_http_playarr_metrics_route_bits(uint64_t w)
{
    uint64_t  t;

    t = w ^ NGX_HTTP_PLAYARR_METRICS_ROUTE_SLASHES;

    /* the high bit of each byte of t that is zero, and no other bit */

    t = ~(((t & NGX_HTTP_PLAYARR_METRICS_ROUTE_LOWS)
           + NGX_HTTP_PLAYARR_METRICS_ROUTE_LOWS)
          | t | NGX_HTTP_PLAYARR_METRICS_ROUTE_LOWS);

    /* bit 8k + 7 moved to bit 56 + k: no two products meet, nor carry */

    return ((t >> 7) * NGX_HTTP_PLAYARR_METRICS_ROUTE_GATHER) >> 56;
}


/* "A" .. "Z" bytes of a word made lowercase, the other bytes unchanged */

static ngx_inline uint64_t
ngx_http_playarr_metrics_route_lower(uint64_t w)
{
    uint64_t  low, ge, gt;

    low = w & ~NGX_HTTP_PLAYARR_METRICS_ROUTE_HIGHS;

    /* the high bit of each byte: low >= 'A', low > 'Z' */
    ge = low + 0x3f3f3f3f3f3f3f3fULL;
    gt = low + 0x2525252525252525ULL;

    return w | ((ge & ~gt & ~w & NGX_HTTP_PLAYARR_METRICS_ROUTE_HIGHS) >> 2);
}


#if !(__GNUC__ || __clang__)

static ngx_uint_t
ngx_http_playarr_metrics_route_ctz_slow(uint64_t w)
{
    ngx_uint_t  n;

    for (n = 0; (w & 1) == 0; n++) {
        w >>= 1;
    }

    return n;
}

#endif
