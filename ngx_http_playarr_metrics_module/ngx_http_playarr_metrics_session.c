
/*
 * Copyright (C) Playarr metrics module authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ngx_http_playarr_metrics_module.h>
#include <ngx_http_playarr_metrics_file.h>


/*
 * Playarr's session: the cookie (access_token unless
 * playarr_metrics_jwt_cookie says otherwise) holds a JWT signed with
 * HS256 under Playarr's JWT_SECRET_KEY, which
 * playarr_metrics_jwt_secret_file names.  See docs/directives.md.
 */


static void ngx_http_playarr_metrics_secret_cleanup(void *data);
static ngx_int_t ngx_http_playarr_metrics_jwt_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_str_t  ngx_http_playarr_metrics_jwt_user_name =
    ngx_string("playarr_metrics_jwt_user");
static ngx_str_t  ngx_http_playarr_metrics_jwt_role_name =
    ngx_string("playarr_metrics_jwt_role");


char *
ngx_http_playarr_metrics_set_jwt_secret(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_playarr_metrics_main_conf_t *pmcf = conf;

    ngx_str_t           *value, path, data;
    ngx_pool_cleanup_t  *cln;

    if (pmcf->jwt_secret.data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    path = value[1];

    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_CONF_ERROR;
    }

    switch (ngx_http_playarr_metrics_file_read(cf, cf->log, NGX_LOG_EMERG,
                                   "playarr_metrics_jwt_secret_file",
                                   path.data,
                                   NGX_HTTP_PLAYARR_METRICS_JWT_SECRET_MAX,
                                   &data, NULL))
    {
    case NGX_OK:
        break;

    case NGX_DECLINED:
        ngx_conf_log_error(NGX_LOG_EMERG, cf, NGX_ENOENT,
                           ngx_open_file_n " \"%s\" failed", path.data);
        return NGX_CONF_ERROR;

    default:
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_playarr_metrics_secret_cleanup;
    cln->data = &pmcf->jwt_secret;

    pmcf->jwt_secret = data;

    /* the file's bytes, a final newline (LF or CRLF) removed */

    if (data.len && data.data[data.len - 1] == LF) {
        data.len--;

        if (data.len && data.data[data.len - 1] == CR) {
            data.len--;
        }
    }

    if (data.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "playarr_metrics_jwt_secret_file \"%s\" is empty",
                           path.data);
        return NGX_CONF_ERROR;
    }

    pmcf->jwt_secret.len = data.len;

    return NGX_CONF_OK;
}


/* the secret does not outlive its configuration in memory */

static void
ngx_http_playarr_metrics_secret_cleanup(void *data)
{
    ngx_str_t *secret = data;

    if (secret->data) {
        ngx_explicit_memzero(secret->data, secret->len);
        ngx_free(secret->data);
        secret->data = NULL;
    }
}


ngx_int_t
ngx_http_playarr_metrics_session_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var;

    var = ngx_http_add_variable(cf, &ngx_http_playarr_metrics_jwt_user_name,
                                0);
    if (var == NULL) {
        return NGX_ERROR;
    }

    var->get_handler = ngx_http_playarr_metrics_jwt_variable;
    var->data = 0;

    var = ngx_http_add_variable(cf, &ngx_http_playarr_metrics_jwt_role_name,
                                0);
    if (var == NULL) {
        return NGX_ERROR;
    }

    var->get_handler = ngx_http_playarr_metrics_jwt_variable;
    var->data = 1;

    return NGX_OK;
}


ngx_int_t
ngx_http_playarr_metrics_session_init(ngx_conf_t *cf,
    ngx_http_playarr_metrics_main_conf_t *pmcf)
{
    pmcf->jwt_user = ngx_http_get_variable_index(cf,
                                     &ngx_http_playarr_metrics_jwt_user_name);
    if (pmcf->jwt_user == NGX_ERROR) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* a worker's cache of sessions, made when it starts */

ngx_int_t
ngx_http_playarr_metrics_session_init_process(ngx_cycle_t *cycle,
    ngx_http_playarr_metrics_main_conf_t *pmcf)
{
    if (pmcf->jwt_secret.len == 0) {
        return NGX_OK;
    }

    pmcf->jwt_cache = ngx_http_playarr_metrics_jwt_cache(cycle->pool);
    if (pmcf->jwt_cache == NULL) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * The request's session: ..._SESSION_NONE (no secret file, or no cookie,
 * or an empty one), ..._INVALID (a cookie that does not verify, has
 * expired or is not yet valid, or is longer than any session), or
 * ..._VALID with *claims set.
 */

ngx_uint_t
ngx_http_playarr_metrics_session(ngx_http_request_t *r,
    ngx_http_playarr_metrics_jwt_claims_t **claims,
    ngx_http_playarr_metrics_jwt_claims_t *tmp)
{
    ngx_str_t                              value;
    ngx_http_playarr_metrics_srv_conf_t   *pscf;
    ngx_http_playarr_metrics_main_conf_t  *pmcf;

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_playarr_metrics_module);

    if (pmcf->jwt_secret.len == 0) {
        return NGX_HTTP_PLAYARR_METRICS_SESSION_NONE;
    }

    pscf = ngx_http_get_module_srv_conf(r, ngx_http_playarr_metrics_module);

#if (nginx_version >= 1023000)
    if (ngx_http_parse_multi_header_lines(r, r->headers_in.cookie,
                                          &pscf->jwt_cookie, &value)
        == NULL)
    {
        return NGX_HTTP_PLAYARR_METRICS_SESSION_NONE;
    }
#else
    if (ngx_http_parse_multi_header_lines(&r->headers_in.cookies,
                                          &pscf->jwt_cookie, &value)
        == NGX_DECLINED)
    {
        return NGX_HTTP_PLAYARR_METRICS_SESSION_NONE;
    }
#endif

    if (value.len == 0) {
        return NGX_HTTP_PLAYARR_METRICS_SESSION_NONE;
    }

    if (value.len > NGX_HTTP_PLAYARR_METRICS_JWT_MAX) {
        return NGX_HTTP_PLAYARR_METRICS_SESSION_INVALID;
    }

    if (pmcf->jwt_cache) {
        *claims = ngx_http_playarr_metrics_jwt_lookup(pmcf->jwt_cache,
                                                      &pmcf->jwt_secret,
                                                      value.data, value.len,
                                                      tmp);

    } else {
        *claims = (ngx_http_playarr_metrics_jwt_verify(&pmcf->jwt_secret,
                                                       value.data, value.len,
                                                       tmp)
                   == NGX_OK) ? tmp : NULL;
    }

    if (*claims == NULL
        || !ngx_http_playarr_metrics_jwt_current(*claims, ngx_time()))
    {
        return NGX_HTTP_PLAYARR_METRICS_SESSION_INVALID;
    }

    return NGX_HTTP_PLAYARR_METRICS_SESSION_VALID;
}


/* $playarr_metrics_jwt_user (data 0), $playarr_metrics_jwt_role (1) */

static ngx_int_t
ngx_http_playarr_metrics_jwt_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                                 *p;
    size_t                                  len;
    ngx_http_playarr_metrics_jwt_claims_t  *claims, tmp;

    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->len = 0;
    v->data = (u_char *) "";

    if (ngx_http_playarr_metrics_session(r, &claims, &tmp)
        != NGX_HTTP_PLAYARR_METRICS_SESSION_VALID)
    {
        return NGX_OK;
    }

    if (data == 0) {
        p = claims->user;
        len = claims->user_len;

    } else {
        p = claims->role;
        len = claims->role_len;
    }

    if (len == 0) {
        return NGX_OK;
    }

    /* a cache entry may be replaced by the next request's cookie */

    v->data = ngx_pnalloc(r->pool, len);
    if (v->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(v->data, p, len);
    v->len = len;

    return NGX_OK;
}
