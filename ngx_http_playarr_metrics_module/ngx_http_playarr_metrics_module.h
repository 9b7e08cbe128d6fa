
/*
 * Copyright (C) Playarr metrics module authors
 */


#ifndef _NGX_HTTP_PLAYARR_METRICS_MODULE_H_INCLUDED_
#define _NGX_HTTP_PLAYARR_METRICS_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

/* the module's own symbols are not exported: see the store's header */
#if (__GNUC__ >= 4 || __clang__)
#pragma GCC visibility push(hidden)
#endif

#include <ngx_http_playarr_metrics_store.h>
#include <ngx_http_playarr_metrics_route.h>
#include <ngx_http_playarr_metrics_token.h>
#include <ngx_http_playarr_metrics_jwt.h>


#define NGX_HTTP_PLAYARR_METRICS_VERSION      "0.1.0"

#define NGX_HTTP_PLAYARR_METRICS_FORMAT_PROMETHEUS  1
#define NGX_HTTP_PLAYARR_METRICS_FORMAT_JSON        2

/* the built-in HTTP families, in the order of docs/metrics.md */
#define NGX_HTTP_PLAYARR_METRICS_FAMILY_REQUESTS     0
#define NGX_HTTP_PLAYARR_METRICS_FAMILY_DURATION     1
#define NGX_HTTP_PLAYARR_METRICS_FAMILY_AUTH_FAILED  2
#define NGX_HTTP_PLAYARR_METRICS_FAMILY_ERRORS       3
#define NGX_HTTP_PLAYARR_METRICS_FAMILY_HTTP_COUNT   4

#define NGX_HTTP_PLAYARR_METRICS_UNKNOWN      "unknown_endpoint"
#define NGX_HTTP_PLAYARR_METRICS_ANONYMOUS    "anonymous"

/* the content handlers */
#define NGX_HTTP_PLAYARR_METRICS_HANDLER_EXPORT  1
#define NGX_HTTP_PLAYARR_METRICS_HANDLER_PUSH    2
#define NGX_HTTP_PLAYARR_METRICS_HANDLER_ADMIN   3

/* update operations, in the order of ngx_http_playarr_metrics_ops[] */
#define NGX_HTTP_PLAYARR_METRICS_OP_INC      0
#define NGX_HTTP_PLAYARR_METRICS_OP_DEC      1
#define NGX_HTTP_PLAYARR_METRICS_OP_SET      2
#define NGX_HTTP_PLAYARR_METRICS_OP_OBSERVE  3
#define NGX_HTTP_PLAYARR_METRICS_OP_RESET    4

#define NGX_HTTP_PLAYARR_METRICS_NAME_MAX     128
#define NGX_HTTP_PLAYARR_METRICS_BODY_MAX     (1024 * 1024)
#define NGX_HTTP_PLAYARR_METRICS_SAVE_EVERY   60000
#define NGX_HTTP_PLAYARR_METRICS_SAVE_TICK    1000

/* playarr_metrics_auth: any of them lets a request in; 0 is "off" */
#define NGX_HTTP_PLAYARR_METRICS_AUTH_BEARER      1
#define NGX_HTTP_PLAYARR_METRICS_AUTH_JWT         2

/* what a request's session cookie is */
#define NGX_HTTP_PLAYARR_METRICS_SESSION_NONE     0
#define NGX_HTTP_PLAYARR_METRICS_SESSION_INVALID  1
#define NGX_HTTP_PLAYARR_METRICS_SESSION_VALID    2

/* the app's families (merge.c): the store's three types, and these */
#define NGX_HTTP_PLAYARR_METRICS_TYPE_SUMMARY  3
#define NGX_HTTP_PLAYARR_METRICS_TYPE_UNTYPED  4

/* what a merge reads at most */
#define NGX_HTTP_PLAYARR_METRICS_MERGE_MAX    (16 * 1024 * 1024)

/*
 * A rare path kept out of the frame of the hot function that calls it;
 * a small or hot helper inlined into each of its callers, whatever its
 * size (the per-series code of format.c, the recording's lookup).
 */
#if (__GNUC__ || __clang__)
#define ngx_http_playarr_metrics_noinline  __attribute__((noinline))
#define ngx_http_playarr_metrics_inline                                       \
    ngx_inline __attribute__((always_inline))
#else
#define ngx_http_playarr_metrics_noinline
#define ngx_http_playarr_metrics_inline    ngx_inline
#endif

/* where a value is read from */
#define NGX_HTTP_PLAYARR_METRICS_FROM_VARIABLE  0
#define NGX_HTTP_PLAYARR_METRICS_FROM_REQUEST   1
#define NGX_HTTP_PLAYARR_METRICS_FROM_UPSTREAM  2


/* the body of an export, rendered step by step (format.c) */
typedef struct ngx_http_playarr_metrics_render_s
    ngx_http_playarr_metrics_render_t;


typedef struct {
    ngx_http_playarr_metrics_family_conf_t  *family;
    ngx_uint_t                               op;
    double                                   value;
    u_char                                  *key;
    size_t                                   len;
} ngx_http_playarr_metrics_update_t;


typedef struct ngx_http_playarr_metrics_recent_s
    ngx_http_playarr_metrics_recent_t;
typedef struct ngx_http_playarr_metrics_path_s
    ngx_http_playarr_metrics_path_t;


/* an export being sent, a merge's subrequest (handler.c) */
typedef struct ngx_http_playarr_metrics_export_s
    ngx_http_playarr_metrics_export_t;
typedef struct ngx_http_playarr_metrics_merge_s
    ngx_http_playarr_metrics_merge_t;


/*
 * The module's request context, one struct for every part that keeps
 * something for a request, made by the first of them that needs it
 * (ngx_http_playarr_metrics_ctx()): the updates upstream response
 * headers carry, the export, the merge.  An internal redirect clears it:
 * the export and the merge are made by a content handler, after any
 * redirect, and the headers by the header filter.
 */

typedef struct {
    ngx_array_t                          headers;      /* ngx_str_t */
    ngx_http_playarr_metrics_export_t   *export;
    ngx_http_playarr_metrics_merge_t    *merge;
} ngx_http_playarr_metrics_ctx_t;


/* the app's exposition, parsed (merge.c) */

typedef struct {
    ngx_str_t                            name;
    ngx_str_t                           *labels;       /* name, value */
    ngx_uint_t                           nlabels;
    ngx_str_t                            value;        /* as written */
    ngx_str_t                            timestamp;    /* or empty */
} ngx_http_playarr_metrics_sample_t;


typedef struct {
    ngx_str_t                            name;
    ngx_str_t                            help;         /* unescaped */
    ngx_uint_t                           type;
    ngx_array_t                          samples;      /* sample_t */
    ngx_str_t                            json;         /* JSON: all of it */
    unsigned                             has_help:1;
    unsigned                             has_type:1;
    unsigned                             dropped:1;    /* nginx's served */
} ngx_http_playarr_metrics_app_family_t;


typedef struct {
    ngx_array_t                          families;     /* app_family_t */
    ngx_uint_t                          *hash;         /* index + 1 */
    ngx_uint_t                           size;
} ngx_http_playarr_metrics_app_t;


typedef struct {
    ngx_shm_zone_t                      *shm_zone;
    ngx_http_playarr_metrics_store_t    *store;
    ngx_http_playarr_metrics_token_t     token;
    ngx_array_t                          schema;       /* family_conf_t */
    ngx_uint_t                           max_series;
    ngx_str_t                            state_file;
    ngx_str_t                           *oldpid;       /* core's ".oldbin" */
    ngx_msec_t                           save_every;
    ngx_msec_t                           save_next;
    ngx_event_t                          save;
    struct timespec                      handoff;      /* ".oldbin" ctime */
#if (NGX_THREADS)
    ngx_thread_pool_t                   *thread_pool;  /* "default" */
    ngx_thread_task_t                   *save_task;    /* one at a time */
#endif
    ngx_array_t                         *buckets;      /* default, double */
    ngx_array_t                         *bounds_ids;   /* of locations */
    ngx_int_t                            endpoint;     /* variable index */
    ngx_int_t                            route_user;   /* variable index */
    ngx_int_t                            path;         /* variable index */
    ngx_str_t                            jwt_secret;
    ngx_http_playarr_metrics_jwt_cache_t  *jwt_cache;  /* per worker */
    ngx_http_playarr_metrics_recent_t   *recent;       /* per worker */
    ngx_http_playarr_metrics_path_t     *paths;        /* per worker */
    ngx_uint_t                           merges;       /* any _merge */
    ngx_uint_t                           upstream_headers;  /* any */

    /* where a directive of the module was first used, for errors */
    ngx_str_t                            used_file;
    ngx_uint_t                           used_line;
    ngx_str_t                            used_name;
} ngx_http_playarr_metrics_main_conf_t;


typedef struct {
    ngx_http_playarr_metrics_routes_t   *routes;
    ngx_str_t                            jwt_cookie;
} ngx_http_playarr_metrics_srv_conf_t;


/*
 * A value of playarr_metrics_username or _error_type: a complex value, or
 * one variable read by its index, or one request or upstream response
 * header found by its hash, without nginx's byte-by-byte name compare.
 */

typedef struct {
    ngx_int_t                            index;
    ngx_http_complex_value_t            *value;
    ngx_uint_t                           header;
    ngx_uint_t                           hash;
    ngx_str_t                            name;         /* lowercase */
} ngx_http_playarr_metrics_value_t;


typedef struct {
    ngx_flag_t                           enable;
    ngx_array_t                         *username;     /* _value_t */
    ngx_http_playarr_metrics_value_t    *error_type;
    ngx_array_t                         *buckets;      /* double */
    ngx_uint_t                           bounds_id;

    ngx_uint_t                           handler;      /* export, ... */
    ngx_uint_t                           format;
    ngx_uint_t                           auth;
    ngx_str_t                            auth_role;    /* of a jwt session */
    ngx_str_t                            upstream_header;
    ngx_str_t                            merge;        /* URI */
    ngx_str_t                            merge_file;
    ngx_uint_t                           merge_line;

    ngx_str_t                            handler_name;
    ngx_str_t                            handler_file;
    ngx_uint_t                           handler_line;
} ngx_http_playarr_metrics_loc_conf_t;


/* the request path (record.c) */
ngx_int_t ngx_http_playarr_metrics_add_variables(ngx_conf_t *cf);
ngx_int_t ngx_http_playarr_metrics_record_init(ngx_conf_t *cf,
    ngx_http_playarr_metrics_main_conf_t *pmcf);
ngx_int_t ngx_http_playarr_metrics_record_init_process(ngx_cycle_t *cycle,
    ngx_http_playarr_metrics_main_conf_t *pmcf);
void ngx_http_playarr_metrics_record_exit_process(void);

/* the families and the schema (family.c) */
ngx_array_t *ngx_http_playarr_metrics_buckets_default(ngx_conf_t *cf);
ngx_int_t ngx_http_playarr_metrics_add_builtins(ngx_conf_t *cf,
    ngx_http_playarr_metrics_main_conf_t *pmcf);
ngx_int_t ngx_http_playarr_metrics_bounds_used(ngx_conf_t *cf,
    ngx_http_playarr_metrics_main_conf_t *pmcf, ngx_uint_t bounds_id);
char *ngx_http_playarr_metrics_schema_read(ngx_conf_t *cf,
    ngx_http_playarr_metrics_main_conf_t *pmcf, ngx_str_t *path);
ngx_uint_t ngx_http_playarr_metrics_valid_name(u_char *p, size_t len,
    ngx_uint_t label);
char *ngx_http_playarr_metrics_schema_load(ngx_conf_t *cf,
    ngx_array_t *families, ngx_str_t *path);

/* the state file (persist.c) */
ngx_int_t ngx_http_playarr_metrics_persist_conf(ngx_conf_t *cf,
    ngx_http_playarr_metrics_main_conf_t *pmcf);
ngx_int_t ngx_http_playarr_metrics_persist_init_module(ngx_cycle_t *cycle);
ngx_int_t ngx_http_playarr_metrics_persist_init_process(ngx_cycle_t *cycle,
    ngx_http_playarr_metrics_main_conf_t *pmcf);
void ngx_http_playarr_metrics_persist_exit_process(ngx_cycle_t *cycle);
void ngx_http_playarr_metrics_persist_exit_master(ngx_cycle_t *cycle);

ngx_int_t ngx_http_playarr_metrics_send(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *content_type, ngx_str_t *body);
ngx_int_t ngx_http_playarr_metrics_export_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_playarr_metrics_push_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_playarr_metrics_admin_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_playarr_metrics_merge_filter_init(ngx_conf_t *cf);
char *ngx_http_playarr_metrics_set_merge(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
void ngx_http_playarr_metrics_reject(ngx_http_playarr_metrics_store_t *store,
    ngx_uint_t source, ngx_uint_t reason, ngx_log_t *log, ngx_str_t *err);

char *ngx_http_playarr_metrics_set_jwt_secret(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
ngx_int_t ngx_http_playarr_metrics_session_add_variables(ngx_conf_t *cf);
ngx_int_t ngx_http_playarr_metrics_session_init_process(ngx_cycle_t *cycle,
    ngx_http_playarr_metrics_main_conf_t *pmcf);
ngx_uint_t ngx_http_playarr_metrics_session(ngx_http_request_t *r,
    ngx_http_playarr_metrics_jwt_claims_t **claims,
    ngx_http_playarr_metrics_jwt_claims_t *tmp);
ngx_int_t ngx_http_playarr_metrics_session_check(ngx_http_request_t *r,
    ngx_str_t *role, ngx_str_t *body);

ngx_int_t ngx_http_playarr_metrics_updates_parse(ngx_pool_t *pool,
    ngx_http_playarr_metrics_store_t *store, u_char *data, size_t len,
    ngx_array_t *updates, ngx_str_t *err, ngx_int_t *index);
void ngx_http_playarr_metrics_updates_apply(
    ngx_http_playarr_metrics_store_t *store, ngx_array_t *updates,
    ngx_uint_t source, ngx_log_t *log);

ngx_chain_t *ngx_http_playarr_metrics_prometheus(ngx_http_request_t *r,
    ngx_http_playarr_metrics_main_conf_t *pmcf, off_t *len);
ngx_chain_t *ngx_http_playarr_metrics_json(ngx_http_request_t *r,
    ngx_http_playarr_metrics_main_conf_t *pmcf, off_t *len);
ngx_http_playarr_metrics_render_t *ngx_http_playarr_metrics_render_create(
    ngx_http_request_t *r, ngx_http_playarr_metrics_store_t *store,
    ngx_uint_t format, ngx_buf_tag_t tag);
ngx_int_t ngx_http_playarr_metrics_render(
    ngx_http_playarr_metrics_render_t *w, ngx_chain_t **free, size_t limit,
    ngx_chain_t **out);

ngx_int_t ngx_http_playarr_metrics_render_merge(
    ngx_http_playarr_metrics_render_t *w, ngx_http_playarr_metrics_app_t *app,
    ngx_uint_t up);

ngx_int_t ngx_http_playarr_metrics_merge_parse(ngx_pool_t *pool,
    u_char *data, size_t len, ngx_http_playarr_metrics_app_t **app,
    ngx_str_t *err);
ngx_int_t ngx_http_playarr_metrics_merge_json(ngx_pool_t *pool,
    u_char *data, size_t len, ngx_http_playarr_metrics_app_t **app,
    ngx_str_t *err);
ngx_http_playarr_metrics_app_family_t *ngx_http_playarr_metrics_merge_find(
    ngx_http_playarr_metrics_app_t *app, u_char *name, size_t len);
ngx_http_playarr_metrics_app_family_t *ngx_http_playarr_metrics_merge_owner(
    ngx_http_playarr_metrics_app_t *app, u_char *name, size_t len);
ngx_uint_t ngx_http_playarr_metrics_merge_number(u_char *p, size_t len);
size_t ngx_http_playarr_metrics_merge_header_size(
    ngx_http_playarr_metrics_app_family_t *f);
u_char *ngx_http_playarr_metrics_merge_header(u_char *p,
    ngx_http_playarr_metrics_app_family_t *f);
size_t ngx_http_playarr_metrics_merge_sample_size(
    ngx_http_playarr_metrics_sample_t *s);
u_char *ngx_http_playarr_metrics_merge_sample_text(u_char *p,
    ngx_http_playarr_metrics_sample_t *s);


extern ngx_module_t  ngx_http_playarr_metrics_module;


/* the request's context, made when first asked for */

static ngx_inline ngx_http_playarr_metrics_ctx_t *
ngx_http_playarr_metrics_ctx(ngx_http_request_t *r)
{
    ngx_http_playarr_metrics_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_playarr_metrics_module);

    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_playarr_metrics_ctx_t));
        if (ctx == NULL) {
            return NULL;
        }

        ngx_http_set_ctx(r, ctx, ngx_http_playarr_metrics_module);
    }

    return ctx;
}


#if (__GNUC__ >= 4 || __clang__)
#pragma GCC visibility pop
#endif


#endif /* _NGX_HTTP_PLAYARR_METRICS_MODULE_H_INCLUDED_ */
