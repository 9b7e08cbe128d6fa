
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
static ngx_int_t ngx_http_playarr_metrics_same_origin(ngx_http_request_t *r);
static ngx_int_t ngx_http_playarr_metrics_cookie(ngx_http_request_t *r,
    ngx_str_t *name, ngx_str_t *value);
static ngx_int_t ngx_http_playarr_metrics_cookie_in(ngx_str_t *header,
    ngx_str_t *name, ngx_str_t *value);
static ngx_inline ngx_uint_t ngx_http_playarr_metrics_cookie_name(u_char *p,
    ngx_str_t *name);
static void ngx_http_playarr_metrics_cookie_value(ngx_str_t *value);


static ngx_str_t  ngx_http_playarr_metrics_jwt_user_name =
    ngx_string("playarr_metrics_jwt_user");
static ngx_str_t  ngx_http_playarr_metrics_jwt_role_name =
    ngx_string("playarr_metrics_jwt_role");

/* the answers of Playarr's own middleware (Middleware.js) */
static ngx_str_t  ngx_http_playarr_metrics_jwt_missing =
    ngx_string("{\"error\":\"Authentication required\"}");
static ngx_str_t  ngx_http_playarr_metrics_jwt_invalid =
    ngx_string("{\"error\":\"Invalid or expired token\"}");
static ngx_str_t  ngx_http_playarr_metrics_jwt_admin =
    ngx_string("{\"error\":\"Admin access required\"}");
static ngx_str_t  ngx_http_playarr_metrics_jwt_role =
    ngx_string("{\"error\":\"Access denied\"}");
static ngx_str_t  ngx_http_playarr_metrics_jwt_origin =
    ngx_string("{\"error\":\"Cross-origin request refused\"}");


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


/* a worker's cache of sessions, made when it starts */

ngx_int_t
ngx_http_playarr_metrics_session_init_process(ngx_cycle_t *cycle,
    ngx_http_playarr_metrics_main_conf_t *pmcf)
{
    if (pmcf->jwt_secret.len == 0
        || (ngx_process != NGX_PROCESS_WORKER
            && ngx_process != NGX_PROCESS_SINGLE))
    {
        return NGX_OK;
    }

    pmcf->jwt_cache = ngx_http_playarr_metrics_jwt_cache(cycle->pool,
                                                         &pmcf->jwt_secret);
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
    u_char                                 c;
    time_t                                 now;
    ngx_str_t                              value;
    ngx_http_playarr_metrics_srv_conf_t   *pscf;
    ngx_http_playarr_metrics_main_conf_t  *pmcf;

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_playarr_metrics_module);

    if (pmcf->jwt_secret.len == 0) {
        return NGX_HTTP_PLAYARR_METRICS_SESSION_NONE;
    }

    pscf = ngx_http_get_module_srv_conf(r, ngx_http_playarr_metrics_module);

    if (ngx_http_playarr_metrics_cookie(r, &pscf->jwt_cookie, &value)
        != NGX_OK)
    {
        return NGX_HTTP_PLAYARR_METRICS_SESSION_NONE;
    }

    /*
     * The cookie last in its header, as a browser sends a session it set
     * last, and a value kept whole in the cache: that value, unquoted,
     * blanks after it trimmed, runs to the header's end, and the value's
     * end is not looked for.
     */

    if (pmcf->jwt_cache && value.len) {
        c = value.data[value.len - 1];

        if (value.data[0] != '"' && c != ' ' && c != '\t'
            && ngx_http_playarr_metrics_jwt_find(pmcf->jwt_cache, value.data,
                                                 value.len, claims)
               == NGX_OK)
        {
            goto found;
        }
    }

    ngx_http_playarr_metrics_cookie_value(&value);

    if (value.len == 0) {
        return NGX_HTTP_PLAYARR_METRICS_SESSION_NONE;
    }

    if (value.len > NGX_HTTP_PLAYARR_METRICS_JWT_MAX) {
        return NGX_HTTP_PLAYARR_METRICS_SESSION_INVALID;
    }

    if (pmcf->jwt_cache) {
        *claims = ngx_http_playarr_metrics_jwt_lookup(pmcf->jwt_cache,
                                                      value.data, value.len,
                                                      tmp);

    } else {
        *claims = (ngx_http_playarr_metrics_jwt_verify(&pmcf->jwt_secret,
                                                       value.data, value.len,
                                                       tmp)
                   == NGX_OK) ? tmp : NULL;
    }

found:

    now = ngx_time();

    if (*claims == NULL || !ngx_http_playarr_metrics_jwt_current(*claims, now))
    {
        return NGX_HTTP_PLAYARR_METRICS_SESSION_INVALID;
    }

    return NGX_HTTP_PLAYARR_METRICS_SESSION_VALID;
}


/*
 * The first cookie of that name, as Express's cookie parser has it: names
 * compared as they are, pairs split at ";", the blanks around a name and
 * after "=" taken off; *value from its first byte to the end of its
 * Cookie header (see _cookie_value()).  nginx's own parser compares
 * case-insensitively at every byte: 2,000 instructions for Playarr's
 * cookie, against some 50 here.
 */

static ngx_int_t
ngx_http_playarr_metrics_cookie(ngx_http_request_t *r, ngx_str_t *name,
    ngx_str_t *value)
{
    ngx_table_elt_t   *h;
#if (nginx_version < 1023000)
    ngx_uint_t         i;
    ngx_table_elt_t  **hh;

    hh = r->headers_in.cookies.elts;

    for (i = 0; i < r->headers_in.cookies.nelts; i++) {
        h = hh[i];
#else

    for (h = r->headers_in.cookie; h; h = h->next) {
#endif

        if (ngx_http_playarr_metrics_cookie_in(&h->value, name, value)
            == NGX_OK)
        {
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_playarr_metrics_cookie_in(ngx_str_t *header, ngx_str_t *name,
    ngx_str_t *value)
{
    u_char  *p, *e, *last;

    p = header->data;
    last = p + header->len;

    for ( ;; ) {

        while (p < last && (*p == ' ' || *p == '\t')) {
            p++;
        }

        /* a name has no ";", blank or "=": a match ends in its pair */

        if ((size_t) (last - p) > name->len && *p == name->data[0]
            && ngx_http_playarr_metrics_cookie_name(p, name))
        {
            for (e = p + name->len; e < last && (*e == ' ' || *e == '\t'); e++)
            {
                /* void */
            }

            if (e < last && *e == '=') {
                for (p = e + 1; p < last && (*p == ' ' || *p == '\t'); p++) {
                    /* void */
                }

                value->data = p;
                value->len = last - p;

                return NGX_OK;
            }
        }

        /* libc's memchr() reads a word at a time */

        p = memchr(p, ';', last - p);
        if (p == NULL) {
            return NGX_DECLINED;
        }

        p++;
    }
}


/*
 * 1 when the name is at p (at least name->len bytes there): a name of 8
 * to 16 bytes, access_token's 12 for one, in two words, without a call
 */

static ngx_inline ngx_uint_t
ngx_http_playarr_metrics_cookie_name(u_char *p, ngx_str_t *name)
{
    size_t    n;
    uint64_t  a, b, c, d;

    n = name->len;

    if (n < sizeof(uint64_t) || n > 2 * sizeof(uint64_t)) {
        return ngx_memcmp(p, name->data, n) == 0;
    }

    ngx_memcpy(&a, p, sizeof(uint64_t));
    ngx_memcpy(&b, name->data, sizeof(uint64_t));
    ngx_memcpy(&c, p + n - sizeof(uint64_t), sizeof(uint64_t));
    ngx_memcpy(&d, name->data + n - sizeof(uint64_t), sizeof(uint64_t));

    return ((a ^ b) | (c ^ d)) == 0;
}


/* the value itself: to its ";", blanks taken off, then one pair of quotes */

static void
ngx_http_playarr_metrics_cookie_value(ngx_str_t *value)
{
    u_char  *p, *q;

    p = value->data;

    q = memchr(p, ';', value->len);
    if (q == NULL) {
        q = p + value->len;
    }

    while (q > p && (q[-1] == ' ' || q[-1] == '\t')) {
        q--;
    }

    if (q - p >= 2 && *p == '"' && q[-1] == '"') {
        p++;
        q--;
    }

    value->data = p;
    value->len = q - p;
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


/*
 * playarr_metrics_auth jwt [role=NAME]: NGX_OK when the request's session
 * lets it in; else the status to answer, 401 or 403, and in *body the
 * JSON of Playarr's own middleware for that case.  A POST is let in only
 * from the request's own origin, when the browser names one.
 */

ngx_int_t
ngx_http_playarr_metrics_session_check(ngx_http_request_t *r,
    ngx_str_t *role, ngx_str_t *body)
{
    ngx_http_playarr_metrics_jwt_claims_t  *claims, tmp;

    switch (ngx_http_playarr_metrics_session(r, &claims, &tmp)) {

    case NGX_HTTP_PLAYARR_METRICS_SESSION_NONE:
        *body = ngx_http_playarr_metrics_jwt_missing;
        return NGX_HTTP_UNAUTHORIZED;

    case NGX_HTTP_PLAYARR_METRICS_SESSION_INVALID:
        *body = ngx_http_playarr_metrics_jwt_invalid;
        return NGX_HTTP_UNAUTHORIZED;

    default:
        break;
    }

    if (role->len
        && (claims->role_len != role->len
            || ngx_memcmp(claims->role, role->data, role->len) != 0))
    {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "playarr_metrics: session of another role");

        *body = (role->len == 5 && ngx_strncmp(role->data, "admin", 5) == 0)
                ? ngx_http_playarr_metrics_jwt_admin
                : ngx_http_playarr_metrics_jwt_role;
        return NGX_HTTP_FORBIDDEN;
    }

    if (r->method == NGX_HTTP_POST
        && ngx_http_playarr_metrics_same_origin(r) != NGX_OK)
    {
        *body = ngx_http_playarr_metrics_jwt_origin;
        return NGX_HTTP_FORBIDDEN;
    }

    return NGX_OK;
}


/*
 * NGX_OK when the request has no Origin header, or one naming the
 * request's own scheme, host and port (the Host header's, the default
 * port of the scheme when it has none); "null" is no origin of ours.
 */

static ngx_int_t
ngx_http_playarr_metrics_same_origin(ngx_http_request_t *r)
{
    u_char           *p, *last, *host, *colon;
    size_t            slen, hlen;
    ngx_str_t         o, h, scheme, hport, oport;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *e;

    ngx_str_null(&o);

    part = &r->headers_in.headers.part;
    e = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            e = part->elts;
            i = 0;
        }

        if (e[i].key.len == 6
            && ngx_strncasecmp(e[i].key.data, (u_char *) "origin", 6) == 0)
        {
            if (o.data) {
                return NGX_DECLINED;        /* two origins: none of ours */
            }

            o = e[i].value;
        }
    }

    if (o.data == NULL) {
        return NGX_OK;
    }

    if (r->headers_in.host == NULL) {
        return NGX_DECLINED;
    }

    h = r->headers_in.host->value;

#if (NGX_HTTP_SSL)
    if (r->connection->ssl) {
        ngx_str_set(&scheme, "https://");
        ngx_str_set(&hport, "443");

    } else
#endif
    {
        ngx_str_set(&scheme, "http://");
        ngx_str_set(&hport, "80");
    }

    slen = scheme.len;

    if (o.len <= slen || ngx_strncasecmp(o.data, scheme.data, slen) != 0) {
        return NGX_DECLINED;
    }

    /* the origin's host and port */

    host = o.data + slen;
    last = o.data + o.len;

    if (ngx_strlchr(host, last, '/') != NULL) {
        return NGX_DECLINED;
    }

    colon = NULL;

    for (p = host; p < last; p++) {
        if (*p == ':') {
            colon = p;
        } else if (*p == ']') {
            colon = NULL;
        }
    }

    hlen = (colon ? colon : last) - host;

    oport = hport;

    if (colon) {
        oport.data = colon + 1;
        oport.len = last - colon - 1;
    }

    /* the Host header's */

    colon = NULL;

    for (p = h.data; p < h.data + h.len; p++) {
        if (*p == ':') {
            colon = p;
        } else if (*p == ']') {
            colon = NULL;
        }
    }

    if (colon) {
        hport.data = colon + 1;
        hport.len = h.data + h.len - colon - 1;
        h.len = colon - h.data;
    }

    if (hlen != h.len || ngx_strncasecmp(host, h.data, hlen) != 0
        || oport.len != hport.len
        || ngx_strncmp(oport.data, hport.data, oport.len) != 0)
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}
