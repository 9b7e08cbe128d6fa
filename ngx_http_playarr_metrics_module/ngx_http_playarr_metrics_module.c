
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


static void ngx_http_playarr_metrics_exit_process(ngx_cycle_t *cycle);
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
static ngx_int_t ngx_http_playarr_metrics_init_process(ngx_cycle_t *cycle);
static void ngx_http_playarr_metrics_note(ngx_conf_t *cf,
    ngx_command_t *cmd);
static char *ngx_http_playarr_metrics_set_zone(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_playarr_metrics_set_slot(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_playarr_metrics_set_route(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_playarr_metrics_set_values(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_playarr_metrics_value(ngx_conf_t *cf,
    ngx_str_t *arg, ngx_http_playarr_metrics_value_t *value);
static ngx_int_t ngx_http_playarr_metrics_header_value(ngx_conf_t *cf,
    ngx_str_t *name, ngx_http_playarr_metrics_value_t *value);
static char *ngx_http_playarr_metrics_set_buckets(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_playarr_metrics_set_token_file(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_playarr_metrics_set_state_file(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_playarr_metrics_set_jwt_secret_file(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_playarr_metrics_set_jwt_cookie(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_playarr_metrics_set_auth(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_playarr_metrics_set_name(ngx_conf_t *cf,
    ngx_command_t *cmd, ngx_str_t *name, ngx_uint_t kind);
static char *ngx_http_playarr_metrics_set_handler(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_playarr_metrics_set_upstream_header(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_playarr_metrics_set_schema(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);


static ngx_command_t  ngx_http_playarr_metrics_commands[] = {

    { ngx_string("playarr_metrics_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_playarr_metrics_set_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("playarr_metrics"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_http_playarr_metrics_set_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_playarr_metrics_loc_conf_t, enable),
      NULL },

    { ngx_string("playarr_metrics_route"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_TAKE1,
      ngx_http_playarr_metrics_set_route,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("playarr_metrics_username"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_playarr_metrics_set_values,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_playarr_metrics_loc_conf_t, username),
      NULL },

    { ngx_string("playarr_metrics_error_type"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_playarr_metrics_set_values,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_playarr_metrics_loc_conf_t, error_type),
      NULL },

    { ngx_string("playarr_metrics_buckets"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_playarr_metrics_set_buckets,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("playarr_metrics_token_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_playarr_metrics_set_token_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("playarr_metrics_state_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_playarr_metrics_set_state_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("playarr_metrics_schema"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_playarr_metrics_set_schema,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("playarr_metrics_export"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS|NGX_CONF_TAKE1,
      ngx_http_playarr_metrics_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_HTTP_PLAYARR_METRICS_HANDLER_EXPORT,
      NULL },

    { ngx_string("playarr_metrics_merge"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_playarr_metrics_set_merge,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("playarr_metrics_push"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_playarr_metrics_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_HTTP_PLAYARR_METRICS_HANDLER_PUSH,
      NULL },

    { ngx_string("playarr_metrics_token_admin"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_playarr_metrics_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_HTTP_PLAYARR_METRICS_HANDLER_ADMIN,
      NULL },

    { ngx_string("playarr_metrics_upstream_header"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_playarr_metrics_set_upstream_header,
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
      ngx_http_playarr_metrics_set_jwt_secret_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("playarr_metrics_jwt_cookie"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_TAKE1,
      ngx_http_playarr_metrics_set_jwt_cookie,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_http_playarr_metrics_srv_conf_t, jwt_cookie),
      NULL },

    { ngx_string("playarr_metrics_max_series"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_playarr_metrics_set_slot,
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
    ngx_http_playarr_metrics_persist_init_module, /* init module */
    ngx_http_playarr_metrics_init_process,   /* init process */
    NULL,                                    /* init thread */
    NULL,                                    /* exit thread */
    ngx_http_playarr_metrics_exit_process,   /* exit process */
    ngx_http_playarr_metrics_persist_exit_master, /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_playarr_metrics_init_process(ngx_cycle_t *cycle)
{
    ngx_http_playarr_metrics_main_conf_t  *pmcf;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                            ngx_http_playarr_metrics_module);

    if (pmcf == NULL || pmcf->store == NULL) {
        return NGX_OK;
    }

    if (ngx_http_playarr_metrics_session_init_process(cycle, pmcf) != NGX_OK
        || ngx_http_playarr_metrics_record_init_process(cycle, pmcf) != NGX_OK
        || ngx_http_playarr_metrics_persist_init_process(cycle, pmcf)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_playarr_metrics_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_playarr_metrics_persist_exit_process(cycle);
    ngx_http_playarr_metrics_record_exit_process();
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
    pmcf->path = NGX_ERROR;

    return pmcf;
}


static char *
ngx_http_playarr_metrics_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_playarr_metrics_main_conf_t *pmcf = conf;

    ngx_core_conf_t  *ccf;

    ngx_conf_init_uint_value(pmcf->max_series, 10000);

    pmcf->buckets = ngx_http_playarr_metrics_buckets_default(cf);
    if (pmcf->buckets == NULL) {
        return NGX_CONF_ERROR;
    }

    ccf = (ngx_core_conf_t *) ngx_get_conf(cf->cycle->conf_ctx,
                                           ngx_core_module);

    /* filled in by the core module once the configuration is read */
    pmcf->oldpid = &ccf->oldpid;

    if (pmcf->store) {
        pmcf->store->max_series = pmcf->max_series;
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
    plcf->bounds_id = NGX_CONF_UNSET_UINT;

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
        conf->bounds_id = prev->bounds_id;
    }

    pmcf = ngx_http_conf_get_module_main_conf(cf,
                                            ngx_http_playarr_metrics_module);

    if (conf->buckets && conf->bounds_id == NGX_CONF_UNSET_UINT
        && pmcf->store)
    {
        n = ngx_http_playarr_metrics_store_bounds(pmcf->store, cf->pool,
                                                  conf->buckets);
        if (n == NGX_ERROR) {
            return NGX_CONF_ERROR;
        }

        conf->bounds_id = n;
    }

    /* the duration family's identity includes all the bounds in use */

    if (conf->bounds_id != NGX_CONF_UNSET_UINT && pmcf->store) {
        if (ngx_http_playarr_metrics_bounds_used(cf, pmcf, conf->bounds_id)
            != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    if (conf->merge.len
        && conf->handler != NGX_HTTP_PLAYARR_METRICS_HANDLER_EXPORT)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"playarr_metrics_merge\" needs "
                      "\"playarr_metrics_export\" in the same location "
                      "in %V:%ui", &conf->merge_file, conf->merge_line);
        return NGX_CONF_ERROR;
    }

    if (conf->merge.len) {
        pmcf->merges = 1;
    }

    if (conf->upstream_header.len) {
        pmcf->upstream_headers = 1;
    }

    if (conf->handler == NGX_HTTP_PLAYARR_METRICS_HANDLER_ADMIN
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

    if (ngx_http_playarr_metrics_add_builtins(cf, pmcf) != NGX_OK
        || ngx_http_playarr_metrics_persist_conf(cf, pmcf) != NGX_OK
        || ngx_http_playarr_metrics_record_init(cf, pmcf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* the merge's body filter only when a location merges */

    if (pmcf->merges) {
        return ngx_http_playarr_metrics_merge_filter_init(cf);
    }

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
ngx_http_playarr_metrics_set_slot(ngx_conf_t *cf, ngx_command_t *cmd,
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
ngx_http_playarr_metrics_set_jwt_secret_file(ngx_conf_t *cf, ngx_command_t *cmd,
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
ngx_http_playarr_metrics_set_jwt_cookie(ngx_conf_t *cf, ngx_command_t *cmd,
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
ngx_http_playarr_metrics_set_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
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
ngx_http_playarr_metrics_set_route(ngx_conf_t *cf, ngx_command_t *cmd,
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
ngx_http_playarr_metrics_set_values(ngx_conf_t *cf, ngx_command_t *cmd,
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
    value->header = NGX_HTTP_PLAYARR_METRICS_FROM_VARIABLE;

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
        value->header = NGX_HTTP_PLAYARR_METRICS_FROM_REQUEST;
        n = 5;

    } else if (name->len > 14
               && ngx_strncmp(name->data, "upstream_http_", 14) == 0)
    {
        value->header = NGX_HTTP_PLAYARR_METRICS_FROM_UPSTREAM;
        n = 14;

    } else {
        return NGX_DECLINED;
    }

    value->name.len = name->len - n;

    if (value->name.len == 6
        && ngx_strncasecmp(name->data + n, (u_char *) "cookie", 6) == 0)
    {
        value->header = NGX_HTTP_PLAYARR_METRICS_FROM_VARIABLE;
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
ngx_http_playarr_metrics_set_buckets(ngx_conf_t *cf, ngx_command_t *cmd,
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
ngx_http_playarr_metrics_set_token_file(ngx_conf_t *cf, ngx_command_t *cmd,
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
ngx_http_playarr_metrics_set_handler(ngx_conf_t *cf, ngx_command_t *cmd,
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

    case NGX_HTTP_PLAYARR_METRICS_HANDLER_EXPORT:
        plcf->format = NGX_HTTP_PLAYARR_METRICS_FORMAT_PROMETHEUS;

        if (cf->args->nelts == 2) {

            if (ngx_strcmp(value[1].data, "json") == 0) {
                plcf->format = NGX_HTTP_PLAYARR_METRICS_FORMAT_JSON;

            } else if (ngx_strcmp(value[1].data, "prometheus") != 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid parameter \"%V\"", &value[1]);
                return NGX_CONF_ERROR;
            }
        }

        clcf->handler = ngx_http_playarr_metrics_export_handler;
        break;

    case NGX_HTTP_PLAYARR_METRICS_HANDLER_PUSH:
        clcf->handler = ngx_http_playarr_metrics_push_handler;
        break;

    default: /* NGX_HTTP_PLAYARR_METRICS_HANDLER_ADMIN */
        clcf->handler = ngx_http_playarr_metrics_admin_handler;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_playarr_metrics_set_upstream_header(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_playarr_metrics_loc_conf_t *plcf = conf;

    return ngx_http_playarr_metrics_set_name(cf, cmd, &plcf->upstream_header,
                                NGX_HTTP_PLAYARR_METRICS_NAME_HEADER);
}


static char *
ngx_http_playarr_metrics_set_state_file(ngx_conf_t *cf, ngx_command_t *cmd,
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


static char *
ngx_http_playarr_metrics_set_schema(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_playarr_metrics_main_conf_t *pmcf = conf;

    ngx_str_t  *value, path;

    ngx_http_playarr_metrics_note(cf, cmd);

    if (pmcf->schema.nelts) {
        return "is duplicate";
    }

    value = cf->args->elts;
    path = value[1];

    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return ngx_http_playarr_metrics_schema_read(cf, pmcf, &path);
}
