
/*
 * Copyright (C) Playarr metrics module authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ngx_http_playarr_metrics_module.h>

#include <math.h>


/* what ngx_http_playarr_metrics_set_name() takes */
#define NGX_HTTP_PLAYARR_METRICS_NAME_COOKIE  0
#define NGX_HTTP_PLAYARR_METRICS_NAME_HEADER  1


typedef struct {
    const char                    *name;
    const char                    *help;
    ngx_uint_t                     type;
    const char                    *labels[3];
} ngx_http_playarr_metrics_builtin_t;


typedef struct {
    ngx_array_t                    headers;       /* ngx_str_t */
} ngx_http_playarr_metrics_ctx_t;


/*
 * The requests a worker recorded lately: the series of an endpoint, a
 * status and a user (as the request gave it), found again without the
 * keys being built, hashed and compared.  Series are never freed nor
 * moved while their zone lives, and the cache lives with the main conf,
 * so with the zone and families it was filled from; an overflow series
 * is never kept, so that every refused request still counts as one.  A
 * set holds 4 entries, the newest first: 2048 entries of 64 bytes, each
 * in a cache line of its own, 128k a worker, allocated when it is first
 * needed.  A user longer than 32 bytes is not kept.
 */

#define NGX_HTTP_PLAYARR_METRICS_RECENT_SETS  512
#define NGX_HTTP_PLAYARR_METRICS_RECENT_WAYS  4
#define NGX_HTTP_PLAYARR_METRICS_RECENT_USER  32

/* a hint that memory will be read soon: a load that never faults */
#if (__GNUC__ || __clang__)
#define ngx_http_playarr_metrics_prefetch_line(p)  __builtin_prefetch(p)
#else
#define ngx_http_playarr_metrics_prefetch_line(p)
#endif

#if (NGX_THREADS)

/* a save in a thread of nginx's pool; done is set by the thread, last */
typedef struct {
    ngx_http_playarr_metrics_store_t   *store;
    ngx_str_t                          *path;
    ngx_uint_t                          handoff;
    volatile ngx_uint_t                 done;
    ngx_http_playarr_metrics_save_t     sv;
} ngx_http_playarr_metrics_save_ctx_t;

#endif

struct ngx_http_playarr_metrics_recent_s {
    u_char                             *endpoint;      /* a template */
    uint64_t                            tag;           /* lengths, status */
    ngx_http_playarr_metrics_series_t  *duration;      /* NULL for 101 */
    ngx_http_playarr_metrics_series_t  *requests;
    u_char            user[NGX_HTTP_PLAYARR_METRICS_RECENT_USER];
};


static ngx_int_t ngx_http_playarr_metrics_header_filter(
    ngx_http_request_t *r);
static void ngx_http_playarr_metrics_apply_headers(ngx_http_request_t *r,
    ngx_http_playarr_metrics_main_conf_t *pmcf);
static ngx_int_t ngx_http_playarr_metrics_post_read_handler(
    ngx_http_request_t *r);
static void ngx_http_playarr_metrics_in_flight_done(void *data);
static ngx_int_t ngx_http_playarr_metrics_in_flight_init(ngx_cycle_t *cycle,
    ngx_http_playarr_metrics_main_conf_t *pmcf);
static void ngx_http_playarr_metrics_exit_process(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_playarr_metrics_log_handler(ngx_http_request_t *r);
static void ngx_http_playarr_metrics_auth_failed(
    ngx_http_playarr_metrics_store_t *store, u_char *key, size_t n,
    ngx_str_t *ep, ngx_str_t *user, ngx_str_t *claimed, u_char *buf);
static void ngx_http_playarr_metrics_prefetch(ngx_http_request_t *r,
    ngx_http_playarr_metrics_loc_conf_t *plcf);
static ngx_int_t ngx_http_playarr_metrics_user(ngx_http_request_t *r,
    ngx_http_playarr_metrics_loc_conf_t *plcf, uint32_t status,
    ngx_str_t *user, ngx_str_t *claimed,
    ngx_http_playarr_metrics_jwt_claims_t *tmp);
static uint32_t ngx_http_playarr_metrics_status(ngx_http_request_t *r);
static ngx_http_playarr_metrics_recent_t *ngx_http_playarr_metrics_recent(
    ngx_http_playarr_metrics_main_conf_t *pmcf, ngx_str_t *ep,
    uint32_t status, ngx_str_t *user, uint64_t *tag);
static void ngx_http_playarr_metrics_endpoint(ngx_http_request_t *r,
    ngx_http_playarr_metrics_main_conf_t *pmcf, ngx_str_t *ep);
static void ngx_http_playarr_metrics_match(ngx_http_request_t *r,
    ngx_http_variable_value_t *v);
static ngx_int_t ngx_http_playarr_metrics_eval(ngx_http_request_t *r,
    ngx_http_playarr_metrics_value_t *value, ngx_str_t *s);
static ngx_int_t ngx_http_playarr_metrics_endpoint_variable(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);
static void ngx_http_playarr_metrics_route_segment(ngx_http_request_t *r,
    ngx_str_t *uri, ngx_uint_t seg);
static ngx_int_t ngx_http_playarr_metrics_route_user_variable(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);

static ngx_int_t ngx_http_playarr_metrics_add_variables(ngx_conf_t *cf);
static void *ngx_http_playarr_metrics_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_playarr_metrics_init_main_conf(ngx_conf_t *cf,
    void *conf);
static void *ngx_http_playarr_metrics_create_srv_conf(ngx_conf_t *cf);
static char *ngx_http_playarr_metrics_merge_srv_conf(ngx_conf_t *cf,
    void *parent, void *child);
static void *ngx_http_playarr_metrics_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_playarr_metrics_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static ngx_int_t ngx_http_playarr_metrics_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_playarr_metrics_add_builtins(ngx_conf_t *cf,
    ngx_http_playarr_metrics_main_conf_t *pmcf);

static ngx_int_t ngx_http_playarr_metrics_layout_used(ngx_conf_t *cf,
    ngx_http_playarr_metrics_main_conf_t *pmcf, ngx_uint_t layout);
static void ngx_http_playarr_metrics_note(ngx_conf_t *cf,
    ngx_command_t *cmd);
static char *ngx_http_playarr_metrics_zone(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_playarr_metrics_slot(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_playarr_metrics_route(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_playarr_metrics_values(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_playarr_metrics_value(ngx_conf_t *cf,
    ngx_str_t *arg, ngx_http_playarr_metrics_value_t *value);
static ngx_int_t ngx_http_playarr_metrics_header_value(ngx_conf_t *cf,
    ngx_str_t *name, ngx_http_playarr_metrics_value_t *value);
static char *ngx_http_playarr_metrics_buckets(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_playarr_metrics_token_file(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_playarr_metrics_state_file(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_playarr_metrics_jwt_secret_file(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_playarr_metrics_jwt_cookie(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_playarr_metrics_set_auth(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_playarr_metrics_set_name(ngx_conf_t *cf,
    ngx_command_t *cmd, ngx_str_t *name, ngx_uint_t kind);
static ngx_int_t ngx_http_playarr_metrics_init_process(ngx_cycle_t *cycle);
static void ngx_http_playarr_metrics_save_handler(ngx_event_t *ev);
static void ngx_http_playarr_metrics_save_check(
    ngx_http_playarr_metrics_main_conf_t *pmcf, ngx_log_t *log);
static ngx_int_t ngx_http_playarr_metrics_save_start(
    ngx_http_playarr_metrics_main_conf_t *pmcf, ngx_uint_t handoff,
    ngx_log_t *log);
#if (NGX_THREADS)
static ngx_uint_t ngx_http_playarr_metrics_notify(ngx_conf_t *cf);
static void ngx_http_playarr_metrics_save_thread(void *data, ngx_log_t *log);
static void ngx_http_playarr_metrics_save_done(ngx_event_t *ev);
static void ngx_http_playarr_metrics_save_report(
    ngx_http_playarr_metrics_main_conf_t *pmcf, ngx_log_t *log);
static void ngx_http_playarr_metrics_save_exit(ngx_cycle_t *cycle);
#endif
static void ngx_http_playarr_metrics_exit_master(ngx_cycle_t *cycle);
static char *ngx_http_playarr_metrics_handler(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_playarr_metrics_upstream_header(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_playarr_metrics_schema(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_http_playarr_metrics_family_conf_t *
    ngx_http_playarr_metrics_schema_family(
    ngx_http_playarr_metrics_main_conf_t *pmcf, const char *name);


static ngx_command_t  ngx_http_playarr_metrics_commands[] = {

    { ngx_string("playarr_metrics_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_playarr_metrics_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("playarr_metrics"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_http_playarr_metrics_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_playarr_metrics_loc_conf_t, enable),
      NULL },

    { ngx_string("playarr_metrics_route"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_TAKE1,
      ngx_http_playarr_metrics_route,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("playarr_metrics_username"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_playarr_metrics_values,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_playarr_metrics_loc_conf_t, username),
      NULL },

    { ngx_string("playarr_metrics_error_type"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_playarr_metrics_values,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_playarr_metrics_loc_conf_t, error_type),
      NULL },

    { ngx_string("playarr_metrics_buckets"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_playarr_metrics_buckets,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("playarr_metrics_token_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_playarr_metrics_token_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("playarr_metrics_state_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_playarr_metrics_state_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("playarr_metrics_schema"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_playarr_metrics_schema,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("playarr_metrics_export"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS|NGX_CONF_TAKE1,
      ngx_http_playarr_metrics_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_HTTP_PLAYARR_METRICS_EXPORT,
      NULL },

    { ngx_string("playarr_metrics_merge"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_playarr_metrics_set_merge,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("playarr_metrics_push"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_playarr_metrics_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_HTTP_PLAYARR_METRICS_PUSH,
      NULL },

    { ngx_string("playarr_metrics_token_admin"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_playarr_metrics_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_HTTP_PLAYARR_METRICS_ADMIN,
      NULL },

    { ngx_string("playarr_metrics_upstream_header"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_playarr_metrics_upstream_header,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_playarr_metrics_loc_conf_t, upstream_header),
      NULL },

    { ngx_string("playarr_metrics_auth"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE123,
      ngx_http_playarr_metrics_set_auth,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("playarr_metrics_jwt_secret_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_playarr_metrics_jwt_secret_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("playarr_metrics_jwt_cookie"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_TAKE1,
      ngx_http_playarr_metrics_jwt_cookie,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_http_playarr_metrics_srv_conf_t, jwt_cookie),
      NULL },

    { ngx_string("playarr_metrics_max_series"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_playarr_metrics_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_playarr_metrics_main_conf_t, max_series),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_playarr_metrics_module_ctx = {
    ngx_http_playarr_metrics_add_variables,  /* preconfiguration */
    ngx_http_playarr_metrics_init,           /* postconfiguration */

    ngx_http_playarr_metrics_create_main_conf, /* create main configuration */
    ngx_http_playarr_metrics_init_main_conf, /* init main configuration */

    ngx_http_playarr_metrics_create_srv_conf, /* create server configuration */
    ngx_http_playarr_metrics_merge_srv_conf, /* merge server configuration */

    ngx_http_playarr_metrics_create_loc_conf, /* create location conf */
    ngx_http_playarr_metrics_merge_loc_conf  /* merge location configuration */
};


ngx_module_t  ngx_http_playarr_metrics_module = {
    NGX_MODULE_V1,
    &ngx_http_playarr_metrics_module_ctx,    /* module context */
    ngx_http_playarr_metrics_commands,       /* module directives */
    NGX_HTTP_MODULE,                         /* module type */
    NULL,                                    /* init master */
    NULL,                                    /* init module */
    ngx_http_playarr_metrics_init_process,   /* init process */
    NULL,                                    /* init thread */
    NULL,                                    /* exit thread */
    ngx_http_playarr_metrics_exit_process,   /* exit process */
    ngx_http_playarr_metrics_exit_master,    /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_playarr_metrics_builtin_t  ngx_http_playarr_metrics_builtins[]
    = {

    { "playarr_http_requests_total",
      "Total number of HTTP requests per endpoint",
      NGX_HTTP_PLAYARR_METRICS_COUNTER,
      { "endpoint", "status_code", "username" } },

    { "playarr_http_request_duration_seconds",
      "HTTP request duration in seconds",
      NGX_HTTP_PLAYARR_METRICS_HISTOGRAM,
      { "endpoint", "username", NULL } },

    { "playarr_authentication_failures_total",
      "Total number of authentication failures",
      NGX_HTTP_PLAYARR_METRICS_COUNTER,
      { "endpoint", "username", NULL } },

    { "playarr_managed_errors_total",
      "Total number of managed errors (AppError instances) by error type",
      NGX_HTTP_PLAYARR_METRICS_COUNTER,
      { "endpoint", "error_type", "username" } }
};


static double  ngx_http_playarr_metrics_default_buckets[] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30
};

/* prom-client's default buckets, for schema histograms without any */
static double  ngx_http_playarr_metrics_client_buckets[] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10
};


static ngx_str_t  ngx_http_playarr_metrics_endpoint_name =
    ngx_string("playarr_metrics_endpoint");

static ngx_str_t  ngx_http_playarr_metrics_route_user_name =
    ngx_string("playarr_metrics_route_username");

static ngx_str_t  ngx_http_playarr_metrics_unknown =
    ngx_string(NGX_HTTP_PLAYARR_METRICS_UNKNOWN);

static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;

/* this worker's slot of playarr_http_requests_in_flight */
static ngx_http_playarr_metrics_slot_t  *ngx_http_playarr_metrics_own_slot;


/*
 * Updates carried by upstream response headers are taken out of the
 * response here, and applied when the request is logged.  And the
 * recent requests cache lines the request will be looked up in when it
 * is logged are fetched here, while the response is being sent.
 */

static ngx_int_t
ngx_http_playarr_metrics_header_filter(ngx_http_request_t *r)
{
    ngx_str_t                            *v;
    ngx_uint_t                            i;
    ngx_list_part_t                      *part;
    ngx_table_elt_t                      *h;
    ngx_http_playarr_metrics_ctx_t       *ctx;
    ngx_http_playarr_metrics_loc_conf_t  *plcf;

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_playarr_metrics_module);

    if (plcf->enable && !plcf->handler && r == r->main) {
        ngx_http_playarr_metrics_prefetch(r, plcf);
    }

    if (plcf->upstream_header.len == 0 || r->upstream == NULL) {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_playarr_metrics_module);

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

        if (ctx == NULL) {
            ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_playarr_metrics_ctx_t));
            if (ctx == NULL) {
                return NGX_ERROR;
            }

            if (ngx_array_init(&ctx->headers, r->pool, 2, sizeof(ngx_str_t))
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            ngx_http_set_ctx(r, ctx, ngx_http_playarr_metrics_module);
        }

        v = ngx_array_push(&ctx->headers);
        if (v == NULL) {
            return NGX_ERROR;
        }

        *v = h[i].value;

        /* the header never reaches the client */

        h[i].hash = 0;
    }

    return ngx_http_next_header_filter(r);
}


static void
ngx_http_playarr_metrics_apply_headers(ngx_http_request_t *r,
    ngx_http_playarr_metrics_main_conf_t *pmcf)
{
    ngx_int_t                        rc, index;
    ngx_str_t                       *v, err;
    ngx_uint_t                       i, reason;
    ngx_array_t                      updates;
    ngx_http_playarr_metrics_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_playarr_metrics_module);

    if (ctx == NULL) {
        return;
    }

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
            return;
        }

        reason = (index < 0) ? NGX_HTTP_PLAYARR_METRICS_MALFORMED
                             : NGX_HTTP_PLAYARR_METRICS_INVALID;

        ngx_http_playarr_metrics_reject(pmcf->store,
                                        NGX_HTTP_PLAYARR_METRICS_SOURCE_HEADER,
                                        reason, r->connection->log, &err);
    }
}


/*
 * The route is that of the URI as nginx normalized it, before any rewrite.
 * The post-read phase keeps where that URI is in the slot of
 * $playarr_metrics_endpoint (not yet valid): unlike the module contexts,
 * r->variables survives internal redirects.  The route is matched there
 * only when asked for, so a request that is not recorded does not pay.
 *
 * A client request is in flight from here (once: the phase is that of
 * the main request only) until nginx frees it, just after its log phase:
 * whatever its location, a scrape and an open websocket included.  One
 * finalized before this phase (a bad request line or header) never is.
 */

static ngx_int_t
ngx_http_playarr_metrics_post_read_handler(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t                    *cln;
    ngx_http_variable_value_t             *v;
    ngx_http_playarr_metrics_main_conf_t  *pmcf;

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_playarr_metrics_module);

    v = &r->variables[pmcf->endpoint];

    if (!v->valid && v->data == NULL) {
        v->data = r->uri.data;
        v->len = r->uri.len;

        if (ngx_http_playarr_metrics_own_slot) {
            cln = ngx_pool_cleanup_add(r->pool, 0);

            if (cln) {
                cln->handler = ngx_http_playarr_metrics_in_flight_done;
                (void) ngx_atomic_fetch_add(
                                   &ngx_http_playarr_metrics_own_slot->count,
                                   1);
            }
        }
    }

    return NGX_DECLINED;
}


/* the request's pool is destroyed: it is no longer in flight */

static void
ngx_http_playarr_metrics_in_flight_done(void *data)
{
    if (ngx_http_playarr_metrics_own_slot) {
        (void) ngx_atomic_fetch_add(&ngx_http_playarr_metrics_own_slot->count,
                                    (ngx_atomic_int_t) -1);
    }
}


/* a worker takes its slot when it starts, frees it when it exits */

static ngx_int_t
ngx_http_playarr_metrics_in_flight_init(ngx_cycle_t *cycle,
    ngx_http_playarr_metrics_main_conf_t *pmcf)
{
    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    ngx_http_playarr_metrics_own_slot =
                  ngx_http_playarr_metrics_slot_claim(pmcf->store, ngx_worker,
                                                      cycle->log);

    return NGX_OK;
}


static void
ngx_http_playarr_metrics_exit_process(ngx_cycle_t *cycle)
{
#if (NGX_THREADS)
    ngx_http_playarr_metrics_save_exit(cycle);
#endif

    if (ngx_http_playarr_metrics_own_slot) {
        ngx_http_playarr_metrics_slot_release(
                                           ngx_http_playarr_metrics_own_slot);
        ngx_http_playarr_metrics_own_slot = NULL;
    }
}


static void
ngx_http_playarr_metrics_match(ngx_http_request_t *r,
    ngx_http_variable_value_t *v)
{
    ngx_str_t                            *t, uri;
    ngx_uint_t                            n, seg;
    ngx_http_playarr_metrics_srv_conf_t  *pscf;

    pscf = ngx_http_get_module_srv_conf(r, ngx_http_playarr_metrics_module);

    /* the URI kept in the post-read phase; else, finalized before it */

    if (v->data) {
        uri.data = v->data;
        uri.len = v->len;

    } else {
        uri = r->uri;
    }

    t = &ngx_http_playarr_metrics_unknown;

    if (pscf->routes) {
        n = ngx_http_playarr_metrics_routes_match(pscf->routes, uri.data,
                                                  uri.len);
        if (n != NGX_HTTP_PLAYARR_METRICS_NO_ROUTE) {
            t = ngx_http_playarr_metrics_routes_template(pscf->routes, n);

            seg = ngx_http_playarr_metrics_routes_user(pscf->routes, n);

            if (seg) {
                ngx_http_playarr_metrics_route_segment(r, &uri, seg);
            }
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
ngx_http_playarr_metrics_route_segment(ngx_http_request_t *r, ngx_str_t *uri,
    ngx_uint_t seg)
{
    u_char                                *p, *q, *last;
    ngx_http_variable_value_t             *v;
    ngx_http_playarr_metrics_main_conf_t  *pmcf;

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_playarr_metrics_module);

    last = uri->data + uri->len;

    for (p = uri->data; p < last; p = q) {

        while (p < last && *p == '/') {
            p++;
        }

        for (q = p; q < last && *q != '/'; q++) { /* void */ }

        if (q > p && --seg == 0) {
            v = &r->variables[pmcf->route_user];

            if (!v->valid) {
                v->data = p;
                v->len = q - p;
            }

            return;
        }
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


static void
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
    u_char                                  *p, *key, *user;
    size_t                                   ulen, elen, n;
    uint32_t                                 status;
    uint64_t                                 tag;
    ngx_str_t                                ep, s, u, claimed;
    ngx_uint_t                               i;
    ngx_msec_int_t                           ms;
    ngx_time_t                              *tp;
    ngx_http_playarr_metrics_store_t        *store;
    ngx_http_playarr_metrics_series_t       *series, *duration;
    ngx_http_playarr_metrics_layout_t       *layout;
    ngx_http_playarr_metrics_recent_t       *set, *hit;
    ngx_http_playarr_metrics_loc_conf_t     *plcf;
    ngx_http_playarr_metrics_main_conf_t    *pmcf;
    ngx_http_playarr_metrics_family_conf_t  *fc;
    ngx_http_playarr_metrics_jwt_claims_t    tmp;
    u_char                      buf[NGX_HTTP_PLAYARR_METRICS_KEY_MAX];

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_playarr_metrics_module);

    ngx_http_playarr_metrics_apply_headers(r, pmcf);

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_playarr_metrics_module);

    if (!plcf->enable || plcf->handler || r != r->main) {
        return NGX_OK;
    }

    store = pmcf->store;
    fc = store->families.elts;

    ngx_http_playarr_metrics_endpoint(r, pmcf, &ep);

    status = ngx_http_playarr_metrics_status(r);

    if (ngx_http_playarr_metrics_user(r, plcf, status, &u, &claimed, &tmp)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    tp = ngx_timeofday();

    ms = (ngx_msec_int_t)
             ((tp->sec - r->start_sec) * 1000 + (tp->msec - r->start_msec));
    ms = ngx_max(ms, 0);

    /* the series of a request recorded lately */

    set = NULL;
    hit = NULL;
    tag = 0;

    if (u.len <= NGX_HTTP_PLAYARR_METRICS_RECENT_USER) {
        set = ngx_http_playarr_metrics_recent(pmcf, &ep, status, &u, &tag);
    }

    if (set) {
        for (i = 0; i < NGX_HTTP_PLAYARR_METRICS_RECENT_WAYS; i++) {
            if (set[i].endpoint == ep.data
                && set[i].tag == tag
                && ngx_memcmp(set[i].user, u.data, u.len) == 0)
            {
                hit = &set[i];

                /* not to wait for the two cache lines one after the other */
                ngx_http_playarr_metrics_prefetch_line(hit->requests);

                if (hit->duration) {
                    ngx_http_playarr_metrics_observe(hit->duration,
                                                     (double) ms / 1000);
                }

                ngx_http_playarr_metrics_add(hit->requests, 1);
                break;
            }
        }

        if (hit && status != NGX_HTTP_UNAUTHORIZED && !plcf->error_type) {
            return NGX_OK;
        }
    }

    /*
     * Every key ends with the user: it is written once, at the end of
     * buf, and the values before it in each key are written in front of it.
     */

    user = buf + sizeof(buf) - NGX_HTTP_PLAYARR_METRICS_VALUE_MAX;
    ulen = 0;

    if (u.len) {
        ulen = ngx_http_playarr_metrics_value_copy(user, u.data, u.len);
    }

    if (ulen == 0) {
        ulen = sizeof(NGX_HTTP_PLAYARR_METRICS_ANONYMOUS) - 1;
        ngx_memcpy(user, NGX_HTTP_PLAYARR_METRICS_ANONYMOUS, ulen);
    }

    /* key: endpoint, user */

    key = user - 1 - ep.len;
    p = ngx_cpymem(key, ep.data, ep.len);
    *p = NGX_HTTP_PLAYARR_METRICS_SEP;
    n = user + ulen - key;

    /*
     * A 101 has no duration: the time a websocket stayed open is not that
     * of an answer.  Its entry in the cache (the status is in the tag)
     * holds no duration series.
     */

    duration = NULL;

    if (hit == NULL && status != NGX_HTTP_SWITCHING_PROTOCOLS) {
        layout = NULL;

        if (plcf->layout != NGX_CONF_UNSET_UINT) {
            layout = store->shared_layouts[plcf->layout];
        }

        duration = ngx_http_playarr_metrics_series(store,
                                  &fc[NGX_HTTP_PLAYARR_METRICS_DURATION],
                                  layout, key, n);
        ngx_http_playarr_metrics_observe(duration, (double) ms / 1000);
    }

    if (status == NGX_HTTP_UNAUTHORIZED) {
        ngx_http_playarr_metrics_auth_failed(store, key, n, &ep, &u,
                                             &claimed, buf);
    }

    /* key: endpoint, status, user */

    if (hit == NULL) {
        key -= 4;
        p = ngx_cpymem(key, ep.data, ep.len);
        p[0] = NGX_HTTP_PLAYARR_METRICS_SEP;
        p[1] = (u_char) ('0' + status / 100);
        p[2] = (u_char) ('0' + status / 10 % 10);
        p[3] = (u_char) ('0' + status % 10);
        p[4] = NGX_HTTP_PLAYARR_METRICS_SEP;

        series = ngx_http_playarr_metrics_series(store,
                                  &fc[NGX_HTTP_PLAYARR_METRICS_REQUESTS],
                                  NULL, key, n + 4);
        ngx_http_playarr_metrics_add(series, 1);

        if (set
            && duration
               != fc[NGX_HTTP_PLAYARR_METRICS_DURATION].shared->overflow
            && series
               != fc[NGX_HTTP_PLAYARR_METRICS_REQUESTS].shared->overflow)
        {
            for (i = NGX_HTTP_PLAYARR_METRICS_RECENT_WAYS - 1; i; i--) {
                set[i] = set[i - 1];
            }

            set[0].endpoint = ep.data;
            set[0].tag = tag;
            set[0].duration = duration;
            set[0].requests = series;
            ngx_memcpy(set[0].user, u.data, u.len);
        }
    }

    /* key: endpoint, error type, user; the error type first in buf */

    if (plcf->error_type) {
        if (ngx_http_playarr_metrics_eval(r, plcf->error_type, &s) != NGX_OK) {
            return NGX_ERROR;
        }

        if (s.len) {
            elen = ngx_http_playarr_metrics_value_copy(buf, s.data, s.len);

            key = user - 2 - elen - ep.len;
            p = ngx_cpymem(key, ep.data, ep.len);
            *p++ = NGX_HTTP_PLAYARR_METRICS_SEP;
            p = ngx_cpymem(p, buf, elen);
            *p = NGX_HTTP_PLAYARR_METRICS_SEP;

            series = ngx_http_playarr_metrics_series(store,
                                  &fc[NGX_HTTP_PLAYARR_METRICS_ERRORS],
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
                              &fc[NGX_HTTP_PLAYARR_METRICS_AUTH_FAILED],
                              NULL, key, n);
    ngx_http_playarr_metrics_add(series, 1);
}


/*
 * The cache lines of the recent requests cache that the log handler will
 * read for this request, fetched ahead: when the request is logged, after
 * the response went through the kernel, they are no longer waited for.
 * The route match done here is kept for the log handler.  Only a hint: a
 * status or a user that changes before the request is logged only makes
 * the lines fetched useless.
 */

static void
ngx_http_playarr_metrics_prefetch(ngx_http_request_t *r,
    ngx_http_playarr_metrics_loc_conf_t *plcf)
{
    u_char                                *p;
    uint32_t                               status;
    uint64_t                               tag;
    ngx_str_t                              ep, u, claimed;
    ngx_uint_t                             i;
    ngx_http_playarr_metrics_recent_t     *set;
    ngx_http_playarr_metrics_main_conf_t  *pmcf;

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_playarr_metrics_module);

    ngx_http_playarr_metrics_endpoint(r, pmcf, &ep);

    status = ngx_http_playarr_metrics_status(r);

    if (ngx_http_playarr_metrics_user(r, plcf, status, &u, &claimed, NULL)
        != NGX_OK
        || u.len > NGX_HTTP_PLAYARR_METRICS_RECENT_USER)
    {
        return;
    }

    set = ngx_http_playarr_metrics_recent(pmcf, &ep, status, &u, &tag);
    if (set == NULL) {
        return;
    }

    p = (u_char *) set;

    for (i = 0; i < NGX_HTTP_PLAYARR_METRICS_RECENT_WAYS; i++) {
        ngx_http_playarr_metrics_prefetch_line(p);
        p += sizeof(ngx_http_playarr_metrics_recent_t);
    }
}


/*
 * The user, empty for "anonymous": the first non-empty value of
 * playarr_metrics_username, for every family.  Without that directive,
 * the name the request gives, its session's (with a secret file) else its
 * route's: *claimed, which labels the authentication failure of a 401;
 * the request and its duration are then anonymous, as in Playarr, which
 * knows a user only once its check passed.
 */

static ngx_int_t
ngx_http_playarr_metrics_user(ngx_http_request_t *r,
    ngx_http_playarr_metrics_loc_conf_t *plcf, uint32_t status,
    ngx_str_t *user, ngx_str_t *claimed,
    ngx_http_playarr_metrics_jwt_claims_t *tmp)
{
    ngx_uint_t                              i;
    ngx_http_variable_value_t              *vv;
    ngx_http_playarr_metrics_value_t       *value;
    ngx_http_playarr_metrics_jwt_claims_t  *claims;
    ngx_http_playarr_metrics_main_conf_t   *pmcf;

    user->len = 0;
    user->data = (u_char *) "";

    if (plcf->username) {
        value = plcf->username->elts;

        for (i = 0; i < plcf->username->nelts; i++) {
            if (ngx_http_playarr_metrics_eval(r, &value[i], user) != NGX_OK) {
                return NGX_ERROR;
            }

            if (user->len) {
                break;
            }
        }

        *claimed = *user;

        return NGX_OK;
    }

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_playarr_metrics_module);

    /*
     * The session's user, as the cache holds it (or tmp), not copied: the
     * log handler uses it before this worker runs anything else.  The
     * prefetch, a hint only, gives tmp NULL and looks no session up.
     */

    if (pmcf->jwt_secret.len && tmp
        && ngx_http_playarr_metrics_session(r, &claims, tmp)
           == NGX_HTTP_PLAYARR_METRICS_SESSION_VALID)
    {
        claimed->len = claims->user_len;
        claimed->data = claims->user;

    } else {
        vv = ngx_http_get_indexed_variable(r, pmcf->route_user);

        if (vv == NULL || vv->not_found) {
            *claimed = *user;
            return NGX_OK;
        }

        claimed->len = vv->len;
        claimed->data = vv->data;
    }

    if (status != NGX_HTTP_UNAUTHORIZED) {
        *user = *claimed;
    }

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
 * The set of the recent requests cache where an endpoint, status and user
 * would be, and their tag; NULL if there is no cache.  The endpoint is the
 * text of a template, or ngx_http_playarr_metrics_unknown: it lives as
 * long as the configuration, so its address stands for it.
 */

static ngx_http_playarr_metrics_recent_t *
ngx_http_playarr_metrics_recent(ngx_http_playarr_metrics_main_conf_t *pmcf,
    ngx_str_t *ep, uint32_t status, ngx_str_t *user, uint64_t *tag)
{
    size_t    size;
    uint32_t  h;

    if (pmcf->recent == NULL) {
        size = NGX_HTTP_PLAYARR_METRICS_RECENT_SETS
               * NGX_HTTP_PLAYARR_METRICS_RECENT_WAYS
               * sizeof(ngx_http_playarr_metrics_recent_t);

        /* an entry is a cache line */

        pmcf->recent = ngx_pmemalign(ngx_cycle->pool, size,
                                     NGX_CPU_CACHE_LINE);
        if (pmcf->recent == NULL) {
            return NULL;
        }

        ngx_memzero(pmcf->recent, size);
    }

    *tag = (uint64_t) ep->len | (uint64_t) status << 32
           | (uint64_t) user->len << 48;

    h = ngx_http_playarr_metrics_hash((uint32_t) ((uintptr_t) ep->data >> 3)
                                      ^ status, user->data, user->len);

    return &pmcf->recent[(h & (NGX_HTTP_PLAYARR_METRICS_RECENT_SETS - 1))
                         * NGX_HTTP_PLAYARR_METRICS_RECENT_WAYS];
}


static ngx_int_t
ngx_http_playarr_metrics_eval(ngx_http_request_t *r,
    ngx_http_playarr_metrics_value_t *value, ngx_str_t *s)
{
    ngx_uint_t                  i;
    ngx_list_part_t            *part;
    ngx_table_elt_t            *h;
    ngx_http_variable_value_t  *vv;

    if (value->value) {
        return ngx_http_complex_value(r, value->value, s);
    }

    if (value->header) {
        s->len = 0;

        if (value->header == NGX_HTTP_PLAYARR_METRICS_REQUEST) {
            part = &r->headers_in.headers.part;

        } else if (r->upstream) {
            part = &r->upstream->headers_in.headers.part;

        } else {
            return NGX_OK;
        }

        h = part->elts;

        for (i = 0; /* void */ ; i++) {

            if (i >= part->nelts) {
                if (part->next == NULL) {
                    return NGX_OK;
                }

                part = part->next;
                h = part->elts;
                i = 0;
            }

            if (h[i].hash == value->hash
                && h[i].key.len == value->name.len
                && ngx_memcmp(h[i].lowcase_key, value->name.data,
                              value->name.len)
                   == 0)
            {
                *s = h[i].value;
                return NGX_OK;
            }
        }
    }

    vv = ngx_http_get_indexed_variable(r, value->index);

    if (vv == NULL || vv->not_found) {
        s->len = 0;
        return NGX_OK;
    }

    s->len = vv->len;
    s->data = vv->data;

    return NGX_OK;
}


static ngx_int_t
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

    return ngx_http_playarr_metrics_session_add_variables(cf);
}


static void *
ngx_http_playarr_metrics_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_playarr_metrics_main_conf_t  *pmcf;

    pmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_playarr_metrics_main_conf_t));
    if (pmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     pmcf->shm_zone = NULL;
     *     pmcf->store = NULL;
     *     pmcf->token = { 0 };
     *     pmcf->used_name = { 0, NULL };
     */

    if (ngx_array_init(&pmcf->schema, cf->pool, 32,
                       sizeof(ngx_http_playarr_metrics_family_conf_t))
        != NGX_OK)
    {
        return NULL;
    }

    pmcf->max_series = NGX_CONF_UNSET_UINT;
    pmcf->endpoint = NGX_ERROR;
    pmcf->route_user = NGX_ERROR;

    return pmcf;
}


static char *
ngx_http_playarr_metrics_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_playarr_metrics_main_conf_t *pmcf = conf;

    double           *b;
    ngx_core_conf_t  *ccf;

    ngx_conf_init_uint_value(pmcf->max_series, 10000);

    pmcf->buckets = ngx_array_create(cf->pool,
                      sizeof(ngx_http_playarr_metrics_default_buckets)
                      / sizeof(double), sizeof(double));
    if (pmcf->buckets == NULL) {
        return NGX_CONF_ERROR;
    }

    b = ngx_array_push_n(pmcf->buckets, pmcf->buckets->nalloc);
    if (b == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(b, ngx_http_playarr_metrics_default_buckets,
               sizeof(ngx_http_playarr_metrics_default_buckets));

    if (pmcf->store) {
        ccf = (ngx_core_conf_t *) ngx_get_conf(cf->cycle->conf_ctx,
                                               ngx_core_module);

        pmcf->store->max_series = pmcf->max_series;
        pmcf->store->state_file = pmcf->state_file;

        /* filled in by the core module once the configuration is read */
        pmcf->store->oldpid = &ccf->oldpid;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_playarr_metrics_create_srv_conf(ngx_conf_t *cf)
{
    ngx_http_playarr_metrics_srv_conf_t  *pscf;

    pscf = ngx_pcalloc(cf->pool, sizeof(ngx_http_playarr_metrics_srv_conf_t));
    if (pscf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     pscf->routes = NULL;
     *     pscf->jwt_cookie = { 0, NULL };
     */

    return pscf;
}


static char *
ngx_http_playarr_metrics_merge_srv_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_playarr_metrics_srv_conf_t *prev = parent;
    ngx_http_playarr_metrics_srv_conf_t *conf = child;

    if (conf->routes == NULL) {
        conf->routes = prev->routes;
    }

    ngx_conf_merge_str_value(conf->jwt_cookie, prev->jwt_cookie,
                             "access_token");

    return NGX_CONF_OK;
}


static void *
ngx_http_playarr_metrics_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_playarr_metrics_loc_conf_t  *plcf;

    plcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_playarr_metrics_loc_conf_t));
    if (plcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     plcf->buckets = NULL;
     *     plcf->handler = 0;
     *     plcf->format = 0;
     *     plcf->handler_file = { 0, NULL };
     *     plcf->handler_line = 0;
     */

    plcf->enable = NGX_CONF_UNSET;
    plcf->username = NGX_CONF_UNSET_PTR;
    plcf->error_type = NGX_CONF_UNSET_PTR;
    plcf->auth = NGX_CONF_UNSET_UINT;
    plcf->layout = NGX_CONF_UNSET_UINT;

    return plcf;
}


static char *
ngx_http_playarr_metrics_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_playarr_metrics_loc_conf_t *prev = parent;
    ngx_http_playarr_metrics_loc_conf_t *conf = child;

    ngx_int_t                              n;
    ngx_http_playarr_metrics_main_conf_t  *pmcf;

    ngx_conf_merge_value(conf->enable, prev->enable, 1);
    if (conf->auth == NGX_CONF_UNSET_UINT) {
        conf->auth = prev->auth;
        conf->auth_role = prev->auth_role;
    }

    ngx_conf_merge_uint_value(conf->auth, prev->auth,
                              NGX_HTTP_PLAYARR_METRICS_AUTH_BEARER);
    ngx_conf_merge_ptr_value(conf->username, prev->username, NULL);
    ngx_conf_merge_ptr_value(conf->error_type, prev->error_type, NULL);
    ngx_conf_merge_str_value(conf->upstream_header, prev->upstream_header,
                             "");

    if (conf->buckets == NULL) {
        conf->buckets = prev->buckets;
        conf->layout = prev->layout;
    }

    pmcf = ngx_http_conf_get_module_main_conf(cf,
                                            ngx_http_playarr_metrics_module);

    if (conf->buckets && conf->layout == NGX_CONF_UNSET_UINT && pmcf->store) {
        n = ngx_http_playarr_metrics_store_layout(pmcf->store, cf->pool,
                                                  conf->buckets);
        if (n == NGX_ERROR) {
            return NGX_CONF_ERROR;
        }

        conf->layout = n;
    }

    /* the duration family's identity includes every layout in use */

    if (conf->layout != NGX_CONF_UNSET_UINT && pmcf->store) {
        if (ngx_http_playarr_metrics_layout_used(cf, pmcf, conf->layout)
            != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    if (conf->merge.len && conf->handler != NGX_HTTP_PLAYARR_METRICS_EXPORT) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"playarr_metrics_merge\" needs "
                      "\"playarr_metrics_export\" in the same location "
                      "in %V:%ui", &conf->merge_file, conf->merge_line);
        return NGX_CONF_ERROR;
    }

    if (conf->handler == NGX_HTTP_PLAYARR_METRICS_ADMIN
        && pmcf->token.path.len == 0)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"%V\" needs \"playarr_metrics_token_file\" in %V:%ui",
                      &conf->handler_name, &conf->handler_file,
                      conf->handler_line);
        return NGX_CONF_ERROR;
    }

    if (conf->handler && (conf->auth & NGX_HTTP_PLAYARR_METRICS_AUTH_JWT)
        && pmcf->jwt_secret.len == 0)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"playarr_metrics_auth jwt\" needs "
                      "\"playarr_metrics_jwt_secret_file\" in %V:%ui",
                      &conf->handler_file, conf->handler_line);
        return NGX_CONF_ERROR;
    }

    if (conf->handler && (conf->auth & NGX_HTTP_PLAYARR_METRICS_AUTH_BEARER)
        && pmcf->token.path.len == 0)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"%V\" needs \"playarr_metrics_token_file\" unless "
                      "\"playarr_metrics_auth off\" is set in %V:%ui",
                      &conf->handler_name, &conf->handler_file,
                      conf->handler_line);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_playarr_metrics_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt                   *h;
    ngx_http_core_main_conf_t             *cmcf;
    ngx_http_playarr_metrics_main_conf_t  *pmcf;

    pmcf = ngx_http_conf_get_module_main_conf(cf,
                                            ngx_http_playarr_metrics_module);

    if (pmcf->store == NULL) {

        if (pmcf->used_name.len) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "\"%V\" directive needs a \"playarr_metrics_zone\" "
                          "in %V:%ui", &pmcf->used_name, &pmcf->used_file,
                          pmcf->used_line);
            return NGX_ERROR;
        }

        /* the module is idle without a zone */

        return NGX_OK;
    }

    if (ngx_http_playarr_metrics_add_builtins(cf, pmcf) != NGX_OK) {
        return NGX_ERROR;
    }

#if (NGX_THREADS)

    /* the periodic save runs in nginx's thread pool "default" */

    if (pmcf->state_file.len && ngx_http_playarr_metrics_notify(cf)) {
        pmcf->thread_pool = ngx_thread_pool_add(cf, NULL);
        if (pmcf->thread_pool == NULL) {
            return NGX_ERROR;
        }
    }

#endif

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

    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_playarr_metrics_header_filter;

    return ngx_http_playarr_metrics_merge_filter_init(cf);
}


/*
 * The families: the built-in HTTP ones first, taking help and buckets
 * from a schema entry of the same name, then the other schema entries.
 */

static ngx_int_t
ngx_http_playarr_metrics_add_builtins(ngx_conf_t *cf,
    ngx_http_playarr_metrics_main_conf_t *pmcf)
{
    double                                  *b;
    ngx_int_t                                n;
    ngx_uint_t                               i, j;
    ngx_http_playarr_metrics_builtin_t      *bi;
    ngx_http_playarr_metrics_family_conf_t  *fc, *sc;

    for (i = 0; i < NGX_HTTP_PLAYARR_METRICS_NHTTP; i++) {
        bi = &ngx_http_playarr_metrics_builtins[i];

        fc = ngx_array_push(&pmcf->store->families);
        if (fc == NULL) {
            return NGX_ERROR;
        }

        sc = ngx_http_playarr_metrics_schema_family(pmcf, bi->name);

        if (sc) {
            *fc = *sc;
            sc->name.len = 0;

            if (fc->type == NGX_HTTP_PLAYARR_METRICS_HISTOGRAM
                && fc->buckets == NULL)
            {
                fc->buckets = pmcf->buckets;
            }

            continue;
        }

        ngx_memzero(fc, sizeof(ngx_http_playarr_metrics_family_conf_t));

        fc->name.data = (u_char *) bi->name;
        fc->name.len = ngx_strlen(bi->name);
        fc->help.data = (u_char *) bi->help;
        fc->help.len = ngx_strlen(bi->help);
        fc->type = bi->type;

        for (j = 0; j < 3 && bi->labels[j]; j++) { /* void */ }

        fc->nlabels = j;
        fc->labels = ngx_palloc(cf->pool, j * sizeof(ngx_str_t));
        if (fc->labels == NULL) {
            return NGX_ERROR;
        }

        for (j = 0; j < fc->nlabels; j++) {
            fc->labels[j].data = (u_char *) bi->labels[j];
            fc->labels[j].len = ngx_strlen(bi->labels[j]);
        }

        if (fc->type == NGX_HTTP_PLAYARR_METRICS_HISTOGRAM) {
            fc->buckets = pmcf->buckets;
        }
    }

    fc = pmcf->store->families.elts;
    fc[NGX_HTTP_PLAYARR_METRICS_DURATION].layouts = pmcf->layouts;

    sc = pmcf->schema.elts;

    for (i = 0; i < pmcf->schema.nelts; i++) {

        if (sc[i].name.len == 0) {
            continue;
        }

        fc = ngx_array_push(&pmcf->store->families);
        if (fc == NULL) {
            return NGX_ERROR;
        }

        *fc = sc[i];

        if (fc->type == NGX_HTTP_PLAYARR_METRICS_HISTOGRAM
            && fc->buckets == NULL)
        {
            n = sizeof(ngx_http_playarr_metrics_client_buckets)
                / sizeof(double);

            fc->buckets = ngx_array_create(cf->pool, n, sizeof(double));
            if (fc->buckets == NULL) {
                return NGX_ERROR;
            }

            b = ngx_array_push_n(fc->buckets, n);
            if (b == NULL) {
                return NGX_ERROR;
            }

            ngx_memcpy(b, ngx_http_playarr_metrics_client_buckets,
                       sizeof(ngx_http_playarr_metrics_client_buckets));
        }
    }

    fc = pmcf->store->families.elts;

    for (i = 0; i < pmcf->store->families.nelts; i++) {
        if (fc[i].type != NGX_HTTP_PLAYARR_METRICS_HISTOGRAM) {
            continue;
        }

        n = ngx_http_playarr_metrics_store_layout(pmcf->store, cf->pool,
                                                  fc[i].buckets);
        if (n == NGX_ERROR) {
            return NGX_ERROR;
        }

        fc[i].layout = n;
    }

    return NGX_OK;
}


static ngx_http_playarr_metrics_family_conf_t *
ngx_http_playarr_metrics_schema_family(
    ngx_http_playarr_metrics_main_conf_t *pmcf, const char *name)
{
    ngx_uint_t                               i;
    ngx_http_playarr_metrics_family_conf_t  *sc;

    sc = pmcf->schema.elts;

    for (i = 0; i < pmcf->schema.nelts; i++) {
        if (sc[i].name.len && ngx_strcmp(sc[i].name.data, name) == 0) {
            return &sc[i];
        }
    }

    return NULL;
}


static char *
ngx_http_playarr_metrics_schema(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_playarr_metrics_main_conf_t *pmcf = conf;

    ngx_str_t                               *value, path;
    ngx_uint_t                               i, j;
    ngx_http_playarr_metrics_builtin_t      *b;
    ngx_http_playarr_metrics_family_conf_t  *sc;

    ngx_http_playarr_metrics_note(cf, cmd);

    if (pmcf->schema.nelts) {
        return "is duplicate";
    }

    value = cf->args->elts;
    path = value[1];

    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_playarr_metrics_schema_load(cf, &pmcf->schema, &path)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    /* an entry named like a built-in family must define it the same way */

    for (i = 0; i < NGX_HTTP_PLAYARR_METRICS_NHTTP; i++) {
        b = &ngx_http_playarr_metrics_builtins[i];

        sc = ngx_http_playarr_metrics_schema_family(pmcf, b->name);
        if (sc == NULL) {
            continue;
        }

        for (j = 0; j < 3 && b->labels[j]; j++) {
            if (j >= sc->nlabels
                || ngx_strcmp(sc->labels[j].data, b->labels[j]) != 0)
            {
                break;
            }
        }

        if (sc->type != b->type
            || j != sc->nlabels
            || (j < 3 && b->labels[j]))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid schema \"%V\": metric \"%V\" must "
                               "be a %s with the labels of the built-in "
                               "\"%s\"", &path, &sc->key,
                               b->type == NGX_HTTP_PLAYARR_METRICS_COUNTER
                               ? "counter" : "histogram", b->name);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_playarr_metrics_layout_used(ngx_conf_t *cf,
    ngx_http_playarr_metrics_main_conf_t *pmcf, ngx_uint_t layout)
{
    ngx_uint_t  i, *n;

    if (pmcf->layouts == NULL) {
        pmcf->layouts = ngx_array_create(cf->pool, 4, sizeof(ngx_uint_t));
        if (pmcf->layouts == NULL) {
            return NGX_ERROR;
        }
    }

    n = pmcf->layouts->elts;

    for (i = 0; i < pmcf->layouts->nelts; i++) {
        if (n[i] == layout) {
            return NGX_OK;
        }
    }

    n = ngx_array_push(pmcf->layouts);
    if (n == NULL) {
        return NGX_ERROR;
    }

    *n = layout;

    return NGX_OK;
}


/* remembers where the module was first used, to name it in errors */

static void
ngx_http_playarr_metrics_note(ngx_conf_t *cf, ngx_command_t *cmd)
{
    ngx_http_playarr_metrics_main_conf_t  *pmcf;

    pmcf = ngx_http_conf_get_module_main_conf(cf,
                                            ngx_http_playarr_metrics_module);

    if (pmcf->used_name.len) {
        return;
    }

    pmcf->used_name = cmd->name;
    pmcf->used_file = cf->conf_file->file.name;
    pmcf->used_line = cf->conf_file->line;
}


static char *
ngx_http_playarr_metrics_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_playarr_metrics_note(cf, cmd);

    if (cmd->type & NGX_CONF_FLAG) {
        return ngx_conf_set_flag_slot(cf, cmd, conf);
    }

    if (cmd->post) {
        return ngx_conf_set_enum_slot(cf, cmd, conf);
    }

    return ngx_conf_set_num_slot(cf, cmd, conf);
}


static char *
ngx_http_playarr_metrics_jwt_secret_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_playarr_metrics_note(cf, cmd);

    return ngx_http_playarr_metrics_set_jwt_secret(cf, cmd, conf);
}


/*
 * playarr_metrics_auth bearer|jwt|off [role=NAME]: "off" alone; bearer
 * and jwt in any order, each once; role= with jwt
 */

static char *
ngx_http_playarr_metrics_set_auth(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_playarr_metrics_loc_conf_t *plcf = conf;

    ngx_str_t   *value;
    ngx_uint_t   i, mode;

    ngx_http_playarr_metrics_note(cf, cmd);

    if (plcf->auth != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    plcf->auth = 0;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strcmp(value[i].data, "off") == 0 && cf->args->nelts == 2) {
            return NGX_CONF_OK;
        }

        mode = 0;

        if (ngx_strcmp(value[i].data, "bearer") == 0) {
            mode = NGX_HTTP_PLAYARR_METRICS_AUTH_BEARER;

        } else if (ngx_strcmp(value[i].data, "jwt") == 0) {
            mode = NGX_HTTP_PLAYARR_METRICS_AUTH_JWT;

        } else if (ngx_strncmp(value[i].data, "role=", 5) == 0
                   && value[i].len > 5 && plcf->auth_role.data == NULL
                   && value[i].len - 5
                      <= NGX_HTTP_PLAYARR_METRICS_JWT_ROLE_MAX)
        {
            plcf->auth_role.data = value[i].data + 5;
            plcf->auth_role.len = value[i].len - 5;
            continue;
        }

        if (mode == 0 || (plcf->auth & mode)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        plcf->auth |= mode;
    }

    if (plcf->auth == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"role=\" needs \"jwt\"");
        return NGX_CONF_ERROR;
    }

    if (plcf->auth_role.len
        && !(plcf->auth & NGX_HTTP_PLAYARR_METRICS_AUTH_JWT))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"role=\" needs \"jwt\"");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_playarr_metrics_jwt_cookie(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_playarr_metrics_srv_conf_t *pscf = conf;

    return ngx_http_playarr_metrics_set_name(cf, cmd, &pscf->jwt_cookie,
                                NGX_HTTP_PLAYARR_METRICS_NAME_COOKIE);
}


/*
 * A cookie name (an RFC 6265 token) or a header name (letters, digits,
 * "-" and "_", as nginx takes them): *name, set once
 */

static char *
ngx_http_playarr_metrics_set_name(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_str_t *name, ngx_uint_t kind)
{
    u_char     *p, *last;
    ngx_str_t  *value;

    ngx_http_playarr_metrics_note(cf, cmd);

    if (name->data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    last = value[1].data + value[1].len;

    for (p = value[1].data; p < last; p++) {

        if (kind == NGX_HTTP_PLAYARR_METRICS_NAME_COOKIE
            ? (*p <= 0x20 || *p >= 0x7f
               || ngx_strchr("()<>@,;:\\\"/[]?={}", *p) != NULL)
            : !((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
                || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
        {
            break;
        }
    }

    if (value[1].len == 0 || p != last) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid %s name \"%V\"",
                           kind == NGX_HTTP_PLAYARR_METRICS_NAME_COOKIE
                           ? "cookie" : "header", &value[1]);
        return NGX_CONF_ERROR;
    }

    *name = value[1];

    return NGX_CONF_OK;
}


static char *
ngx_http_playarr_metrics_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_playarr_metrics_main_conf_t *pmcf = conf;

    u_char                            *p;
    ssize_t                            size;
    ngx_str_t                         *value, name, s;
    ngx_http_playarr_metrics_store_t  *store;

    if (pmcf->shm_zone) {
        return "is duplicate";
    }

    value = cf->args->elts;

    p = (u_char *) ngx_strchr(value[1].data, ':');

    if (p == NULL || p == value[1].data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone \"%V\", expected NAME:SIZE",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    name.data = value[1].data;
    name.len = p - value[1].data;

    s.data = p + 1;
    s.len = value[1].data + value[1].len - s.data;

    size = ngx_parse_size(&s);

    if (size == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone size \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is too small, the minimum is %uz",
                           &value[1], 8 * ngx_pagesize);
        return NGX_CONF_ERROR;
    }

    store = ngx_pcalloc(cf->pool, sizeof(ngx_http_playarr_metrics_store_t));
    if (store == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ngx_array_init(&store->families, cf->pool, 48,
                       sizeof(ngx_http_playarr_metrics_family_conf_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    store->name = name;

    pmcf->shm_zone = ngx_shared_memory_add(cf, &name, size,
                                           &ngx_http_playarr_metrics_module);
    if (pmcf->shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (pmcf->shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is already used", &name);
        return NGX_CONF_ERROR;
    }

    pmcf->shm_zone->init = ngx_http_playarr_metrics_store_init;
    pmcf->shm_zone->data = store;
    pmcf->store = store;

    return NGX_CONF_OK;
}


static char *
ngx_http_playarr_metrics_route(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_playarr_metrics_srv_conf_t *pscf = conf;

    ngx_str_t  *value;
    u_char      buf[NGX_HTTP_PLAYARR_METRICS_VALUE_MAX];

    ngx_http_playarr_metrics_note(cf, cmd);

    value = cf->args->elts;

    if (value[1].len > NGX_HTTP_PLAYARR_METRICS_VALUE_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "route template \"%V\" is longer than %d bytes",
                           &value[1], NGX_HTTP_PLAYARR_METRICS_VALUE_MAX);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_playarr_metrics_value_copy(buf, value[1].data, value[1].len)
        != value[1].len
        || ngx_memcmp(buf, value[1].data, value[1].len) != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "route template \"%V\" is not valid UTF-8",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    if (pscf->routes == NULL) {
        pscf->routes = ngx_http_playarr_metrics_routes_create(cf->pool);
        if (pscf->routes == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    return ngx_http_playarr_metrics_routes_add(cf, pscf->routes, &value[1]);
}


static char *
ngx_http_playarr_metrics_values(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    char  *p = conf;

    ngx_str_t                          *value;
    ngx_uint_t                          i;
    ngx_array_t                       **a;
    ngx_http_playarr_metrics_value_t   *v, **one;

    ngx_http_playarr_metrics_note(cf, cmd);

    value = cf->args->elts;

    if (cmd->type & NGX_CONF_1MORE) {
        a = (ngx_array_t **) (p + cmd->offset);

        if (*a != NGX_CONF_UNSET_PTR && *a != NULL) {
            return "is duplicate";
        }

        *a = ngx_array_create(cf->pool, cf->args->nelts - 1,
                              sizeof(ngx_http_playarr_metrics_value_t));
        if (*a == NULL) {
            return NGX_CONF_ERROR;
        }

        for (i = 1; i < cf->args->nelts; i++) {
            v = ngx_array_push(*a);
            if (v == NULL) {
                return NGX_CONF_ERROR;
            }

            if (ngx_http_playarr_metrics_value(cf, &value[i], v)
                != NGX_CONF_OK)
            {
                return NGX_CONF_ERROR;
            }
        }

        return NGX_CONF_OK;
    }

    one = (ngx_http_playarr_metrics_value_t **) (p + cmd->offset);

    if (*one != NGX_CONF_UNSET_PTR && *one != NULL) {
        return "is duplicate";
    }

    *one = ngx_palloc(cf->pool, sizeof(ngx_http_playarr_metrics_value_t));
    if (*one == NULL) {
        return NGX_CONF_ERROR;
    }

    return ngx_http_playarr_metrics_value(cf, &value[1], *one);
}


/*
 * A value that is exactly one variable is read through its index, with
 * no script and no allocation; anything else is a complex value.
 */

static char *
ngx_http_playarr_metrics_value(ngx_conf_t *cf, ngx_str_t *arg,
    ngx_http_playarr_metrics_value_t *value)
{
    u_char                            *p, *last;
    ngx_str_t                          name;
    ngx_http_compile_complex_value_t   ccv;

    value->value = NULL;
    value->header = NGX_HTTP_PLAYARR_METRICS_VARIABLE;

    if (arg->len > 1 && arg->data[0] == '$') {
        last = arg->data + arg->len;

        for (p = arg->data + 1; p < last; p++) {
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
                  || (*p >= '0' && *p <= '9') || *p == '_'))
            {
                break;
            }
        }

        if (p == last) {
            name.data = arg->data + 1;
            name.len = arg->len - 1;

            switch (ngx_http_playarr_metrics_header_value(cf, &name, value)) {
            case NGX_OK:
                return NGX_CONF_OK;
            case NGX_ERROR:
                return NGX_CONF_ERROR;
            }

            value->index = ngx_http_get_variable_index(cf, &name);
            if (value->index == NGX_ERROR) {
                return NGX_CONF_ERROR;
            }

            return NGX_CONF_OK;
        }
    }

    value->value = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
    if (value->value == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = arg;
    ccv.complex_value = value->value;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * $http_NAME and $upstream_http_NAME: the header is looked up by the hash
 * nginx computed when it parsed it.  Cookie is left to its variable,
 * which joins repeated headers.
 */

static ngx_int_t
ngx_http_playarr_metrics_header_value(ngx_conf_t *cf, ngx_str_t *name,
    ngx_http_playarr_metrics_value_t *value)
{
    size_t       n;
    ngx_uint_t   i;

    if (name->len > 5 && ngx_strncmp(name->data, "http_", 5) == 0) {
        value->header = NGX_HTTP_PLAYARR_METRICS_REQUEST;
        n = 5;

    } else if (name->len > 14
               && ngx_strncmp(name->data, "upstream_http_", 14) == 0)
    {
        value->header = NGX_HTTP_PLAYARR_METRICS_UPSTREAM;
        n = 14;

    } else {
        return NGX_DECLINED;
    }

    value->name.len = name->len - n;

    if (value->name.len == 6
        && ngx_strncasecmp(name->data + n, (u_char *) "cookie", 6) == 0)
    {
        value->header = NGX_HTTP_PLAYARR_METRICS_VARIABLE;
        return NGX_DECLINED;
    }

    value->name.data = ngx_pnalloc(cf->pool, value->name.len);
    if (value->name.data == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < value->name.len; i++) {
        value->name.data[i] = (name->data[n + i] == '_')
                              ? '-' : ngx_tolower(name->data[n + i]);
    }

    value->hash = ngx_hash_key(value->name.data, value->name.len);

    return NGX_OK;
}


static char *
ngx_http_playarr_metrics_buckets(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_playarr_metrics_loc_conf_t *plcf = conf;

    char        *end;
    double      *b, prev;
    ngx_str_t   *value;
    ngx_uint_t   i, n;

    ngx_http_playarr_metrics_note(cf, cmd);

    if (plcf->buckets) {
        return "is duplicate";
    }

    value = cf->args->elts;
    n = cf->args->nelts - 1;

    if (n > NGX_HTTP_PLAYARR_METRICS_MAX_BUCKETS) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many buckets, the maximum is %d",
                           NGX_HTTP_PLAYARR_METRICS_MAX_BUCKETS);
        return NGX_CONF_ERROR;
    }

    plcf->buckets = ngx_array_create(cf->pool, n, sizeof(double));
    if (plcf->buckets == NULL) {
        return NGX_CONF_ERROR;
    }

    prev = 0;

    for (i = 1; i <= n; i++) {
        b = ngx_array_push(plcf->buckets);
        if (b == NULL) {
            return NGX_CONF_ERROR;
        }

        /* arguments are null-terminated */

        errno = 0;
        *b = strtod((char *) value[i].data, &end);

        if (value[i].len == 0 || errno
            || end != (char *) value[i].data + value[i].len
            || !isfinite(*b) || *b <= 0
            || value[i].data[0] == ' ')
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid bucket \"%V\", expected a positive "
                               "number", &value[i]);
            return NGX_CONF_ERROR;
        }

        if (*b <= prev) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "bucket \"%V\" is not greater than the one "
                               "before it", &value[i]);
            return NGX_CONF_ERROR;
        }

        prev = *b;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_playarr_metrics_token_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_playarr_metrics_main_conf_t *pmcf = conf;

    ngx_str_t     *value;
    struct group  *grp;

    ngx_http_playarr_metrics_note(cf, cmd);

    if (pmcf->token.path.len) {
        return "is duplicate";
    }

    value = cf->args->elts;

    pmcf->token.path = value[1];
    pmcf->token.group = NULL;

    if (ngx_conf_full_name(cf->cycle, &pmcf->token.path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (cf->args->nelts == 3) {

        if (value[2].len <= 6
            || ngx_strncmp(value[2].data, "group=", 6) != 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[2]);
            return NGX_CONF_ERROR;
        }

        /* the words of a configuration are null-terminated */

        ngx_set_errno(0);
        grp = getgrnam((const char *) value[2].data + 6);

        if (grp == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                               "unknown group \"%s\"", value[2].data + 6);
            return NGX_CONF_ERROR;
        }

        pmcf->token.gid = grp->gr_gid;
        pmcf->token.group = value[2].data + 6;
    }

    /* read, or created, here so that errors point at this directive */

    if (ngx_http_playarr_metrics_token_init(cf, &pmcf->token) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_playarr_metrics_handler(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_playarr_metrics_loc_conf_t *plcf = conf;

    ngx_str_t                 *value;
    ngx_http_core_loc_conf_t  *clcf;

    ngx_http_playarr_metrics_note(cf, cmd);

    if (plcf->handler) {
        return "is duplicate";
    }

    value = cf->args->elts;
    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    plcf->handler = cmd->offset;
    plcf->handler_name = cmd->name;
    plcf->handler_file = cf->conf_file->file.name;
    plcf->handler_line = cf->conf_file->line;

    switch (plcf->handler) {

    case NGX_HTTP_PLAYARR_METRICS_EXPORT:
        plcf->format = NGX_HTTP_PLAYARR_METRICS_PROMETHEUS;

        if (cf->args->nelts == 2) {

            if (ngx_strcmp(value[1].data, "json") == 0) {
                plcf->format = NGX_HTTP_PLAYARR_METRICS_JSON;

            } else if (ngx_strcmp(value[1].data, "prometheus") != 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid parameter \"%V\"", &value[1]);
                return NGX_CONF_ERROR;
            }
        }

        clcf->handler = ngx_http_playarr_metrics_export_handler;
        break;

    case NGX_HTTP_PLAYARR_METRICS_PUSH:
        clcf->handler = ngx_http_playarr_metrics_push_handler;
        break;

    default: /* NGX_HTTP_PLAYARR_METRICS_ADMIN */
        clcf->handler = ngx_http_playarr_metrics_admin_handler;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_playarr_metrics_upstream_header(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_playarr_metrics_loc_conf_t *plcf = conf;

    return ngx_http_playarr_metrics_set_name(cf, cmd, &plcf->upstream_header,
                                NGX_HTTP_PLAYARR_METRICS_NAME_HEADER);
}


static char *
ngx_http_playarr_metrics_state_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_playarr_metrics_main_conf_t *pmcf = conf;

    ngx_str_t   *value, s;
    ngx_msec_t   every;

    ngx_http_playarr_metrics_note(cf, cmd);

    if (pmcf->state_file.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    every = NGX_HTTP_PLAYARR_METRICS_SAVE_EVERY;

    if (cf->args->nelts == 3) {
        if (ngx_strncmp(value[2].data, "interval=", 9) != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[2]);
            return NGX_CONF_ERROR;
        }

        s.data = value[2].data + 9;
        s.len = value[2].len - 9;

        every = ngx_parse_time(&s, 0);

        if (every == (ngx_msec_t) NGX_ERROR || every < 1000) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid interval \"%V\", at least 1s",
                               &value[2]);
            return NGX_CONF_ERROR;
        }
    }

    pmcf->save_every = every;
    pmcf->state_file = value[1];

    if (ngx_conf_full_name(cf->cycle, &pmcf->state_file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * The state file is saved by the master when nginx stops, and every
 * minute by the first worker, so that a crash of the whole server loses
 * a minute at most.  The first worker also looks every second for a
 * binary upgrade of its master, and saves at once for the new binary.
 * With threads, the worker's saves run in nginx's thread pool "default",
 * one at a time, and its event loop goes on meanwhile.
 */

static ngx_int_t
ngx_http_playarr_metrics_init_process(ngx_cycle_t *cycle)
{
    ngx_http_playarr_metrics_main_conf_t  *pmcf;
#if (NGX_THREADS)
    ngx_thread_task_t                     *task;
    ngx_http_playarr_metrics_save_ctx_t   *ctx;
#endif

    pmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                            ngx_http_playarr_metrics_module);

    if (pmcf && pmcf->store
        && (ngx_http_playarr_metrics_session_init_process(cycle, pmcf)
            != NGX_OK
            || ngx_http_playarr_metrics_in_flight_init(cycle, pmcf) != NGX_OK))
    {
        return NGX_ERROR;
    }

    if (pmcf == NULL || pmcf->store == NULL || pmcf->state_file.len == 0
        || ngx_process != NGX_PROCESS_WORKER || ngx_worker != 0)
    {
        return NGX_OK;
    }

#if (NGX_THREADS)

    if (pmcf->thread_pool) {
        task = ngx_thread_task_alloc(cycle->pool,
                                 sizeof(ngx_http_playarr_metrics_save_ctx_t));
        if (task == NULL) {
            return NGX_ERROR;
        }

        ctx = task->ctx;

        ctx->sv.temp = ngx_pnalloc(cycle->pool,
                   NGX_HTTP_PLAYARR_METRICS_SAVE_TEMP_LEN(&pmcf->state_file));
        if (ctx->sv.temp == NULL) {
            return NGX_ERROR;
        }

        ctx->store = pmcf->store;
        ctx->path = &pmcf->state_file;
        ctx->sv.keep = 1;

        task->handler = ngx_http_playarr_metrics_save_thread;
        task->event.handler = ngx_http_playarr_metrics_save_done;
        task->event.data = pmcf;
        task->event.log = cycle->log;

        pmcf->save_task = task;
    }

#endif

    pmcf->save.handler = ngx_http_playarr_metrics_save_handler;
    pmcf->save.data = pmcf;
    pmcf->save.log = cycle->log;
    pmcf->save.cancelable = 1;

    pmcf->save_next = ngx_current_msec + pmcf->save_every;

    ngx_add_timer(&pmcf->save, NGX_HTTP_PLAYARR_METRICS_SAVE_TICK);

    return NGX_OK;
}


static void
ngx_http_playarr_metrics_save_handler(ngx_event_t *ev)
{
    ngx_http_playarr_metrics_main_conf_t *pmcf = ev->data;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    ngx_add_timer(ev, NGX_HTTP_PLAYARR_METRICS_SAVE_TICK);

    ngx_http_playarr_metrics_save_check(pmcf, ev->log);
}


/* a save for the new binary, or the periodic one, when none is running */

static void
ngx_http_playarr_metrics_save_check(
    ngx_http_playarr_metrics_main_conf_t *pmcf, ngx_log_t *log)
{
    ngx_file_info_t  fi;

    if (ngx_http_playarr_metrics_state_oldbin(pmcf->store->oldpid,
                                              ngx_parent, &fi)
        == NGX_OK)
    {
        /*
         * the new binary starts from this save; later ones would only
         * overwrite its own.  A save still running was begun before the
         * upgrade: this one starts when it ends.
         */

        if (fi.st_ctim.tv_sec == pmcf->handoff.tv_sec
            && fi.st_ctim.tv_nsec == pmcf->handoff.tv_nsec)
        {
            return;
        }

        if (ngx_http_playarr_metrics_save_start(pmcf, 1, log) != NGX_BUSY) {
            pmcf->handoff = fi.st_ctim;
        }

        return;
    }

    if ((ngx_msec_int_t) (ngx_current_msec - pmcf->save_next) < 0) {
        return;
    }

    if (ngx_http_playarr_metrics_save_start(pmcf, 0, log) != NGX_BUSY) {
        pmcf->save_next = ngx_current_msec + pmcf->save_every;
    }
}


/* NGX_BUSY while a save runs, NGX_OK when one is started or done */

static ngx_int_t
ngx_http_playarr_metrics_save_start(
    ngx_http_playarr_metrics_main_conf_t *pmcf, ngx_uint_t handoff,
    ngx_log_t *log)
{
#if (NGX_THREADS)
    ngx_thread_task_t                    *task;
    ngx_http_playarr_metrics_save_ctx_t  *ctx;

    task = pmcf->save_task;

    if (task) {
        if (task->event.active) {
            return NGX_BUSY;
        }

        ctx = task->ctx;
        ctx->handoff = handoff;
        ctx->done = 0;

        if (ngx_thread_task_post(pmcf->thread_pool, task) == NGX_OK) {
            return NGX_OK;
        }

        /* the pool's queue is full: the save is made here and now */
    }
#endif

    if (ngx_http_playarr_metrics_state_save(pmcf->store, &pmcf->state_file,
                                            log)
        == NGX_OK
        && handoff)
    {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "playarr_metrics state saved to \"%V\" "
                      "for the new binary", &pmcf->state_file);
    }

    return NGX_OK;
}


#if (NGX_THREADS)

/*
 * Whether the event method can end a thread's task in the event loop
 * (the pool cannot run without): poll and select cannot.  An events
 * block that comes after http is not known yet; epoll, the default, can.
 */

static ngx_uint_t
ngx_http_playarr_metrics_notify(ngx_conf_t *cf)
{
    ngx_uint_t           m;
    ngx_event_conf_t    *ecf;
    ngx_event_module_t  *module;

    if (ngx_get_conf(cf->cycle->conf_ctx, ngx_events_module) == NULL) {
        return 1;
    }

    ecf = ngx_event_get_conf(cf->cycle->conf_ctx, ngx_event_core_module);

    for (m = 0; cf->cycle->modules[m]; m++) {
        if (cf->cycle->modules[m]->type != NGX_EVENT_MODULE
            || cf->cycle->modules[m]->ctx_index != ecf->use)
        {
            continue;
        }

        module = cf->cycle->modules[m]->ctx;

        if (module->actions.notify) {
            return 1;
        }

        ngx_conf_log_error(NGX_LOG_NOTICE, cf, 0,
                           "the event method \"%s\" cannot end a thread's "
                           "task: playarr_metrics_state_file is saved in "
                           "the worker's event loop", module->name->data);
        return 0;
    }

    return 1;
}


/* in a thread: nothing here logs, locks or touches the event loop */

static void
ngx_http_playarr_metrics_save_thread(void *data, ngx_log_t *log)
{
    ngx_http_playarr_metrics_save_ctx_t *ctx = data;

    (void) ngx_http_playarr_metrics_state_save_quiet(ctx->store, ctx->path,
                                                     &ctx->sv);

    ngx_memory_barrier();

    ctx->done = 1;
}


static void
ngx_http_playarr_metrics_save_done(ngx_event_t *ev)
{
    ngx_http_playarr_metrics_main_conf_t *pmcf = ev->data;

    ngx_http_playarr_metrics_save_report(pmcf, ev->log);

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    /* a save for the new binary may have waited for this one */

    ngx_http_playarr_metrics_save_check(pmcf, ev->log);
}


static void
ngx_http_playarr_metrics_save_report(
    ngx_http_playarr_metrics_main_conf_t *pmcf, ngx_log_t *log)
{
    ngx_http_playarr_metrics_save_ctx_t  *ctx;

    ctx = pmcf->save_task->ctx;

    if (ctx->sv.step != NGX_HTTP_PLAYARR_METRICS_SAVE_OK) {
        ngx_http_playarr_metrics_state_save_log(ctx->path, &ctx->sv, log);
        return;
    }

    if (ctx->handoff) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "playarr_metrics state saved to \"%V\" "
                      "for the new binary", ctx->path);
    }
}


/*
 * A worker that exits has its thread pool joined first (the pool's module
 * comes before this one): a save that was running has ended, file renamed
 * or removed, but its end was not seen by the event loop.  It is said here.
 */

static void
ngx_http_playarr_metrics_save_exit(ngx_cycle_t *cycle)
{
    ngx_http_playarr_metrics_main_conf_t  *pmcf;
    ngx_http_playarr_metrics_save_ctx_t   *ctx;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                            ngx_http_playarr_metrics_module);

    if (pmcf == NULL || pmcf->save_task == NULL
        || !pmcf->save_task->event.active)
    {
        return;
    }

    ctx = pmcf->save_task->ctx;

    if (ctx->done) {
        ngx_memory_barrier();
        ngx_http_playarr_metrics_save_report(pmcf, cycle->log);
    }
}

#endif


static void
ngx_http_playarr_metrics_exit_master(ngx_cycle_t *cycle)
{
    ngx_http_playarr_metrics_main_conf_t  *pmcf;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                            ngx_http_playarr_metrics_module);

    if (pmcf == NULL || pmcf->store == NULL || pmcf->state_file.len == 0
        || pmcf->store->sh == NULL)
    {
        return;
    }

    if (ngx_new_binary) {
        ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                      "playarr_metrics state not saved to \"%V\": "
                      "the new binary %P keeps it", &pmcf->state_file,
                      ngx_new_binary);
        return;
    }

    if (ngx_http_playarr_metrics_state_save(pmcf->store, &pmcf->state_file,
                                            cycle->log)
        == NGX_OK)
    {
        ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                      "playarr_metrics state saved to \"%V\"",
                      &pmcf->state_file);
    }
}
