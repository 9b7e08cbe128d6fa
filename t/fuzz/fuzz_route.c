
/*
 * Copyright (C) Playarr metrics module authors
 */


/*
 * The route matcher: ngx_http_playarr_metrics_routes_add() and _match().
 *
 * Input: a flags byte, then
 * - flags & 1 == 0: a path, matched against Playarr's 68 templates
 *   (docs/playarr-routes.conf), compiled once;
 * - flags & 1 == 1: lines; those before the first empty line are
 *   templates, added in order to a new set (after Playarr's when
 *   flags & 2) as the playarr_metrics_route directive does, those after
 *   it are paths.
 *
 * Every answer is checked against a naive matcher written from the
 * contract (docs/directives.md, route.h): among the templates matching the
 * path, the one whose segments, compared from the left, rank best (a
 * literal, then ":name.ext" with the longer ext first, then ":name",
 * then "*").  Also checked: the path is never written to nor read out of
 * bounds (it is copied into a block of its exact size), a trailing slash
 * or uppercase letters in the path change nothing, a template rejected as
 * a duplicate has the same shape as an accepted one, and no two accepted
 * templates have the same shape.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "fuzz.h"


#define FUZZ_ROUTE_MAX  256

#define FUZZ_LITERAL    0
#define FUZZ_EXT        1
#define FUZZ_PARAM      2
#define FUZZ_STAR       3


typedef struct {
    u_char                             *data;
    size_t                              len;
    ngx_uint_t                          type;
    size_t                              ext;     /* length of ".ext" */
} fuzz_seg_t;


typedef struct {
    ngx_str_t                           text;
    ngx_uint_t                          nsegs;
    fuzz_seg_t          segs[NGX_HTTP_PLAYARR_METRICS_ROUTE_MAX_DEPTH];
} fuzz_template_t;


typedef struct {
    ngx_http_playarr_metrics_routes_t  *routes;
    ngx_uint_t                          n;
    fuzz_template_t                     t[FUZZ_ROUTE_MAX];
} fuzz_set_t;


int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static ngx_int_t fuzz_add(ngx_conf_t *cf, fuzz_set_t *set, u_char *p,
    size_t len);
static void fuzz_parse(fuzz_template_t *t);
static ngx_uint_t fuzz_same_shape(fuzz_template_t *a, fuzz_template_t *b);
static ngx_uint_t fuzz_reference(fuzz_set_t *set, u_char *path, size_t len);
static ngx_int_t fuzz_better(fuzz_template_t *a, fuzz_template_t *b);
static ngx_uint_t fuzz_seg_matches(fuzz_seg_t *s, u_char *p, size_t len);
static ngx_uint_t fuzz_caseeq(u_char *a, u_char *b, size_t len);
static void fuzz_check_path(fuzz_set_t *set, const u_char *path, size_t len);
static ngx_uint_t fuzz_match(fuzz_set_t *set, const u_char *path, size_t len);
static void fuzz_instance(fuzz_set_t *set, fuzz_template_t *t);
static void fuzz_log_duplicate(ngx_uint_t level, u_char *msg, size_t len);


static fuzz_set_t   fuzz_playarr;
static ngx_uint_t   fuzz_duplicate;


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ngx_str_t    *t;
    ngx_uint_t    i;
    ngx_conf_t    cf;
    ngx_pool_t   *pool;
    ngx_array_t  *templates;

    templates = fuzz_playarr_templates();

    pool = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, &fuzz_log);
    if (pool == NULL) {
        fuzz_fatal("ngx_create_pool() failed");
    }

    ngx_memzero(&cf, sizeof(ngx_conf_t));
    cf.pool = pool;
    cf.log = &fuzz_log;

    fuzz_playarr.routes = ngx_http_playarr_metrics_routes_create(pool);
    if (fuzz_playarr.routes == NULL) {
        fuzz_fatal("routes_create() failed");
    }

    t = templates->elts;

    for (i = 0; i < templates->nelts; i++) {
        if (fuzz_add(&cf, &fuzz_playarr, t[i].data, t[i].len) != NGX_OK) {
            fuzz_fatal("Playarr's template \"%s\" is refused", t[i].data);
        }
    }

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char       *p, *q, *last;
    ngx_uint_t    flags, i, paths;
    ngx_conf_t    cf;
    ngx_pool_t   *pool;
    fuzz_set_t   *set;

    static fuzz_set_t  own;

    if (size == 0) {
        return 0;
    }

    flags = data[0];
    p = (u_char *) data + 1;
    last = (u_char *) data + size;

    if (!(flags & 1)) {
        fuzz_check_path(&fuzz_playarr, p, last - p);
        return 0;
    }

    pool = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, &fuzz_log);
    if (pool == NULL) {
        fuzz_fatal("ngx_create_pool() failed");
    }

    ngx_memzero(&cf, sizeof(ngx_conf_t));
    cf.pool = pool;
    cf.log = &fuzz_log;

    set = &own;
    set->n = 0;

    set->routes = ngx_http_playarr_metrics_routes_create(pool);
    if (set->routes == NULL) {
        fuzz_fatal("routes_create() failed");
    }

    if (flags & 2) {
        for (i = 0; i < fuzz_playarr.n; i++) {
            if (fuzz_add(&cf, set, fuzz_playarr.t[i].text.data,
                         fuzz_playarr.t[i].text.len)
                != NGX_OK)
            {
                fuzz_fatal("Playarr's templates are refused");
            }
        }
    }

    paths = 0;

    while (p < last) {
        q = ngx_strlchr(p, last, '\n');
        if (q == NULL) {
            q = last;
        }

        if (q == p && !paths) {
            paths = 1;

        } else if (paths) {
            fuzz_check_path(set, p, q - p);

        } else if (set->n < FUZZ_ROUTE_MAX) {
            (void) fuzz_add(&cf, set, p, q - p);
        }

        p = q + 1;
    }

    /* every template matches an instance of itself, or a better one */

    for (i = 0; i < set->n; i++) {
        fuzz_instance(set, &set->t[i]);
    }

    ngx_destroy_pool(pool);

    return 0;
}


/* a path made of the template, ":name" replaced with "x", "*" with "y/z" */

static void
fuzz_instance(fuzz_set_t *set, fuzz_template_t *t)
{
    u_char      *b;
    ngx_uint_t   k;
    fuzz_seg_t  *s;
    u_char       buf[4 * NGX_HTTP_PLAYARR_METRICS_ROUTE_MAX_LEN];

    b = buf;

    for (k = 0; k < t->nsegs; k++) {
        s = &t->segs[k];
        *b++ = '/';

        switch (s->type) {

        case FUZZ_LITERAL:
            b = ngx_cpymem(b, s->data, s->len);
            break;

        case FUZZ_EXT:
            *b++ = 'x';
            b = ngx_cpymem(b, s->data + s->len - s->ext, s->ext);
            break;

        case FUZZ_PARAM:
            *b++ = 'x';
            break;

        default:
            b = ngx_cpymem(b, "y/z", 3);
        }
    }

    if (b == buf) {
        *b++ = '/';
    }

    if (fuzz_match(set, buf, b - buf) == NGX_HTTP_PLAYARR_METRICS_NO_ROUTE) {
        fuzz_fatal("template \"%.*s\" does not match \"%.*s\"",
                   (int) t->text.len, t->text.data, (int) (b - buf), buf);
    }

    fuzz_check_path(set, buf, b - buf);
}


/* the playarr_metrics_route directive: checks, then routes_add() */

static ngx_int_t
fuzz_add(ngx_conf_t *cf, fuzz_set_t *set, u_char *p, size_t len)
{
    char             *rc;
    ngx_str_t         template;
    ngx_uint_t        i, count;
    fuzz_template_t  *t;
    u_char            buf[NGX_HTTP_PLAYARR_METRICS_VALUE_MAX];

    if (len > NGX_HTTP_PLAYARR_METRICS_VALUE_MAX
        || ngx_http_playarr_metrics_value_copy(buf, p, len) != len
        || ngx_memcmp(buf, p, len) != 0)
    {
        return NGX_DECLINED;
    }

    /* a directive argument is a NUL-terminated copy */

    template.len = len;
    template.data = ngx_pnalloc(cf->pool, len + 1);
    if (template.data == NULL) {
        fuzz_fatal("ngx_pnalloc() failed");
    }

    ngx_memcpy(template.data, p, len);
    template.data[len] = '\0';

    count = ngx_http_playarr_metrics_routes_count(set->routes);

    fuzz_duplicate = 0;
    fuzz_log_hook = fuzz_log_duplicate;

    rc = ngx_http_playarr_metrics_routes_add(cf, set->routes, &template);

    fuzz_log_hook = NULL;

    t = &set->t[set->n];
    t->text = template;
    fuzz_parse(t);

    if (rc != NGX_CONF_OK) {

        if (ngx_http_playarr_metrics_routes_count(set->routes) != count) {
            fuzz_fatal("a refused template was counted");
        }

        if (!fuzz_duplicate) {
            return NGX_DECLINED;
        }

        for (i = 0; i < set->n; i++) {
            if (fuzz_same_shape(t, &set->t[i])) {
                return NGX_DECLINED;
            }
        }

        fuzz_fatal("\"%s\" refused as a duplicate of none", template.data);
    }

    if (ngx_http_playarr_metrics_routes_count(set->routes) != count + 1) {
        fuzz_fatal("an accepted template was not counted");
    }

    if (t->nsegs == 0 && len != 1) {
        fuzz_fatal("\"%s\" accepted, but has no segment", template.data);
    }

    for (i = 0; i < set->n; i++) {
        if (fuzz_same_shape(t, &set->t[i])) {
            fuzz_fatal("\"%s\" accepted, but \"%.*s\" has the same shape",
                       template.data, (int) set->t[i].text.len,
                       set->t[i].text.data);
        }
    }

    p = ngx_http_playarr_metrics_routes_template(set->routes, count)->data;

    if (ngx_memcmp(p, template.data, len) != 0) {
        fuzz_fatal("template %lu is not \"%s\"", count, template.data);
    }

    set->n++;

    return NGX_OK;
}


static void
fuzz_log_duplicate(ngx_uint_t level, u_char *msg, size_t len)
{
    if (len >= 24 && ngx_strncmp(msg, "duplicate route template", 24) == 0) {
        fuzz_duplicate = 1;
    }
}


/* the segments of a template as the contract describes them */

static void
fuzz_parse(fuzz_template_t *t)
{
    u_char      *p, *q, *last, *n;
    fuzz_seg_t  *s;

    t->nsegs = 0;

    p = t->text.data;
    last = p + t->text.len;

    if (t->text.len > 1 && last[-1] == '/') {
        last--;
    }

    if (p < last) {
        p++;
    }

    for ( /* void */ ; p < last; p = q + 1) {
        q = ngx_strlchr(p, last, '/');
        if (q == NULL) {
            q = last;
        }

        if (t->nsegs == NGX_HTTP_PLAYARR_METRICS_ROUTE_MAX_DEPTH) {
            return;
        }

        s = &t->segs[t->nsegs++];
        s->data = p;
        s->len = q - p;
        s->ext = 0;
        s->type = FUZZ_LITERAL;

        if (s->len == 1 && *p == '*') {
            s->type = FUZZ_STAR;

        } else if (s->len > 1 && *p == ':') {

            for (n = p + 1; n < q; n++) {
                if (!((*n >= 'a' && *n <= 'z') || (*n >= 'A' && *n <= 'Z')
                      || (*n >= '0' && *n <= '9') || *n == '_'))
                {
                    break;
                }
            }

            if (n == q) {
                s->type = FUZZ_PARAM;

            } else if (*n == '.') {
                s->type = FUZZ_EXT;
                s->ext = q - n;
            }
        }
    }
}


/* the same place in the trie: a duplicate */

static ngx_uint_t
fuzz_same_shape(fuzz_template_t *a, fuzz_template_t *b)
{
    ngx_uint_t   i;
    fuzz_seg_t  *x, *y;

    if (a->nsegs != b->nsegs) {
        return 0;
    }

    for (i = 0; i < a->nsegs; i++) {
        x = &a->segs[i];
        y = &b->segs[i];

        if (x->type != y->type) {
            return 0;
        }

        switch (x->type) {

        case FUZZ_LITERAL:
            if (x->len != y->len || !fuzz_caseeq(x->data, y->data, x->len)) {
                return 0;
            }
            break;

        case FUZZ_EXT:
            if (x->ext != y->ext
                || !fuzz_caseeq(x->data + x->len - x->ext,
                                y->data + y->len - y->ext, x->ext))
            {
                return 0;
            }
            break;

        default:
            break;
        }
    }

    return 1;
}


static ngx_uint_t
fuzz_reference(fuzz_set_t *set, u_char *path, size_t len)
{
    u_char           *p, *q, *last;
    size_t            slen[FUZZ_ROUTE_MAX];
    u_char           *seg[FUZZ_ROUTE_MAX];
    ngx_uint_t        n, i, k, best;
    fuzz_template_t  *t;

    if (len == 0 || path[0] != '/') {
        return NGX_HTTP_PLAYARR_METRICS_NO_ROUTE;
    }

    /* the non-empty segments of the path */

    n = 0;
    last = path + len;

    for (p = path; p < last; p = q + 1) {
        q = ngx_strlchr(p, last, '/');
        if (q == NULL) {
            q = last;
        }

        if (q == p) {
            continue;
        }

        if (n == FUZZ_ROUTE_MAX) {
            break;
        }

        seg[n] = p;
        slen[n] = q - p;
        n++;
    }

    best = NGX_HTTP_PLAYARR_METRICS_NO_ROUTE;

    for (i = 0; i < set->n; i++) {
        t = &set->t[i];

        if (t->nsegs && t->segs[t->nsegs - 1].type == FUZZ_STAR) {
            if (n < t->nsegs) {
                continue;
            }

            k = t->nsegs - 1;

        } else {
            if (n != t->nsegs) {
                continue;
            }

            k = t->nsegs;
        }

        while (k--) {
            if (!fuzz_seg_matches(&t->segs[k], seg[k], slen[k])) {
                break;
            }
        }

        if (k != (ngx_uint_t) -1) {
            continue;
        }

        if (best == NGX_HTTP_PLAYARR_METRICS_NO_ROUTE) {
            best = i;
            continue;
        }

        switch (fuzz_better(t, &set->t[best])) {
        case 1:
            best = i;
            break;
        case 0:
            fuzz_fatal("reference: \"%.*s\" and \"%.*s\" rank the same",
                       (int) t->text.len, t->text.data,
                       (int) set->t[best].text.len, set->t[best].text.data);
        default:
            break;
        }
    }

    return best;
}


/* 1: a ranks before b, -1: after, 0: the same */

static ngx_int_t
fuzz_better(fuzz_template_t *a, fuzz_template_t *b)
{
    ngx_uint_t   i;
    fuzz_seg_t  *x, *y;

    for (i = 0; i < a->nsegs && i < b->nsegs; i++) {
        x = &a->segs[i];
        y = &b->segs[i];

        if (x->type != y->type) {
            return (x->type < y->type) ? 1 : -1;
        }

        if (x->type == FUZZ_EXT && x->ext != y->ext) {
            return (x->ext > y->ext) ? 1 : -1;
        }
    }

    if (a->nsegs != b->nsegs) {
        fuzz_fatal("reference: both \"%.*s\" and \"%.*s\" match",
                   (int) a->text.len, a->text.data,
                   (int) b->text.len, b->text.data);
    }

    return 0;
}


static ngx_uint_t
fuzz_seg_matches(fuzz_seg_t *s, u_char *p, size_t len)
{
    switch (s->type) {

    case FUZZ_LITERAL:
        return len == s->len && fuzz_caseeq(p, s->data, len);

    case FUZZ_EXT:
        return len > s->ext
               && fuzz_caseeq(p + len - s->ext, s->data + s->len - s->ext,
                              s->ext);

    default:
        return 1;
    }
}


/* ASCII letters only, as Express */

static ngx_uint_t
fuzz_caseeq(u_char *a, u_char *b, size_t len)
{
    u_char  x, y;

    while (len--) {
        x = *a++;
        y = *b++;

        if (x >= 'A' && x <= 'Z') {
            x |= 0x20;
        }

        if (y >= 'A' && y <= 'Z') {
            y |= 0x20;
        }

        if (x != y) {
            return 0;
        }
    }

    return 1;
}


/* matched from a block of its own size, checked against the reference */

static ngx_uint_t
fuzz_match(fuzz_set_t *set, const u_char *path, size_t len)
{
    u_char      *copy;
    ngx_uint_t   n;

    copy = malloc(len ? len : 1);
    if (copy == NULL) {
        fuzz_fatal("malloc() failed");
    }

    ngx_memcpy(copy, path, len);

    n = ngx_http_playarr_metrics_routes_match(set->routes, copy, len);

    if (ngx_memcmp(copy, path, len) != 0) {
        fuzz_fatal("routes_match() changed the path");
    }

    free(copy);

    if (n != NGX_HTTP_PLAYARR_METRICS_NO_ROUTE
        && n >= ngx_http_playarr_metrics_routes_count(set->routes))
    {
        fuzz_fatal("routes_match() returned %lu of %lu templates", n,
                   ngx_http_playarr_metrics_routes_count(set->routes));
    }

    return n;
}


static void
fuzz_check_path(fuzz_set_t *set, const u_char *path, size_t len)
{
    u_char      *buf;
    size_t       i;
    ngx_uint_t   n, ref, other;

    n = fuzz_match(set, path, len);
    ref = fuzz_reference(set, (u_char *) path, len);

    if (n != ref) {
        fuzz_fatal("path \"%.*s\": routes_match() says \"%.*s\", "
                   "the reference \"%.*s\"",
                   (int) len, path,
                   n == NGX_HTTP_PLAYARR_METRICS_NO_ROUTE
                   ? 4 : (int) set->t[n].text.len,
                   n == NGX_HTTP_PLAYARR_METRICS_NO_ROUTE
                   ? (u_char *) "none" : set->t[n].text.data,
                   ref == NGX_HTTP_PLAYARR_METRICS_NO_ROUTE
                   ? 4 : (int) set->t[ref].text.len,
                   ref == NGX_HTTP_PLAYARR_METRICS_NO_ROUTE
                   ? (u_char *) "none" : set->t[ref].text.data);
    }

    buf = malloc(len + 1);
    if (buf == NULL) {
        fuzz_fatal("malloc() failed");
    }

    /* a trailing slash is ignored */

    ngx_memcpy(buf, path, len);
    buf[len] = '/';

    other = fuzz_match(set, buf, len + 1);

    if (len && other != n) {
        fuzz_fatal("path \"%.*s\" and the same with \"/\" differ",
                   (int) len, path);
    }

    /* literals and suffixes compare case-insensitively */

    for (i = 0; i < len; i++) {
        buf[i] = (path[i] >= 'a' && path[i] <= 'z') ? path[i] & ~0x20
                                                    : path[i];
    }

    other = fuzz_match(set, buf, len);

    if (other != n) {
        fuzz_fatal("path \"%.*s\" and the same in uppercase differ",
                   (int) len, path);
    }

    free(buf);
}
