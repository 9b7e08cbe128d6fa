
/*
 * Copyright (C) Playarr metrics module authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ngx_http_playarr_metrics_module.h>

/* 16 bytes compared at once */
#if ((__GNUC__ || __clang__) && __SSE2__)
#include <emmintrin.h>
#define NGX_HTTP_PLAYARR_METRICS_SSE2  1
#endif


/*
 * The recording of a request: its endpoint (the route template), status,
 * user and duration, added to the built-in HTTP families in the log
 * phase; the updates an upstream response header carries; the requests
 * in flight.  Everything here runs for every request.
 *
 * The log handler finds the endpoint, status and user of a request, and
 * the series for them, and adds to those.  Two caches of a worker's keep
 * the series of requests seen lately: by what the request gives (its
 * path, the value its user is read from, its status), found before its
 * route is matched; else by what it is recorded as (endpoint, status,
 * user).  The header filter only takes the updates an upstream response
 * header carries, where a location asks for them.
 */


/*
 * The requests a worker recorded lately: the series of an endpoint, a
 * status and a user (as the request gave it), found again without the
 * keys being built, hashed and compared.  Series are never freed nor
 * moved while their zone lives, and the cache lives with the main conf,
 * so with the zone and families it was filled from; an overflow series
 * is never kept, so that every refused request still counts as one.  A
 * set holds 4 entries, the newest first: 2048 entries of 64 bytes, each
 * in a cache line of its own, 128k a worker, allocated when the worker
 * starts.  A user longer than 32 bytes is not kept.
 */

#define NGX_HTTP_PLAYARR_METRICS_RECENT_BITS  9
#define NGX_HTTP_PLAYARR_METRICS_RECENT_SETS                                  \
    (1 << NGX_HTTP_PLAYARR_METRICS_RECENT_BITS)
#define NGX_HTTP_PLAYARR_METRICS_RECENT_WAYS  4
#define NGX_HTTP_PLAYARR_METRICS_RECENT_USER  32

/* a hint that memory will be read soon: a load that never faults */
#if (__GNUC__ || __clang__)
#define ngx_http_playarr_metrics_prefetch_line(p)  __builtin_prefetch(p)
#else
#define ngx_http_playarr_metrics_prefetch_line(p)
#endif


/*
 * The paths cache: the series of the requests a worker recorded lately,
 * by what a request gives, not yet matched to a route: the routes of its
 * server, its path, its status and the value its user is read from (the
 * user itself; with the route user, the query's "username" argument as
 * sent, as the user is then the path's or that argument's).  A request
 * found there costs no route match, and with one header or the route
 * user no user lookup either.  Not a 401 nor a location with an error
 * type, which count in other families by the endpoint and user.  An
 * entry is kept once its series are known, never with an overflow series.
 * 2048 sets of 4 entries of 128 bytes, 1m a worker, allocated when the
 * worker starts; a path and value longer than 96 bytes together are not
 * kept.
 */

#define NGX_HTTP_PLAYARR_METRICS_PATHS_BITS   11
#define NGX_HTTP_PLAYARR_METRICS_PATHS_WAYS   4
#define NGX_HTTP_PLAYARR_METRICS_PATH_KEY     96

/*
 * In the tag of every entry kept: an empty entry (all zero) never
 * matches a request, whatever its key (an HTTP/2 stream cut before its
 * headers ended has an empty path, status 0 and no user).
 */
#define NGX_HTTP_PLAYARR_METRICS_PATH_USED    ((uint64_t) 1 << 63)


struct ngx_http_playarr_metrics_path_s {
    void                               *routes;
    uint64_t                            tag;           /* 0: empty */
    ngx_http_playarr_metrics_series_t  *duration;      /* NULL for 101 */
    ngx_http_playarr_metrics_series_t  *requests;
    u_char                 key[NGX_HTTP_PLAYARR_METRICS_PATH_KEY];
};


struct ngx_http_playarr_metrics_recent_s {
    u_char                             *endpoint;      /* a template */
    uint64_t                            tag;           /* lengths, status */
    ngx_http_playarr_metrics_series_t  *duration;      /* NULL for 101 */
    ngx_http_playarr_metrics_series_t  *requests;
    u_char            user[NGX_HTTP_PLAYARR_METRICS_RECENT_USER];
};


/*
 * What the log handler finds out about a request: the endpoint, the
 * status, the user (and the one claimed, for a 401); the set of the paths
 * cache and the key there (the path, what gives the user, the status);
 * the set of the recent requests cache and the tag there; and the two
 * series of the entry that had them.
 */

typedef struct {
    ngx_str_t                            endpoint;     /* a template */
    ngx_str_t                            user;
    ngx_str_t                            claimed;
    ngx_str_t                            path;
    ngx_str_t                            given;        /* the user's source */
    void                                *routes;       /* of the server */
    ngx_http_playarr_metrics_path_t     *paths;        /* NULL: none */
    uint64_t                             path_tag;
    ngx_uint_t                           path_way;     /* replaced if full */
    ngx_http_playarr_metrics_recent_t   *set;          /* NULL: none */
    uint64_t                             tag;
    ngx_http_playarr_metrics_series_t   *duration;     /* NULL for 101 */
    ngx_http_playarr_metrics_series_t   *requests;     /* NULL: no entry */
    uint32_t                             status;
} ngx_http_playarr_metrics_record_t;


static ngx_int_t ngx_http_playarr_metrics_header_filter(
    ngx_http_request_t *r);
static ngx_http_playarr_metrics_noinline ngx_int_t
    ngx_http_playarr_metrics_take_headers(ngx_http_request_t *r,
    ngx_http_playarr_metrics_loc_conf_t *plcf);
static ngx_int_t ngx_http_playarr_metrics_headers_log_handler(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_playarr_metrics_post_read_handler(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_playarr_metrics_log_handler(ngx_http_request_t *r);
static ngx_http_playarr_metrics_inline ngx_int_t
    ngx_http_playarr_metrics_count(
    ngx_http_request_t *r, ngx_http_playarr_metrics_loc_conf_t *plcf,
    ngx_http_playarr_metrics_record_t *rec);
static ngx_int_t ngx_http_playarr_metrics_count_keys(ngx_http_request_t *r,
    ngx_http_playarr_metrics_loc_conf_t *plcf,
    ngx_http_playarr_metrics_record_t *rec, ngx_msec_int_t ms);
static void ngx_http_playarr_metrics_auth_failed(
    ngx_http_playarr_metrics_store_t *store, u_char *key, size_t n,
    ngx_str_t *ep, ngx_str_t *user, ngx_str_t *claimed, u_char *buf);
static void ngx_http_playarr_metrics_remember(
    ngx_http_playarr_metrics_record_t *rec,
    ngx_http_playarr_metrics_series_t *duration,
    ngx_http_playarr_metrics_series_t *requests);
static ngx_http_playarr_metrics_inline ngx_int_t
    ngx_http_playarr_metrics_find(ngx_http_request_t *r,
    ngx_http_playarr_metrics_loc_conf_t *plcf,
    ngx_http_playarr_metrics_main_conf_t *pmcf,
    ngx_http_playarr_metrics_record_t *rec,
    ngx_http_playarr_metrics_jwt_claims_t *tmp);
static ngx_http_playarr_metrics_inline ngx_int_t
    ngx_http_playarr_metrics_user(
    ngx_http_request_t *r, ngx_http_playarr_metrics_loc_conf_t *plcf,
    ngx_http_playarr_metrics_main_conf_t *pmcf,
    ngx_http_playarr_metrics_record_t *rec,
    ngx_http_playarr_metrics_jwt_claims_t *tmp);
static ngx_http_playarr_metrics_noinline ngx_int_t
    ngx_http_playarr_metrics_session_user(ngx_http_request_t *r,
    ngx_http_playarr_metrics_record_t *rec,
    ngx_http_playarr_metrics_jwt_claims_t *tmp);
static uint32_t ngx_http_playarr_metrics_status(ngx_http_request_t *r);
static ngx_inline void ngx_http_playarr_metrics_recent_set(
    ngx_http_playarr_metrics_main_conf_t *pmcf,
    ngx_http_playarr_metrics_record_t *rec);
static ngx_inline ngx_http_playarr_metrics_recent_t *
    ngx_http_playarr_metrics_recent_find(
    ngx_http_playarr_metrics_record_t *rec);
static ngx_inline uint64_t ngx_http_playarr_metrics_words(uint64_t h,
    u_char *p, size_t len);
static ngx_inline uint64_t ngx_http_playarr_metrics_ends(uint64_t h,
    u_char *p, size_t len);
static ngx_http_playarr_metrics_inline void
    ngx_http_playarr_metrics_paths_set(
    ngx_http_request_t *r, ngx_http_playarr_metrics_loc_conf_t *plcf,
    ngx_http_playarr_metrics_main_conf_t *pmcf,
    ngx_http_playarr_metrics_record_t *rec, ngx_uint_t query);
static ngx_inline ngx_http_playarr_metrics_path_t *
    ngx_http_playarr_metrics_paths_find(
    ngx_http_playarr_metrics_record_t *rec);
static void ngx_http_playarr_metrics_paths_keep(
    ngx_http_playarr_metrics_record_t *rec,
    ngx_http_playarr_metrics_series_t *duration,
    ngx_http_playarr_metrics_series_t *requests);
static ngx_inline ngx_uint_t ngx_http_playarr_metrics_same(u_char *a,
    u_char *b, size_t len);
static ngx_inline void ngx_http_playarr_metrics_copy(u_char *dst,
    u_char *src, size_t len);
static ngx_inline void ngx_http_playarr_metrics_endpoint(
    ngx_http_request_t *r, ngx_http_playarr_metrics_main_conf_t *pmcf,
    ngx_str_t *ep);
static ngx_inline void ngx_http_playarr_metrics_kept_path(
    ngx_http_request_t *r, ngx_http_playarr_metrics_main_conf_t *pmcf,
    ngx_str_t *path);
static ngx_inline void ngx_http_playarr_metrics_match(ngx_http_request_t *r,
    ngx_http_variable_value_t *v);
static ngx_int_t ngx_http_playarr_metrics_eval(ngx_http_request_t *r,
    ngx_http_playarr_metrics_value_t *value, ngx_str_t *s);
static ngx_http_playarr_metrics_inline void
    ngx_http_playarr_metrics_header_value(
    ngx_list_part_t *part, ngx_http_playarr_metrics_value_t *value,
    ngx_str_t *s);
static ngx_int_t ngx_http_playarr_metrics_endpoint_variable(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_playarr_metrics_path_variable(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);
static void ngx_http_playarr_metrics_keep_route_user(ngx_http_request_t *r,
    u_char *uri, size_t len, ngx_uint_t seg);
static ngx_int_t ngx_http_playarr_metrics_route_user_variable(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);


static ngx_str_t  ngx_http_playarr_metrics_endpoint_name =
    ngx_string("playarr_metrics_endpoint");

static ngx_str_t  ngx_http_playarr_metrics_route_user_name =
    ngx_string("playarr_metrics_route_username");

static ngx_str_t  ngx_http_playarr_metrics_path_name =
    ngx_string("playarr_metrics_path");

static ngx_str_t  ngx_http_playarr_metrics_unknown =
    ngx_string(NGX_HTTP_PLAYARR_METRICS_UNKNOWN);

static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;

/* this worker's slot of playarr_http_requests_in_flight */
static ngx_http_playarr_metrics_slot_t  *ngx_http_playarr_metrics_own_slot;


/*
 * The request path: the post-read and log phase handlers, the header
 * filter, and the indexes of the module's variables.
 */

ngx_int_t
ngx_http_playarr_metrics_record_init(ngx_conf_t *cf,
    ngx_http_playarr_metrics_main_conf_t *pmcf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    pmcf->endpoint = ngx_http_get_variable_index(cf,
                                     &ngx_http_playarr_metrics_endpoint_name);
    if (pmcf->endpoint == NGX_ERROR) {
        return NGX_ERROR;
    }

    pmcf->route_user = ngx_http_get_variable_index(cf,
                                   &ngx_http_playarr_metrics_route_user_name);
    if (pmcf->route_user == NGX_ERROR) {
        return NGX_ERROR;
    }

    pmcf->path = ngx_http_get_variable_index(cf,
                                         &ngx_http_playarr_metrics_path_name);
    if (pmcf->path == NGX_ERROR) {
        return NGX_ERROR;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_POST_READ_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_playarr_metrics_post_read_handler;

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_playarr_metrics_log_handler;

    if (pmcf->upstream_headers) {
        h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        *h = ngx_http_playarr_metrics_headers_log_handler;

        ngx_http_next_header_filter = ngx_http_top_header_filter;
        ngx_http_top_header_filter = ngx_http_playarr_metrics_header_filter;
    }

    return NGX_OK;
}


/* a worker frees its slot of the requests in flight when it exits */

void
ngx_http_playarr_metrics_record_exit_process(void)
{
    if (ngx_http_playarr_metrics_own_slot) {
        ngx_http_playarr_metrics_slot_release(
                                           ngx_http_playarr_metrics_own_slot);
        ngx_http_playarr_metrics_own_slot = NULL;
    }
}


/*
 * Updates carried by upstream response headers are taken out of the
 * response here, and applied when the request is logged; the filter is
 * set only when a location takes them (playarr_metrics_upstream_header).
 */

static ngx_int_t
ngx_http_playarr_metrics_header_filter(ngx_http_request_t *r)
{
    ngx_http_playarr_metrics_loc_conf_t  *plcf;

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_playarr_metrics_module);

    if (plcf->upstream_header.len && r->upstream
        && ngx_http_playarr_metrics_take_headers(r, plcf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_next_header_filter(r);
}


static ngx_int_t
ngx_http_playarr_metrics_take_headers(ngx_http_request_t *r,
    ngx_http_playarr_metrics_loc_conf_t *plcf)
{
    ngx_str_t                       *v;
    ngx_uint_t                       i;
    ngx_list_part_t                 *part;
    ngx_table_elt_t                 *h;
    ngx_http_playarr_metrics_ctx_t  *ctx;

    part = &r->headers_out.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash == 0
            || h[i].key.len != plcf->upstream_header.len
            || ngx_strncasecmp(h[i].key.data, plcf->upstream_header.data,
                               h[i].key.len)
               != 0)
        {
            continue;
        }

        ctx = ngx_http_playarr_metrics_ctx(r);
        if (ctx == NULL) {
            return NGX_ERROR;
        }

        if (ctx->headers.elts == NULL
            && ngx_array_init(&ctx->headers, r->pool, 2, sizeof(ngx_str_t))
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        v = ngx_array_push(&ctx->headers);
        if (v == NULL) {
            return NGX_ERROR;
        }

        *v = h[i].value;

        /* the header never reaches the client */

        h[i].hash = 0;
    }

    return NGX_OK;
}


/*
 * The updates the upstream response headers carried, in a log phase
 * handler of their own, set only when a location takes them
 * (playarr_metrics_upstream_header).
 */

static ngx_int_t
ngx_http_playarr_metrics_headers_log_handler(ngx_http_request_t *r)
{
    ngx_int_t                              rc, index;
    ngx_str_t                             *v, err;
    ngx_uint_t                             i, reason;
    ngx_array_t                            updates;
    ngx_http_playarr_metrics_ctx_t        *ctx;
    ngx_http_playarr_metrics_main_conf_t  *pmcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_playarr_metrics_module);

    if (ctx == NULL || ctx->headers.nelts == 0) {
        return NGX_OK;
    }

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_playarr_metrics_module);

    v = ctx->headers.elts;

    for (i = 0; i < ctx->headers.nelts; i++) {

        rc = ngx_http_playarr_metrics_updates_parse(r->pool, pmcf->store,
                                                    v[i].data, v[i].len,
                                                    &updates, &err, &index);
        if (rc == NGX_OK) {
            ngx_http_playarr_metrics_updates_apply(pmcf->store, &updates,
                                        NGX_HTTP_PLAYARR_METRICS_SOURCE_HEADER,
                                        r->connection->log);
            continue;
        }

        if (rc == NGX_ERROR) {
            return NGX_OK;
        }

        reason = (index < 0) ? NGX_HTTP_PLAYARR_METRICS_REJECT_MALFORMED
                             : NGX_HTTP_PLAYARR_METRICS_REJECT_INVALID;

        ngx_http_playarr_metrics_reject(pmcf->store,
                                        NGX_HTTP_PLAYARR_METRICS_SOURCE_HEADER,
                                        reason, r->connection->log, &err);
    }

    return NGX_OK;
}


/*
 * The route is that of the URI as nginx normalized it, before any rewrite.
 * The post-read phase keeps it as $playarr_metrics_path: unlike the
 * module contexts, r->variables survives internal redirects.  The route
 * is matched only when asked for, so a request that is not recorded does
 * not pay.
 *
 * A client request is in flight from here (once: the phase is that of
 * the main request only) until its log phase, which nginx runs once for
 * every main request, just before it frees it: whatever its location, a
 * scrape and an open websocket included.  The kept path is the mark that
 * it was counted in.  One finalized before this phase (a bad request line
 * or header, a 497) never is.
 */

static ngx_int_t
ngx_http_playarr_metrics_post_read_handler(ngx_http_request_t *r)
{
    ngx_http_variable_value_t             *v;
    ngx_http_playarr_metrics_main_conf_t  *pmcf;

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_playarr_metrics_module);

    v = &r->variables[pmcf->path];

    if (v->data == NULL && r->uri.data) {
        v->data = r->uri.data;
        v->len = r->uri.len;

        if (ngx_http_playarr_metrics_own_slot) {
            (void) ngx_atomic_fetch_add(
                                   &ngx_http_playarr_metrics_own_slot->count,
                                   1);
        }
    }

    return NGX_DECLINED;
}


/*
 * $playarr_metrics_path: the path kept in the post-read phase; not found
 * in a request finalized before it, whose mark it must not become.
 */

static ngx_int_t
ngx_http_playarr_metrics_path_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    if (v->data == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


/*
 * A worker takes its slot of the requests in flight when it starts (and
 * frees it when it exits), and makes its two caches.
 */

ngx_int_t
ngx_http_playarr_metrics_record_init_process(ngx_cycle_t *cycle,
    ngx_http_playarr_metrics_main_conf_t *pmcf)
{
    size_t  size;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    ngx_http_playarr_metrics_own_slot =
                  ngx_http_playarr_metrics_slot_claim(pmcf->store, ngx_worker,
                                                      cycle->log);

    size = NGX_HTTP_PLAYARR_METRICS_RECENT_SETS
           * NGX_HTTP_PLAYARR_METRICS_RECENT_WAYS
           * sizeof(ngx_http_playarr_metrics_recent_t);

    /* an entry is a cache line */

    pmcf->recent = ngx_pmemalign(cycle->pool, size, NGX_CPU_CACHE_LINE);
    if (pmcf->recent == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(pmcf->recent, size);

    size = (1 << NGX_HTTP_PLAYARR_METRICS_PATHS_BITS)
           * NGX_HTTP_PLAYARR_METRICS_PATHS_WAYS
           * sizeof(ngx_http_playarr_metrics_path_t);

    pmcf->paths = ngx_pmemalign(cycle->pool, size, NGX_CPU_CACHE_LINE);
    if (pmcf->paths == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(pmcf->paths, size);

    return NGX_OK;
}


/*
 * The path kept in the post-read phase; else r->uri: a request finalized
 * before it, or no zone (the module idle, $playarr_metrics_endpoint in a
 * log format).
 */

static ngx_inline void
ngx_http_playarr_metrics_kept_path(ngx_http_request_t *r,
    ngx_http_playarr_metrics_main_conf_t *pmcf, ngx_str_t *path)
{
    ngx_http_variable_value_t  *v;

    if (pmcf->path != NGX_ERROR) {
        v = &r->variables[pmcf->path];

        if (v->data) {
            path->data = v->data;
            path->len = v->len;
            return;
        }
    }

    *path = r->uri;
}


static ngx_inline void
ngx_http_playarr_metrics_match(ngx_http_request_t *r,
    ngx_http_variable_value_t *v)
{
    u_char                                *uri;
    size_t                                 len;
    ngx_str_t                             *t, path;
    ngx_http_playarr_metrics_route_t      *route;
    ngx_http_playarr_metrics_srv_conf_t   *pscf;
    ngx_http_playarr_metrics_main_conf_t  *pmcf;

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_playarr_metrics_module);
    pscf = ngx_http_get_module_srv_conf(r, ngx_http_playarr_metrics_module);

    ngx_http_playarr_metrics_kept_path(r, pmcf, &path);

    uri = path.data;
    len = path.len;
    route = NULL;

    if (pscf->routes) {
        route = ngx_http_playarr_metrics_routes_find(pscf->routes, uri, len);
    }

    if (route == NULL) {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "playarr_metrics no route for \"%*s\": "
                       NGX_HTTP_PLAYARR_METRICS_UNKNOWN, len, uri);

        t = &ngx_http_playarr_metrics_unknown;

    } else {
        t = &route->template;

        if (route->user) {
            ngx_http_playarr_metrics_keep_route_user(r, uri, len, route->user);
        }
    }

    v->len = t->len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = t->data;
}


static ngx_int_t
ngx_http_playarr_metrics_endpoint_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_playarr_metrics_match(r, v);

    return NGX_OK;
}


/*
 * The seg-th segment of the path (empty ones are skipped, as the match
 * skips them) is kept in the slot of $playarr_metrics_route_username, not
 * yet valid, for its get handler.
 */

static void
ngx_http_playarr_metrics_keep_route_user(ngx_http_request_t *r, u_char *uri,
    size_t len, ngx_uint_t seg)
{
    u_char                                *p, *q;
    ngx_http_variable_value_t             *v;
    ngx_http_playarr_metrics_main_conf_t  *pmcf;

    if (ngx_http_playarr_metrics_routes_segment(uri, len, seg, &p, &q)
        != NGX_OK)
    {
        return;
    }

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_playarr_metrics_module);

    v = &r->variables[pmcf->route_user];

    if (!v->valid) {
        v->data = p;
        v->len = q - p;
    }
}


/*
 * $playarr_metrics_route_username: the matched template's ":username"
 * segment, else the "username" query argument (decoded as Express does),
 * else empty; at most a label value long.
 */

static ngx_int_t
ngx_http_playarr_metrics_route_user_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                                *p, *q, *dst;
    ngx_str_t                              ep, arg;
    ngx_http_playarr_metrics_main_conf_t  *pmcf;

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_playarr_metrics_module);

    if (pmcf->endpoint == NGX_ERROR) {
        v->not_found = 1;
        return NGX_OK;
    }

    /* the match fills v->data when the template names the user */

    ngx_http_playarr_metrics_endpoint(r, pmcf, &ep);

    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    if (v->data && v->len) {
        v->len = ngx_min(v->len, NGX_HTTP_PLAYARR_METRICS_VALUE_MAX);
        return NGX_OK;
    }

    v->len = 0;
    v->data = (u_char *) "";

    /*
     * The query names a user only on a route of the app: on any other
     * path (a static file, a scan) a client would pick the label freely
     */

    if (r->args.len == 0 || ep.data == ngx_http_playarr_metrics_unknown.data
        || ngx_http_arg(r, (u_char *) "username", 8, &arg) != NGX_OK
        || arg.len == 0)
    {
        return NGX_OK;
    }

    dst = ngx_pnalloc(r->pool, arg.len);
    if (dst == NULL) {
        return NGX_ERROR;
    }

    /* "+" is a space, then %XX decoded, as Express's qs has it */

    for (p = arg.data, q = dst; p < arg.data + arg.len; p++) {
        *q++ = (*p == '+') ? ' ' : *p;
    }

    p = dst;
    q = dst;

    ngx_unescape_uri(&q, &p, arg.len, 0);

    v->data = dst;
    v->len = ngx_min((size_t) (q - dst), NGX_HTTP_PLAYARR_METRICS_VALUE_MAX);

    return NGX_OK;
}


static ngx_inline void
ngx_http_playarr_metrics_endpoint(ngx_http_request_t *r,
    ngx_http_playarr_metrics_main_conf_t *pmcf, ngx_str_t *ep)
{
    ngx_http_variable_value_t  *v;

    v = &r->variables[pmcf->endpoint];

    if (!v->valid) {
        ngx_http_playarr_metrics_match(r, v);
    }

    ep->len = v->len;
    ep->data = v->data;
}


static ngx_int_t
ngx_http_playarr_metrics_log_handler(ngx_http_request_t *r)
{
    ngx_http_playarr_metrics_record_t       rec;
    ngx_http_playarr_metrics_loc_conf_t    *plcf;
    ngx_http_playarr_metrics_main_conf_t   *pmcf;
    ngx_http_playarr_metrics_jwt_claims_t   tmp;

    /*
     * No longer in flight, if the post-read phase counted it; not in the
     * log phase of a subrequest (log_subrequest), which shares the main
     * request's r->variables, and so its mark.
     */

    if (r != r->main) {
        return NGX_OK;
    }

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_playarr_metrics_module);

    if (r->variables[pmcf->path].data && ngx_http_playarr_metrics_own_slot) {
        (void) ngx_atomic_fetch_add(&ngx_http_playarr_metrics_own_slot->count,
                                    (ngx_atomic_int_t) -1);
    }

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_playarr_metrics_module);

    if (!plcf->enable || plcf->handler) {
        return NGX_OK;
    }

    rec.status = ngx_http_playarr_metrics_status(r);

    if (ngx_http_playarr_metrics_find(r, plcf, pmcf, &rec, &tmp) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_playarr_metrics_count(r, plcf, &rec);
}


/* the request counted: into the series of its recent entry, if any */

static ngx_http_playarr_metrics_inline ngx_int_t
ngx_http_playarr_metrics_count(ngx_http_request_t *r,
    ngx_http_playarr_metrics_loc_conf_t *plcf,
    ngx_http_playarr_metrics_record_t *rec)
{
    ngx_msec_int_t   ms;
    ngx_time_t      *tp;

    tp = ngx_timeofday();

    ms = (ngx_msec_int_t)
             ((tp->sec - r->start_sec) * 1000 + (tp->msec - r->start_msec));
    ms = ngx_max(ms, 0);

    if (rec->requests == NULL) {
        return ngx_http_playarr_metrics_count_keys(r, plcf, rec, ms);
    }

    /* not to wait for the two cache lines one after the other */
    ngx_http_playarr_metrics_prefetch_line(rec->requests);

    if (rec->duration) {
        ngx_http_playarr_metrics_observe(rec->duration, (double) ms / 1000);
    }

    ngx_http_playarr_metrics_add(rec->requests, 1);

    if (rec->status == NGX_HTTP_UNAUTHORIZED || plcf->error_type) {
        return ngx_http_playarr_metrics_count_keys(r, plcf, rec, ms);
    }

    return NGX_OK;
}


/*
 * The series of a request that is not a recent one (or the other
 * families of a 401 or of an error type) are found by their keys.
 */

static ngx_int_t
ngx_http_playarr_metrics_count_keys(ngx_http_request_t *r,
    ngx_http_playarr_metrics_loc_conf_t *plcf,
    ngx_http_playarr_metrics_record_t *rec, ngx_msec_int_t ms)
{
    u_char                                  *p, *key, *user;
    size_t                                   ulen, elen, n;
    uint32_t                                 status;
    ngx_str_t                                s, *ep;
    ngx_http_playarr_metrics_store_t        *store;
    ngx_http_playarr_metrics_series_t       *series, *duration;
    ngx_http_playarr_metrics_bounds_t       *bounds;
    ngx_http_playarr_metrics_main_conf_t    *pmcf;
    ngx_http_playarr_metrics_family_conf_t  *fc;
    u_char                      buf[NGX_HTTP_PLAYARR_METRICS_KEY_MAX];

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_playarr_metrics_module);

    store = pmcf->store;
    fc = store->families.elts;
    ep = &rec->endpoint;
    status = rec->status;

    if (rec->requests == NULL) {
        ngx_log_debug5(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "playarr_metrics \"%V\": endpoint \"%V\", status %uD, "
                       "user \"%V\" (claimed \"%V\"), not a recent request",
                       &r->uri, ep, status, &rec->user, &rec->claimed);
    }

    /*
     * Every key ends with the user: it is written once, at the end of
     * buf, and the values before it in each key are written in front of it.
     */

    user = buf + sizeof(buf) - NGX_HTTP_PLAYARR_METRICS_VALUE_MAX;
    ulen = 0;

    if (rec->user.len) {
        ulen = ngx_http_playarr_metrics_value_copy(user, rec->user.data,
                                                   rec->user.len);
    }

    if (ulen == 0) {
        ulen = sizeof(NGX_HTTP_PLAYARR_METRICS_ANONYMOUS) - 1;
        ngx_memcpy(user, NGX_HTTP_PLAYARR_METRICS_ANONYMOUS, ulen);
    }

    /* key: endpoint, user */

    key = user - 1 - ep->len;
    p = ngx_cpymem(key, ep->data, ep->len);
    *p = NGX_HTTP_PLAYARR_METRICS_SEP;
    n = user + ulen - key;

    /*
     * A 101 has no duration: the time a websocket stayed open is not that
     * of an answer.  Its entry in the cache (the status is in the tag)
     * holds no duration series.
     */

    duration = NULL;

    if (rec->requests == NULL && status != NGX_HTTP_SWITCHING_PROTOCOLS) {
        bounds = NULL;

        if (plcf->bounds_id != NGX_CONF_UNSET_UINT) {
            bounds = store->bounds[plcf->bounds_id];
        }

        duration = ngx_http_playarr_metrics_series(store,
                                  &fc[NGX_HTTP_PLAYARR_METRICS_FAMILY_DURATION],
                                  bounds, key, n);
        ngx_http_playarr_metrics_observe(duration, (double) ms / 1000);
    }

    if (status == NGX_HTTP_UNAUTHORIZED) {
        ngx_http_playarr_metrics_auth_failed(store, key, n, ep, &rec->user,
                                             &rec->claimed, buf);
    }

    /* key: endpoint, status, user */

    if (rec->requests == NULL) {
        key -= 4;
        p = ngx_cpymem(key, ep->data, ep->len);
        p[0] = NGX_HTTP_PLAYARR_METRICS_SEP;
        p[1] = (u_char) ('0' + status / 100);
        p[2] = (u_char) ('0' + status / 10 % 10);
        p[3] = (u_char) ('0' + status % 10);
        p[4] = NGX_HTTP_PLAYARR_METRICS_SEP;

        series = ngx_http_playarr_metrics_series(store,
                                  &fc[NGX_HTTP_PLAYARR_METRICS_FAMILY_REQUESTS],
                                  NULL, key, n + 4);
        ngx_http_playarr_metrics_add(series, 1);

        if (duration
            != fc[NGX_HTTP_PLAYARR_METRICS_FAMILY_DURATION].shared->overflow
            && series
               != fc[NGX_HTTP_PLAYARR_METRICS_FAMILY_REQUESTS].shared->overflow)
        {
            if (rec->set) {
                ngx_http_playarr_metrics_remember(rec, duration, series);
            }

            if (rec->paths) {
                ngx_http_playarr_metrics_paths_keep(rec, duration, series);
            }
        }
    }

    /* key: endpoint, error type, user; the error type first in buf */

    if (plcf->error_type) {
        if (ngx_http_playarr_metrics_eval(r, plcf->error_type, &s)
            == NGX_ERROR)
        {
            return NGX_ERROR;
        }

        if (s.len) {
            elen = ngx_http_playarr_metrics_value_copy(buf, s.data, s.len);

            key = user - 2 - elen - ep->len;
            p = ngx_cpymem(key, ep->data, ep->len);
            *p++ = NGX_HTTP_PLAYARR_METRICS_SEP;
            p = ngx_cpymem(p, buf, elen);
            *p = NGX_HTTP_PLAYARR_METRICS_SEP;

            series = ngx_http_playarr_metrics_series(store,
                                  &fc[NGX_HTTP_PLAYARR_METRICS_FAMILY_ERRORS],
                                  NULL, key, user + ulen - key);
            ngx_http_playarr_metrics_add(series, 1);
        }
    }

    return NGX_OK;
}

/*
 * A 401: counted for the user the request claimed, which is not the one
 * of its other series when that is anonymous; key, n: the key of those.
 * The claimed user's key is written at the start of buf.
 */

static void
ngx_http_playarr_metrics_auth_failed(ngx_http_playarr_metrics_store_t *store,
    u_char *key, size_t n, ngx_str_t *ep, ngx_str_t *user,
    ngx_str_t *claimed, u_char *buf)
{
    u_char                                  *p;
    size_t                                   len;
    ngx_http_playarr_metrics_series_t       *series;
    ngx_http_playarr_metrics_family_conf_t  *fc;

    fc = store->families.elts;

    if (claimed->len && claimed->data != user->data) {
        p = ngx_cpymem(buf, ep->data, ep->len);
        *p++ = NGX_HTTP_PLAYARR_METRICS_SEP;

        len = ngx_http_playarr_metrics_value_copy(p, claimed->data,
                                                  claimed->len);
        if (len) {
            key = buf;
            n = p + len - buf;
        }
    }

    series = ngx_http_playarr_metrics_series(store,
                              &fc[NGX_HTTP_PLAYARR_METRICS_FAMILY_AUTH_FAILED],
                              NULL, key, n);
    ngx_http_playarr_metrics_add(series, 1);
}


/*
 * The series of a request that was not a recent one, kept at the head of
 * its set, the oldest entry dropped.
 */

static void
ngx_http_playarr_metrics_remember(ngx_http_playarr_metrics_record_t *rec,
    ngx_http_playarr_metrics_series_t *duration,
    ngx_http_playarr_metrics_series_t *requests)
{
    ngx_uint_t                          i;
    ngx_http_playarr_metrics_recent_t  *set;

    set = rec->set;

    for (i = NGX_HTTP_PLAYARR_METRICS_RECENT_WAYS - 1; i; i--) {
        set[i] = set[i - 1];
    }

    set[0].endpoint = rec->endpoint.data;
    set[0].tag = rec->tag;
    set[0].duration = duration;
    set[0].requests = requests;
    ngx_memcpy(set[0].user, rec->user.data, rec->user.len);
}


/*
 * The endpoint, user and series of a request, for rec->status: from the
 * paths cache, else from the recent requests cache.  With the route user,
 * the user is looked up only once the paths cache missed, as it needs the
 * route; the query string then stands for it there.
 */

static ngx_http_playarr_metrics_inline ngx_int_t
ngx_http_playarr_metrics_find(ngx_http_request_t *r,
    ngx_http_playarr_metrics_loc_conf_t *plcf,
    ngx_http_playarr_metrics_main_conf_t *pmcf,
    ngx_http_playarr_metrics_record_t *rec,
    ngx_http_playarr_metrics_jwt_claims_t *tmp)
{
    ngx_uint_t                          route_user;
    ngx_http_playarr_metrics_path_t    *seen;
    ngx_http_playarr_metrics_recent_t  *hit;

    rec->paths = NULL;
    rec->set = NULL;
    rec->duration = NULL;
    rec->requests = NULL;

    route_user = (plcf->username == NULL && pmcf->jwt_secret.len == 0);

    if (route_user) {

        /*
         * The user is the path's, or the query's "username" argument's
         * when the route does not name it: the path and that argument as
         * sent stand for it, the rest of the query (a password) is not
         * kept.  Unless the variable was read already, when the query
         * may have been another.
         */

        if (!r->variables[pmcf->route_user].valid) {
            rec->given.len = 0;
            rec->given.data = (u_char *) "";

            if (r->args.len
                && ngx_http_arg(r, (u_char *) "username", 8, &rec->given)
                   != NGX_OK)
            {
                rec->given.len = 0;
            }

            ngx_http_playarr_metrics_paths_set(r, plcf, pmcf, rec, 1);
        }

    } else {
        if (ngx_http_playarr_metrics_user(r, plcf, pmcf, rec, tmp) != NGX_OK) {
            return NGX_ERROR;
        }

        rec->given = rec->user;
        ngx_http_playarr_metrics_paths_set(r, plcf, pmcf, rec, 0);
    }

    if (rec->paths) {
        seen = ngx_http_playarr_metrics_paths_find(rec);

        if (seen) {
            rec->duration = seen->duration;
            rec->requests = seen->requests;
            return NGX_OK;
        }
    }

    ngx_http_playarr_metrics_endpoint(r, pmcf, &rec->endpoint);

    if (route_user
        && ngx_http_playarr_metrics_user(r, plcf, pmcf, rec, tmp) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (rec->user.len > NGX_HTTP_PLAYARR_METRICS_RECENT_USER
        || pmcf->recent == NULL)
    {
        return NGX_OK;
    }

    ngx_http_playarr_metrics_recent_set(pmcf, rec);

    hit = ngx_http_playarr_metrics_recent_find(rec);

    if (hit) {
        rec->duration = hit->duration;
        rec->requests = hit->requests;

        if (rec->paths) {
            ngx_http_playarr_metrics_paths_keep(rec, hit->duration,
                                                hit->requests);
        }
    }

    return NGX_OK;
}


/*
 * The user, empty for "anonymous": the first non-empty value of
 * playarr_metrics_username, for every family.  Without that directive,
 * the name the request gives, its session's (with a secret file) else its
 * route's: rec->claimed, which labels the authentication failure of a
 * 401; the request and its duration are then anonymous, as in Playarr,
 * which knows a user only once its check passed.
 */

static ngx_http_playarr_metrics_inline ngx_int_t
ngx_http_playarr_metrics_user(ngx_http_request_t *r,
    ngx_http_playarr_metrics_loc_conf_t *plcf,
    ngx_http_playarr_metrics_main_conf_t *pmcf,
    ngx_http_playarr_metrics_record_t *rec,
    ngx_http_playarr_metrics_jwt_claims_t *tmp)
{
    ngx_uint_t                         i, n;
    ngx_http_variable_value_t         *vv;
    ngx_http_playarr_metrics_value_t  *value;

    rec->user.len = 0;
    rec->user.data = (u_char *) "";

    if (plcf->username) {
        value = plcf->username->elts;
        n = plcf->username->nelts;

        for (i = 0; i < n; i++) {

            /* the usual one, a request header, without a call */

            if (value[i].header == NGX_HTTP_PLAYARR_METRICS_FROM_REQUEST) {
                ngx_http_playarr_metrics_header_value(
                                         &r->headers_in.headers.part,
                                         &value[i], &rec->user);

            } else if (ngx_http_playarr_metrics_eval(r, &value[i], &rec->user)
                       != NGX_OK)
            {
                return NGX_ERROR;
            }

            if (rec->user.len) {
                break;
            }
        }

        rec->claimed = rec->user;

        return NGX_OK;
    }

    if (pmcf->jwt_secret.len == 0
        || ngx_http_playarr_metrics_session_user(r, rec, tmp) != NGX_OK)
    {
        vv = ngx_http_get_indexed_variable(r, pmcf->route_user);

        if (vv == NULL || vv->not_found) {
            rec->claimed = rec->user;
            return NGX_OK;
        }

        rec->claimed.len = vv->len;
        rec->claimed.data = vv->data;
    }

    if (rec->status != NGX_HTTP_UNAUTHORIZED) {
        rec->user = rec->claimed;
    }

    return NGX_OK;
}


/*
 * The user of a valid session, as the cache holds it (or tmp), not
 * copied: the log handler uses it before this worker runs anything else.
 */

static ngx_int_t
ngx_http_playarr_metrics_session_user(ngx_http_request_t *r,
    ngx_http_playarr_metrics_record_t *rec,
    ngx_http_playarr_metrics_jwt_claims_t *tmp)
{
    ngx_http_playarr_metrics_jwt_claims_t  *claims;

    if (ngx_http_playarr_metrics_session(r, &claims, tmp)
        != NGX_HTTP_PLAYARR_METRICS_SESSION_VALID)
    {
        return NGX_DECLINED;
    }

    rec->claimed.len = claims->user_len;
    rec->claimed.data = claims->user;

    return NGX_OK;
}


/* the status as the access log has it */

static uint32_t
ngx_http_playarr_metrics_status(ngx_http_request_t *r)
{
    if (r->err_status) {
        return (uint32_t) ngx_min(r->err_status, 999);
    }

    if (r->headers_out.status) {
        return (uint32_t) ngx_min(r->headers_out.status, 999);
    }

    if (r->http_version == NGX_HTTP_VERSION_9) {
        return 9;
    }

    return 0;
}


/*
 * The set of the paths cache where a request would be, and its key there,
 * if it may be kept (see the cache's definition).  Its set is picked by a
 * multiplicative hash of the routes of its server, its path, its status
 * and the value given for its user: the user itself, or (query set) the
 * "username" argument the route user may be read from, which the tag
 * tells apart from a user of the same bytes.
 */

static ngx_http_playarr_metrics_inline void
ngx_http_playarr_metrics_paths_set(ngx_http_request_t *r,
    ngx_http_playarr_metrics_loc_conf_t *plcf,
    ngx_http_playarr_metrics_main_conf_t *pmcf,
    ngx_http_playarr_metrics_record_t *rec, ngx_uint_t query)
{
    uint64_t                              h;
    ngx_http_playarr_metrics_srv_conf_t  *pscf;

    if (rec->status == NGX_HTTP_UNAUTHORIZED || plcf->error_type
        || pmcf->paths == NULL)
    {
        return;
    }

    ngx_http_playarr_metrics_kept_path(r, pmcf, &rec->path);

    if (rec->path.len + rec->given.len > NGX_HTTP_PLAYARR_METRICS_PATH_KEY) {
        return;
    }

    pscf = ngx_http_get_module_srv_conf(r, ngx_http_playarr_metrics_module);

    rec->routes = pscf->routes;
    rec->path_tag = (uint64_t) rec->path.len
                    | (uint64_t) rec->given.len << 16
                    | (uint64_t) rec->status << 32
                    | (uint64_t) query << 48
                    | NGX_HTTP_PLAYARR_METRICS_PATH_USED;

    h = ngx_http_playarr_metrics_ends(
                   ((uint64_t) (uintptr_t) rec->routes ^ rec->path_tag)
                   * NGX_HTTP_PLAYARR_METRICS_K1,
                   rec->path.data, rec->path.len);
    h = ngx_http_playarr_metrics_words(h, rec->given.data, rec->given.len);

    rec->paths = &pmcf->paths[(h >> (64 - NGX_HTTP_PLAYARR_METRICS_PATHS_BITS))
                              * NGX_HTTP_PLAYARR_METRICS_PATHS_WAYS];
    rec->path_way = (h >> 32) & (NGX_HTTP_PLAYARR_METRICS_PATHS_WAYS - 1);
}


/* the entry of rec->paths that holds the request's series, if any */

static ngx_inline ngx_http_playarr_metrics_path_t *
ngx_http_playarr_metrics_paths_find(ngx_http_playarr_metrics_record_t *rec)
{
    ngx_uint_t                        i;
    ngx_http_playarr_metrics_path_t  *set;

    set = rec->paths;

    for (i = 0; i < NGX_HTTP_PLAYARR_METRICS_PATHS_WAYS; i++) {
        if (set[i].tag == rec->path_tag
            && set[i].routes == rec->routes
            && ngx_http_playarr_metrics_same(set[i].key, rec->path.data,
                                             rec->path.len)
            && ngx_http_playarr_metrics_same(set[i].key + rec->path.len,
                                             rec->given.data,
                                             rec->given.len))
        {
            return &set[i];
        }
    }

    return NULL;
}


/*
 * The series of a request kept in its set of the paths cache: in an
 * empty entry, else in the one its hash picks.
 */

static void
ngx_http_playarr_metrics_paths_keep(ngx_http_playarr_metrics_record_t *rec,
    ngx_http_playarr_metrics_series_t *duration,
    ngx_http_playarr_metrics_series_t *requests)
{
    ngx_uint_t                        i;
    ngx_http_playarr_metrics_path_t  *e;

    for (i = 0; i < NGX_HTTP_PLAYARR_METRICS_PATHS_WAYS; i++) {
        if (rec->paths[i].tag == 0) {
            break;
        }
    }

    e = &rec->paths[(i < NGX_HTTP_PLAYARR_METRICS_PATHS_WAYS) ? i
                                                          : rec->path_way];

    e->routes = rec->routes;
    e->tag = rec->path_tag;
    e->duration = duration;
    e->requests = requests;

    ngx_http_playarr_metrics_copy(e->key, rec->path.data, rec->path.len);
    ngx_http_playarr_metrics_copy(e->key + rec->path.len, rec->given.data,
                                  rec->given.len);
}


/*
 * The set of the recent requests cache where an endpoint, status and user
 * would be, and their tag.  The endpoint is the text of a template, or
 * ngx_http_playarr_metrics_unknown: it lives as long as the
 * configuration, so its address stands for it.  The set is picked by a
 * multiplicative hash of them, the user read a word at a time as
 * _same() reads it: not the zone's keyed hash, as two requests in the
 * same set only cost a lookup in the zone, not a longer chain there.
 */

static ngx_inline void
ngx_http_playarr_metrics_recent_set(ngx_http_playarr_metrics_main_conf_t *pmcf,
    ngx_http_playarr_metrics_record_t *rec)
{
    uint64_t  h;

    rec->tag = (uint64_t) rec->endpoint.len | (uint64_t) rec->status << 32
               | (uint64_t) rec->user.len << 48;

    h = ngx_http_playarr_metrics_words(
                   ((uint64_t) (uintptr_t) rec->endpoint.data ^ rec->tag)
                   * NGX_HTTP_PLAYARR_METRICS_K1,
                   rec->user.data, rec->user.len);

    rec->set = &pmcf->recent[(h >> (64 - NGX_HTTP_PLAYARR_METRICS_RECENT_BITS))
                             * NGX_HTTP_PLAYARR_METRICS_RECENT_WAYS];
}


/*
 * A multiplicative hash going on from h over the first, the middle and
 * the last 8 of the len bytes at p (all of them below 16): the paths of
 * one route usually differ in an id, at the end or in the middle.
 */

static ngx_inline uint64_t
ngx_http_playarr_metrics_ends(uint64_t h, u_char *p, size_t len)
{
    uint64_t  w;

    if (len < 16) {
        return ngx_http_playarr_metrics_words(h, p, len);
    }

    ngx_memcpy(&w, p, 8);
    h = (h ^ w) * NGX_HTTP_PLAYARR_METRICS_K2;

    ngx_memcpy(&w, p + len / 2 - 4, 8);
    h = (h ^ w) * NGX_HTTP_PLAYARR_METRICS_K2;

    ngx_memcpy(&w, p + len - 8, 8);

    return (h ^ w) * NGX_HTTP_PLAYARR_METRICS_K2;
}


/*
 * A multiplicative hash going on from h over the len bytes at p, read a
 * word at a time as _same() reads them, never past p + len.
 */

static ngx_inline uint64_t
ngx_http_playarr_metrics_words(uint64_t h, u_char *p, size_t len)
{
    uint32_t  lo, hi;
    uint64_t  w;

    if (len >= 8) {
        while (len > 8) {
            ngx_memcpy(&w, p, 8);
            h = (h ^ w) * NGX_HTTP_PLAYARR_METRICS_K2;
            p += 8;
            len -= 8;
        }

        ngx_memcpy(&w, p + len - 8, 8);

    } else if (len >= 4) {
        ngx_memcpy(&lo, p, 4);
        ngx_memcpy(&hi, p + len - 4, 4);
        w = (uint64_t) hi << 32 | lo;

    } else if (len) {
        w = p[0] | (uint64_t) p[len / 2] << 8 | (uint64_t) p[len - 1] << 16;

    } else {
        w = 0;
    }

    return (h ^ w) * NGX_HTTP_PLAYARR_METRICS_K2;
}


/* the entry of rec->set that holds the request's series, if any */

static ngx_inline ngx_http_playarr_metrics_recent_t *
ngx_http_playarr_metrics_recent_find(ngx_http_playarr_metrics_record_t *rec)
{
    ngx_uint_t                          i;
    ngx_http_playarr_metrics_recent_t  *set;

    set = rec->set;

    for (i = 0; i < NGX_HTTP_PLAYARR_METRICS_RECENT_WAYS; i++) {
        if (set[i].endpoint == rec->endpoint.data
            && set[i].tag == rec->tag
            && ngx_http_playarr_metrics_same(set[i].user, rec->user.data,
                                             rec->user.len))
        {
            return &set[i];
        }
    }

    return NULL;
}


/*
 * The len bytes at a and at b are the same: compared a word at a time,
 * the last word overlapping the one before it, never past a + len nor
 * b + len.
 */

static ngx_inline ngx_uint_t
ngx_http_playarr_metrics_same(u_char *a, u_char *b, size_t len)
{
    uint32_t  a4, b4;
    uint64_t  a8, b8;
#if (NGX_HTTP_PLAYARR_METRICS_SSE2)
    __m128i   a16, b16;

    if (len >= 16) {
        while (len > 16) {
            a16 = _mm_loadu_si128((__m128i *) a);
            b16 = _mm_loadu_si128((__m128i *) b);

            if (_mm_movemask_epi8(_mm_cmpeq_epi8(a16, b16)) != 0xffff) {
                return 0;
            }

            a += 16;
            b += 16;
            len -= 16;
        }

        a16 = _mm_loadu_si128((__m128i *) (a + len - 16));
        b16 = _mm_loadu_si128((__m128i *) (b + len - 16));

        return _mm_movemask_epi8(_mm_cmpeq_epi8(a16, b16)) == 0xffff;
    }
#endif

    if (len >= 8) {
        while (len > 8) {
            ngx_memcpy(&a8, a, 8);
            ngx_memcpy(&b8, b, 8);

            if (a8 != b8) {
                return 0;
            }

            a += 8;
            b += 8;
            len -= 8;
        }

        ngx_memcpy(&a8, a + len - 8, 8);
        ngx_memcpy(&b8, b + len - 8, 8);

        return a8 == b8;
    }

    if (len >= 4) {
        ngx_memcpy(&a4, a, 4);
        ngx_memcpy(&b4, b, 4);

        if (a4 != b4) {
            return 0;
        }

        ngx_memcpy(&a4, a + len - 4, 4);
        ngx_memcpy(&b4, b + len - 4, 4);

        return a4 == b4;
    }

    while (len) {
        len--;

        if (a[len] != b[len]) {
            return 0;
        }
    }

    return 1;
}


/*
 * The len bytes at src copied to dst, which has room for that many: 8 at
 * a time, the last 8 ending where src does, never read nor written past
 * src + len nor dst + len.
 */

static ngx_inline void
ngx_http_playarr_metrics_copy(u_char *dst, u_char *src, size_t len)
{
    size_t  i;

    if (len < 8) {
        while (len--) {
            dst[len] = src[len];
        }

        return;
    }

    for (i = 0; i + 8 < len; i += 8) {
        ngx_memcpy(dst + i, src + i, 8);
    }

    ngx_memcpy(dst + len - 8, src + len - 8, 8);
}


/*
 * A value of playarr_metrics_username or _error_type, empty if none; a
 * header, request or upstream, found without a call.
 */

static ngx_int_t
ngx_http_playarr_metrics_eval(ngx_http_request_t *r,
    ngx_http_playarr_metrics_value_t *value, ngx_str_t *s)
{
    ngx_http_variable_value_t  *vv;

    if (value->value) {
        return ngx_http_complex_value(r, value->value, s);
    }

    if (value->header == NGX_HTTP_PLAYARR_METRICS_FROM_REQUEST) {
        ngx_http_playarr_metrics_header_value(&r->headers_in.headers.part,
                                              value, s);
        return NGX_OK;
    }

    if (value->header == NGX_HTTP_PLAYARR_METRICS_FROM_UPSTREAM) {
        s->len = 0;

        if (r->upstream) {
            ngx_http_playarr_metrics_header_value(
                                     &r->upstream->headers_in.headers.part,
                                     value, s);
        }

        return NGX_OK;
    }

    vv = ngx_http_get_indexed_variable(r, value->index);

    if (vv == NULL || vv->not_found) {
        s->len = 0;

    } else {
        s->len = vv->len;
        s->data = vv->data;
    }

    return NGX_OK;
}


/*
 * The value of a header found by the hash nginx computed when it parsed
 * it, and its lowercase name; s->len is 0 if there is none.
 */

static ngx_http_playarr_metrics_inline void
ngx_http_playarr_metrics_header_value(ngx_list_part_t *part,
    ngx_http_playarr_metrics_value_t *value, ngx_str_t *s)
{
    ngx_uint_t        i;
    ngx_table_elt_t  *h;

    s->len = 0;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash == value->hash
            && h[i].key.len == value->name.len
            && ngx_http_playarr_metrics_same(h[i].lowcase_key,
                                             value->name.data,
                                             value->name.len))
        {
            *s = h[i].value;
            return;
        }
    }
}




ngx_int_t
ngx_http_playarr_metrics_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var;

    var = ngx_http_add_variable(cf, &ngx_http_playarr_metrics_endpoint_name,
                                0);
    if (var == NULL) {
        return NGX_ERROR;
    }

    var->get_handler = ngx_http_playarr_metrics_endpoint_variable;

    var = ngx_http_add_variable(cf,
                                &ngx_http_playarr_metrics_route_user_name, 0);
    if (var == NULL) {
        return NGX_ERROR;
    }

    var->get_handler = ngx_http_playarr_metrics_route_user_variable;

    var = ngx_http_add_variable(cf, &ngx_http_playarr_metrics_path_name, 0);
    if (var == NULL) {
        return NGX_ERROR;
    }

    var->get_handler = ngx_http_playarr_metrics_path_variable;

    return ngx_http_playarr_metrics_session_add_variables(cf);
}
