
/*
 * Copyright (C) Playarr metrics module authors
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_playarr_metrics_route.h"


/*
 * The templates form a trie with one level per path segment.  A node has
 * at most one child per distinct literal (case-insensitive), kept in an
 * open-addressing table keyed by a hash of the lowercased segment, one
 * child per distinct ".ext" suffix, kept longest first, one ":name" child,
 * and may end a "*" template.  Matching is a depth-first search trying the
 * literal child, then the suffixes, then the parameter, then "*": the first
 * complete match is the most specific template.  The path is scanned once,
 * each segment's bounds and hash are kept on the stack for backtracking,
 * and every node is entered at most once.
 */


#define NGX_HTTP_PLAYARR_METRICS_ROUTE_LITERAL  0
#define NGX_HTTP_PLAYARR_METRICS_ROUTE_PARAM    1
#define NGX_HTTP_PLAYARR_METRICS_ROUTE_EXT      2
#define NGX_HTTP_PLAYARR_METRICS_ROUTE_STAR     3

/* slots in a node's first literal table; the load stays under one half */
#define NGX_HTTP_PLAYARR_METRICS_ROUTE_SLOTS    4


#define ngx_http_playarr_metrics_route_hash(key, c)                          \
    ((uint32_t) (key) * 31 + ((c) | 0x20))


typedef struct ngx_http_playarr_metrics_route_node_s
    ngx_http_playarr_metrics_route_node_t;


/* a literal child: one slot of the parent's table */
typedef struct {
    uint32_t                                 hash;
    uint32_t                                 len;
    u_char                                  *data;    /* lowercase */
    ngx_http_playarr_metrics_route_node_t   *node;    /* NULL: free slot */
} ngx_http_playarr_metrics_route_lit_t;


/* a ":name.ext" child */
typedef struct {
    size_t                                   len;
    u_char                                  *data;    /* ".ext", lowercase */
    ngx_http_playarr_metrics_route_node_t   *node;
} ngx_http_playarr_metrics_route_ext_t;


struct ngx_http_playarr_metrics_route_node_s {
    ngx_http_playarr_metrics_route_lit_t    *lits;
    ngx_http_playarr_metrics_route_ext_t    *exts;    /* longest first */
    ngx_http_playarr_metrics_route_node_t   *param;
    ngx_uint_t                               route;   /* template ends here */
    ngx_uint_t                               star;    /* "*" template */
    ngx_uint_t                               nlits;
    ngx_uint_t                               mask;    /* lits slots - 1 */
    ngx_uint_t                               shift;   /* 32 - log2(slots) */
    ngx_uint_t                               nexts;
    ngx_uint_t                               inner;   /* any child but "*" */
};


struct ngx_http_playarr_metrics_routes_s {
    ngx_http_playarr_metrics_route_node_t   *root;
    ngx_array_t                              templates;   /* of ngx_str_t */
    ngx_pool_t                              *pool;
};


/* a path segment seen by _match() */
typedef struct {
    u_char                                  *start;
    u_char                                  *end;
    uint32_t                                 hash;
} ngx_http_playarr_metrics_route_seg_t;


static char *ngx_http_playarr_metrics_route_segment(u_char *p, u_char *last,
    ngx_uint_t *type, ngx_str_t *ext);
static char *ngx_http_playarr_metrics_route_bytes(u_char *p, u_char *last);
static ngx_http_playarr_metrics_route_node_t *
    ngx_http_playarr_metrics_route_node(ngx_pool_t *pool);
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
static ngx_inline ngx_http_playarr_metrics_route_lit_t *
    ngx_http_playarr_metrics_route_find(
    ngx_http_playarr_metrics_route_node_t *node, u_char *p, size_t len,
    uint32_t hash);
static ngx_inline ngx_uint_t ngx_http_playarr_metrics_route_eq(u_char *s,
    u_char *lc, size_t n);


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

    if (ngx_array_init(&routes->templates, pool, 16, sizeof(ngx_str_t))
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
    ngx_str_t                               ext, *t, *prev;
    ngx_uint_t                              n, type, depth;
    ngx_http_playarr_metrics_route_node_t  *node, *child;

    if (template->len == 0 || template->data[0] != '/') {
        reason = "it must start with \"/\"";
        goto invalid;
    }

    last = template->data + template->len;

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

    for (p = template->data + 1; p < last; p = q + 1) {

        for (q = p; q < last && *q != '/'; q++) { /* void */ }

        if (q == p) {
            reason = "empty segment";
            goto invalid;
        }

        if (++depth > NGX_HTTP_PLAYARR_METRICS_ROUTE_MAX_DEPTH) {
            reason = "too many segments";
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
    }

    n = routes->templates.nelts;
    node = routes->root;

    for (p = template->data + 1; p < last; p = q + 1) {

        for (q = p; q < last && *q != '/'; q++) { /* void */ }

        (void) ngx_http_playarr_metrics_route_segment(p, q, &type, &ext);

        switch (type) {

        case NGX_HTTP_PLAYARR_METRICS_ROUTE_STAR:

            if (node->star != NGX_HTTP_PLAYARR_METRICS_NO_ROUTE) {
                prev = ngx_http_playarr_metrics_routes_template(routes,
                                                                node->star);
                goto duplicate;
            }

            /* the last segment: added below */
            child = NULL;
            break;

        case NGX_HTTP_PLAYARR_METRICS_ROUTE_PARAM:

            child = node->param;

            if (child == NULL) {
                child = ngx_http_playarr_metrics_route_node(routes->pool);
                if (child == NULL) {
                    return NGX_CONF_ERROR;
                }

                node->param = child;
                node->inner = 1;
            }

            break;

        case NGX_HTTP_PLAYARR_METRICS_ROUTE_EXT:

            child = ngx_http_playarr_metrics_route_add_ext(routes->pool, node,
                                                           &ext);
            if (child == NULL) {
                return NGX_CONF_ERROR;
            }

            break;

        default: /* NGX_HTTP_PLAYARR_METRICS_ROUTE_LITERAL */

            child = ngx_http_playarr_metrics_route_add_literal(routes->pool,
                                                               node, p, q - p);
            if (child == NULL) {
                return NGX_CONF_ERROR;
            }

            break;
        }

        if (child == NULL) {
            break;
        }

        node = child;
    }

    /* p < last: the loop stopped at a final "*" */

    if (p >= last && node->route != NGX_HTTP_PLAYARR_METRICS_NO_ROUTE) {
        prev = ngx_http_playarr_metrics_routes_template(routes, node->route);
        goto duplicate;
    }

    t = ngx_array_push(&routes->templates);
    if (t == NULL) {
        return NGX_CONF_ERROR;
    }

    t->len = template->len;
    t->data = ngx_pstrdup(routes->pool, template);
    if (t->data == NULL) {
        return NGX_CONF_ERROR;
    }

    if (p < last) {
        node->star = n;

    } else {
        node->route = n;
    }

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

    node = ngx_pcalloc(pool, sizeof(ngx_http_playarr_metrics_route_node_t));
    if (node == NULL) {
        return NULL;
    }

    node->route = NGX_HTTP_PLAYARR_METRICS_NO_ROUTE;
    node->star = NGX_HTTP_PLAYARR_METRICS_NO_ROUTE;

    return node;
}


static ngx_http_playarr_metrics_route_node_t *
ngx_http_playarr_metrics_route_add_literal(ngx_pool_t *pool,
    ngx_http_playarr_metrics_route_node_t *node, u_char *p, size_t len)
{
    size_t                                 i;
    uint32_t                               hash;
    ngx_http_playarr_metrics_route_lit_t   lit, *found;

    hash = 0;

    for (i = 0; i < len; i++) {
        hash = ngx_http_playarr_metrics_route_hash(hash, p[i]);
    }

    if (node->lits != NULL) {
        found = ngx_http_playarr_metrics_route_find(node, p, len, hash);
        if (found != NULL) {
            return found->node;
        }
    }

    if ((node->nlits + 1) * 2 > node->mask + 1 || node->lits == NULL) {
        if (ngx_http_playarr_metrics_route_grow(pool, node) != NGX_OK) {
            return NULL;
        }
    }

    lit.hash = hash;
    lit.len = (uint32_t) len;

    lit.data = ngx_pnalloc(pool, len);
    if (lit.data == NULL) {
        return NULL;
    }

    ngx_strlow(lit.data, p, len);

    lit.node = ngx_http_playarr_metrics_route_node(pool);
    if (lit.node == NULL) {
        return NULL;
    }

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

    lits = ngx_pcalloc(pool,
                       slots * sizeof(ngx_http_playarr_metrics_route_lit_t));
    if (lits == NULL) {
        return NGX_ERROR;
    }

    node->lits = lits;
    node->mask = slots - 1;
    node->shift = 32 - bits;

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

    i = (uint32_t) (lit->hash * 0x9e3779b1) >> node->shift;

    while (node->lits[i].node != NULL) {
        i = (i + 1) & node->mask;
    }

    node->lits[i] = *lit;
}


static ngx_http_playarr_metrics_route_node_t *
ngx_http_playarr_metrics_route_add_ext(ngx_pool_t *pool,
    ngx_http_playarr_metrics_route_node_t *node, ngx_str_t *ext)
{
    u_char                                *data;
    ngx_uint_t                             i, k;
    ngx_http_playarr_metrics_route_ext_t  *exts;

    for (i = 0; i < node->nexts; i++) {
        if (node->exts[i].len == ext->len
            && ngx_http_playarr_metrics_route_eq(ext->data, node->exts[i].data,
                                                 ext->len))
        {
            return node->exts[i].node;
        }
    }

    exts = ngx_palloc(pool, (node->nexts + 1)
                            * sizeof(ngx_http_playarr_metrics_route_ext_t));
    if (exts == NULL) {
        return NULL;
    }

    data = ngx_pnalloc(pool, ext->len);
    if (data == NULL) {
        return NULL;
    }

    ngx_strlow(data, ext->data, ext->len);

    /* the longest suffix first, the first added first among equals */

    for (k = 0; k < node->nexts && node->exts[k].len >= ext->len; k++) {
        exts[k] = node->exts[k];
    }

    exts[k].len = ext->len;
    exts[k].data = data;

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

    return exts[k].node;
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
    ngx_str_t  *t;

    if (n >= routes->templates.nelts) {
        return NULL;
    }

    t = routes->templates.elts;

    return &t[n];
}


ngx_uint_t
ngx_http_playarr_metrics_routes_match(
    ngx_http_playarr_metrics_routes_t *routes, u_char *path, size_t len)
{
    u_char                                 *p, *last;
    size_t                                  n;
    uint32_t                                hash;
    ngx_uint_t                              d, i, parsed, fresh;
    ngx_http_playarr_metrics_route_lit_t   *lit;
    ngx_http_playarr_metrics_route_ext_t   *ext;
    ngx_http_playarr_metrics_route_seg_t   *seg;
    ngx_http_playarr_metrics_route_node_t  *node, *child;

    ngx_uint_t   next[NGX_HTTP_PLAYARR_METRICS_ROUTE_MAX_DEPTH];
    ngx_http_playarr_metrics_route_node_t
                *stack[NGX_HTTP_PLAYARR_METRICS_ROUTE_MAX_DEPTH];
    ngx_http_playarr_metrics_route_seg_t
                 segs[NGX_HTTP_PLAYARR_METRICS_ROUTE_MAX_DEPTH];

    if (len == 0 || path[0] != '/') {
        return NGX_HTTP_PLAYARR_METRICS_NO_ROUTE;
    }

    last = path + len;
    node = routes->root;
    seg = segs;
    d = 0;
    i = 0;
    parsed = 0;
    fresh = 1;

    /*
     * node is at depth d, i.e. it is about to consume segment d (counted
     * from 0).  On a fresh entry the literal child is tried first; on a
     * return after a failed descent the search resumes at alternative i:
     * exts[0 .. nexts - 1], then the parameter (nexts), then "*".
     */

    for ( ;; ) {

        if (fresh) {

            if (d < parsed) {
                seg = &segs[d];

            } else {
                p = (d == 0) ? path : segs[d - 1].end;

                while (p < last && *p == '/') {
                    p++;
                }

                if (p == last) {
                    /* the path ends here */

                    if (node->route != NGX_HTTP_PLAYARR_METRICS_NO_ROUTE) {
                        return node->route;
                    }

                    goto back;
                }

                if (!node->inner) {
                    /* no need to find where this segment ends */
                    goto star;
                }

                /* node->inner implies d < NGX_..._MAX_DEPTH */

                seg = &segs[d];
                seg->start = p;
                hash = 0;

                do {
                    hash = ngx_http_playarr_metrics_route_hash(hash, *p);
                    p++;
                } while (p < last && *p != '/');

                seg->end = p;
                seg->hash = hash;
                parsed = d + 1;
            }

            fresh = 0;
            i = 0;

            if (node->nlits) {
                lit = ngx_http_playarr_metrics_route_find(node, seg->start,
                                                   seg->end - seg->start,
                                                   seg->hash);
                if (lit != NULL) {
                    child = lit->node;
                    goto descend;
                }
            }
        }

        n = seg->end - seg->start;

        for ( /* void */ ; i < node->nexts; i++) {
            ext = &node->exts[i];

            if (n > ext->len
                && ngx_http_playarr_metrics_route_eq(seg->end - ext->len,
                                                     ext->data, ext->len))
            {
                child = ext->node;
                i++;
                goto descend;
            }
        }

        if (i == node->nexts && node->param != NULL) {
            child = node->param;
            i++;
            goto descend;
        }

    star:

        /* segment d exists here, so "*" matches the rest of the path */

        if (node->star != NGX_HTTP_PLAYARR_METRICS_NO_ROUTE) {
            return node->star;
        }

    back:

        if (d == 0) {
            return NGX_HTTP_PLAYARR_METRICS_NO_ROUTE;
        }

        d--;
        node = stack[d];
        i = next[d];
        seg = &segs[d];

        continue;

    descend:

        stack[d] = node;
        next[d] = i;
        node = child;
        d++;
        fresh = 1;
    }
}


static ngx_inline ngx_http_playarr_metrics_route_lit_t *
ngx_http_playarr_metrics_route_find(ngx_http_playarr_metrics_route_node_t *node,
    u_char *p, size_t len, uint32_t hash)
{
    ngx_uint_t                             i;
    ngx_http_playarr_metrics_route_lit_t  *lit;

    i = (uint32_t) (hash * 0x9e3779b1) >> node->shift;

    for ( ;; ) {
        lit = &node->lits[i];

        if (lit->node == NULL) {
            return NULL;
        }

        if (lit->hash == hash
            && lit->len == len
            && ngx_http_playarr_metrics_route_eq(p, lit->data, len))
        {
            return lit;
        }

        i = (i + 1) & node->mask;
    }
}


/* s matches the lowercase lc, ignoring ASCII case */

static ngx_inline ngx_uint_t
ngx_http_playarr_metrics_route_eq(u_char *s, u_char *lc, size_t n)
{
    u_char  c;

    while (n--) {
        c = *s++;

        if (c != *lc) {
            if ((u_char) (c - 'A') > 'Z' - 'A' || (c | 0x20) != *lc) {
                return 0;
            }
        }

        lc++;
    }

    return 1;
}
