
/*
 * Copyright (C) Playarr metrics module authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ngx_http_playarr_metrics_module.h>


/* what one step of an export renders, and sends before the next one */
#define NGX_HTTP_PLAYARR_METRICS_STEP  (256 * 1024)

#define NGX_HTTP_PLAYARR_METRICS_TAG                                          \
    ((ngx_buf_tag_t) &ngx_http_playarr_metrics_module)


/* an export being sent: the renderer and its buffers */

struct ngx_http_playarr_metrics_export_s {
    ngx_http_playarr_metrics_render_t  *render;
    ngx_chain_t                        *out;
    ngx_chain_t                        *free;
    ngx_chain_t                        *busy;
    ngx_uint_t                          done;     /* last buffer rendered */
};


/* playarr_metrics_merge: the subrequest to the app, and what it gave */

struct ngx_http_playarr_metrics_merge_s {
    ngx_http_request_t                 *subrequest;
    ngx_http_playarr_metrics_app_t     *app;
    u_char                             *body;       /* ngx_alloc() */
    size_t                              len;
    size_t                              size;
    unsigned                            done:1;
    unsigned                            up:1;
    unsigned                            json:1;     /* the json format */
    unsigned                            last:1;     /* the whole body */
    unsigned                            too_large:1;
    unsigned                            unread:1;   /* a file not read */
};


static ngx_int_t ngx_http_playarr_metrics_merge_start(ngx_http_request_t *r,
    ngx_http_playarr_metrics_loc_conf_t *plcf,
    ngx_http_playarr_metrics_merge_t **mgp);
static ngx_int_t ngx_http_playarr_metrics_merge_body_filter(
    ngx_http_request_t *r, ngx_chain_t *in);
static ngx_int_t ngx_http_playarr_metrics_merge_append(
    ngx_http_playarr_metrics_merge_t *mg, ngx_http_request_t *r, u_char *p,
    size_t n);
static ngx_int_t ngx_http_playarr_metrics_merge_file(
    ngx_http_playarr_metrics_merge_t *mg, ngx_http_request_t *r,
    ngx_buf_t *b);
static ngx_int_t ngx_http_playarr_metrics_merge_done(ngx_http_request_t *r,
    void *data, ngx_int_t rc);
static void ngx_http_playarr_metrics_merge_resume(ngx_http_request_t *r);
static void ngx_http_playarr_metrics_merge_cleanup(void *data);
static ngx_int_t ngx_http_playarr_metrics_not_allowed(ngx_http_request_t *r,
    ngx_str_t *allow);
static ngx_int_t ngx_http_playarr_metrics_send_error(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *error, ngx_int_t index);
static ngx_int_t ngx_http_playarr_metrics_no_store(ngx_http_request_t *r);
static ngx_int_t ngx_http_playarr_metrics_subrequest(ngx_http_request_t *r,
    ngx_http_playarr_metrics_loc_conf_t *plcf);
static ngx_int_t ngx_http_playarr_metrics_begin(ngx_http_request_t *r,
    ngx_uint_t methods, ngx_str_t *allow);
static ngx_int_t ngx_http_playarr_metrics_auth(ngx_http_request_t *r,
    ngx_http_playarr_metrics_loc_conf_t *plcf,
    ngx_http_playarr_metrics_main_conf_t *pmcf);
static ngx_int_t ngx_http_playarr_metrics_refuse(ngx_http_request_t *r,
    ngx_http_playarr_metrics_refusal_t *rf);
static ngx_int_t ngx_http_playarr_metrics_export_whole(ngx_http_request_t *r,
    ngx_http_playarr_metrics_main_conf_t *pmcf, ngx_uint_t format);
static void ngx_http_playarr_metrics_export_write(ngx_http_request_t *r);
static void ngx_http_playarr_metrics_export_cleanup(void *data);
static void ngx_http_playarr_metrics_push_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_playarr_metrics_push(ngx_http_request_t *r);
static ngx_int_t ngx_http_playarr_metrics_read_body(ngx_http_request_t *r,
    ngx_str_t *body);
static ngx_int_t ngx_http_playarr_metrics_admin(ngx_http_request_t *r,
    ngx_http_playarr_metrics_main_conf_t *pmcf);
static ngx_int_t ngx_http_playarr_metrics_send_token(ngx_http_request_t *r,
    ngx_http_playarr_metrics_token_t *tk);


static ngx_http_output_body_filter_pt  ngx_http_next_body_filter;


static ngx_str_t  ngx_http_playarr_metrics_json_type =
    ngx_string("application/json");
static ngx_str_t  ngx_http_playarr_metrics_prometheus_type =
    ngx_string("text/plain; version=0.0.4; charset=utf-8");
static ngx_str_t  ngx_http_playarr_metrics_get_head = ngx_string("GET, HEAD");
static ngx_str_t  ngx_http_playarr_metrics_post = ngx_string("POST");
static ngx_str_t  ngx_http_playarr_metrics_get_head_post =
    ngx_string("GET, HEAD, POST");


ngx_int_t
ngx_http_playarr_metrics_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *content_type, ngx_str_t *body)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    r->headers_out.status = status;
    r->headers_out.content_type = *content_type;
    r->headers_out.content_type_len = content_type->len;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.content_length_n = body->len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only || body->len == 0) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = body->data;
    b->last = body->data + body->len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static ngx_int_t
ngx_http_playarr_metrics_not_allowed(ngx_http_request_t *r, ngx_str_t *allow)
{
    ngx_int_t         rc;
    ngx_str_t         body;
    ngx_table_elt_t  *h;

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Allow");
    h->value = *allow;

    ngx_str_set(&body, "{\"error\":\"Method not allowed\"}");

    return ngx_http_playarr_metrics_send(r, NGX_HTTP_NOT_ALLOWED,
                                         &ngx_http_playarr_metrics_json_type,
                                         &body);
}


/* metrics and tokens are never cached on the way */

static ngx_int_t
ngx_http_playarr_metrics_no_store(ngx_http_request_t *r)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Cache-Control");
    ngx_str_set(&h->value, "no-store");

    return NGX_OK;
}


/*
 * nginx runs no access phase for a subrequest (SSI, addition, mirror,
 * njs): the allow/deny or auth_request that guards a location with
 * "playarr_metrics_auth off" would not apply to it.  Such a location
 * refuses subrequests.  With the token, a subrequest is let in on the
 * token it carries (the headers of its main request), as a request is.
 * NGX_DECLINED: go on; NGX_HTTP_FORBIDDEN: refused.
 */

static ngx_int_t
ngx_http_playarr_metrics_subrequest(ngx_http_request_t *r,
    ngx_http_playarr_metrics_loc_conf_t *plcf)
{
    if (r == r->main || plcf->auth) {
        return NGX_DECLINED;
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "playarr metrics: subrequest forbidden, the location has "
                  "\"playarr_metrics_auth off\"");

    return NGX_HTTP_FORBIDDEN;
}


/*
 * What a handler without a body does first: a subrequest refused, the
 * method, the body thrown away, the token.  NGX_DECLINED: go on;
 * anything else: the answer.
 */

static ngx_int_t
ngx_http_playarr_metrics_begin(ngx_http_request_t *r, ngx_uint_t methods,
    ngx_str_t *allow)
{
    ngx_int_t                              rc;
    ngx_http_playarr_metrics_loc_conf_t   *plcf;
    ngx_http_playarr_metrics_main_conf_t  *pmcf;

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_playarr_metrics_module);
    pmcf = ngx_http_get_module_main_conf(r, ngx_http_playarr_metrics_module);

    rc = ngx_http_playarr_metrics_subrequest(r, plcf);

    if (rc != NGX_DECLINED) {
        return rc;
    }

    if (!(r->method & methods)) {
        return ngx_http_playarr_metrics_not_allowed(r, allow);
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_playarr_metrics_auth(r, plcf, pmcf);
    if (rc != NGX_OK) {
        return rc;
    }

    return NGX_DECLINED;
}


/*
 * playarr_metrics_auth: NGX_OK, or the request was answered and this is
 * what the handler returns.  With both bearer and jwt, a request with an
 * Authorization header gets bearer's answer, one without gets jwt's.
 * The checks give their verdict; the answer is sent here.
 */

static ngx_int_t
ngx_http_playarr_metrics_auth(ngx_http_request_t *r,
    ngx_http_playarr_metrics_loc_conf_t *plcf,
    ngx_http_playarr_metrics_main_conf_t *pmcf)
{
    ngx_int_t                           status;
    ngx_str_t                           body;
    ngx_http_playarr_metrics_refusal_t  rf;

    if (plcf->auth == 0) {
        return NGX_OK;
    }

    if ((plcf->auth & NGX_HTTP_PLAYARR_METRICS_AUTH_BEARER)
        && (r->headers_in.authorization
            || !(plcf->auth & NGX_HTTP_PLAYARR_METRICS_AUTH_JWT)))
    {
        if (ngx_http_playarr_metrics_token_auth(r, &pmcf->token, &rf)
            == NGX_HTTP_PLAYARR_METRICS_TOKEN_OK)
        {
            return NGX_OK;
        }

        return ngx_http_playarr_metrics_refuse(r, &rf);
    }

    status = ngx_http_playarr_metrics_session_check(r, &plcf->auth_role,
                                                    &body);
    if (status == NGX_OK) {
        return NGX_OK;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "playarr metrics session: refused, %i", status);

    rf.status = status;
    rf.challenge = NULL;
    rf.body = &body;

    return ngx_http_playarr_metrics_refuse(r, &rf);
}


/*
 * The answer to a request refused before its body was read, finalized
 * here so that the caller gets NGX_DONE: what
 * ngx_http_playarr_metrics_send() returns may be NGX_OK, which the
 * caller would take for "authenticated".  The extra reference is the one
 * the caller's NGX_DONE releases, as after an internal redirect.
 */

static ngx_int_t
ngx_http_playarr_metrics_refuse(ngx_http_request_t *r,
    ngx_http_playarr_metrics_refusal_t *rf)
{
    ngx_int_t         rc;
    ngx_table_elt_t  *h;

    /*
     * The body is not read: it is thrown away as it comes, and, as for
     * nginx's own early answers, a client that expects "100 Continue"
     * is not invited to send it.
     */

    r->expect_tested = 1;

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        r->keepalive = 0;
    }

    if (rf->challenge) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "WWW-Authenticate");
        h->value = *rf->challenge;

        r->headers_out.www_authenticate = h;
    }

    rc = ngx_http_playarr_metrics_send(r, rf->status,
                                       &ngx_http_playarr_metrics_json_type,
                                       rf->body);

    r->main->count++;
    ngx_http_finalize_request(r, rc);

    return NGX_DONE;
}


/*
 * playarr_metrics_export: the body is rendered a step at a time, each step
 * once the previous one is sent, from the write event handler; its length
 * is not known in advance (chunked in HTTP/1.1, closed in HTTP/1.0).
 */

ngx_int_t
ngx_http_playarr_metrics_export_handler(ngx_http_request_t *r)
{
    ngx_int_t                              rc;
    ngx_pool_cleanup_t                    *cln;
    ngx_http_playarr_metrics_ctx_t        *ctx;
    ngx_http_playarr_metrics_merge_t      *mg;
    ngx_http_playarr_metrics_export_t     *ex;
    ngx_http_playarr_metrics_loc_conf_t   *plcf;
    ngx_http_playarr_metrics_main_conf_t  *pmcf;

    rc = ngx_http_playarr_metrics_begin(r, NGX_HTTP_GET|NGX_HTTP_HEAD,
                                        &ngx_http_playarr_metrics_get_head);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_playarr_metrics_module);
    pmcf = ngx_http_get_module_main_conf(r, ngx_http_playarr_metrics_module);

    mg = NULL;

    if (plcf->merge.len && r == r->main && r->method != NGX_HTTP_HEAD) {
        rc = ngx_http_playarr_metrics_merge_start(r, plcf, &mg);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    if (plcf->format == NGX_HTTP_PLAYARR_METRICS_FORMAT_JSON) {
        r->headers_out.content_type = ngx_http_playarr_metrics_json_type;

    } else {
        r->headers_out.content_type =
                                     ngx_http_playarr_metrics_prometheus_type;
    }

    if (ngx_http_playarr_metrics_no_store(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    if (r != r->main) {
        return ngx_http_playarr_metrics_export_whole(r, pmcf, plcf->format);
    }

    ex = NULL;

    if (r->method != NGX_HTTP_HEAD) {
        ex = ngx_pcalloc(r->pool, sizeof(ngx_http_playarr_metrics_export_t));
        if (ex == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ex->render = ngx_http_playarr_metrics_render_create(r, pmcf->store,
                                                 plcf->format,
                                                 NGX_HTTP_PLAYARR_METRICS_TAG);
        if (ex->render == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (mg
            && ngx_http_playarr_metrics_render_merge(ex->render, mg->app,
                                                     mg->up)
               != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        cln->handler = ngx_http_playarr_metrics_export_cleanup;
        cln->data = ex;

        ctx = ngx_http_playarr_metrics_ctx(r);
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx->export = ex;
    }

    r->headers_out.content_length_n = -1;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only || ex == NULL) {
        return rc;
    }

    r->main->count++;
    r->write_event_handler = ngx_http_playarr_metrics_export_write;

    ngx_http_playarr_metrics_export_write(r);

    return NGX_DONE;
}


/*
 * playarr_metrics_merge: the first call starts the subrequest to the
 * app's exposition, in memory, and returns NGX_DONE; the export handler
 * runs again once it is done, and then *mgp holds what it gave (NGX_OK).
 */

static ngx_int_t
ngx_http_playarr_metrics_merge_start(ngx_http_request_t *r,
    ngx_http_playarr_metrics_loc_conf_t *plcf,
    ngx_http_playarr_metrics_merge_t **mgp)
{
    ngx_pool_cleanup_t                *cln;
    ngx_http_request_t                *sr;
    ngx_http_post_subrequest_t        *ps;
    ngx_http_playarr_metrics_ctx_t    *ctx;
    ngx_http_playarr_metrics_merge_t  *mg;

    ctx = ngx_http_playarr_metrics_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    mg = ctx->merge;

    if (mg) {
        /* the second call: ngx_http_playarr_metrics_merge_resume() */
        *mgp = mg;
        return NGX_OK;
    }

    mg = ngx_pcalloc(r->pool, sizeof(ngx_http_playarr_metrics_merge_t));
    if (mg == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_playarr_metrics_merge_cleanup;
    cln->data = mg;

    ctx->merge = mg;

    ps = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
    if (ps == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ps->handler = ngx_http_playarr_metrics_merge_done;
    ps->data = mg;

    if (ngx_http_subrequest(r, &plcf->merge, NULL, &sr, ps,
                            NGX_HTTP_SUBREQUEST_IN_MEMORY
                            |NGX_HTTP_SUBREQUEST_WAITED)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* no body to send, as auth_request does */

    sr->request_body = ngx_pcalloc(r->pool, sizeof(ngx_http_request_body_t));
    if (sr->request_body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    mg->subrequest = sr;
    mg->json = (plcf->format == NGX_HTTP_PLAYARR_METRICS_FORMAT_JSON);

    r->write_event_handler = ngx_http_playarr_metrics_merge_resume;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "playarr metrics merge subrequest \"%V\"", &plcf->merge);

    /*
     * the subrequest's own count goes with it; this one with NGX_DONE,
     * the request going on in ngx_http_playarr_metrics_merge_resume()
     */

    r->main->count++;

    return NGX_DONE;
}


/* playarr_metrics_merge URI; where it is said, for errors at merge time */

char *
ngx_http_playarr_metrics_set_merge(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_playarr_metrics_loc_conf_t *plcf = conf;

    ngx_str_t  *value;

    if (plcf->merge.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 0 || value[1].data[0] != '/') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid URI \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    plcf->merge = value[1];
    plcf->merge_file = cf->conf_file->file.name;
    plcf->merge_line = cf->conf_file->line;

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_playarr_metrics_merge_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_playarr_metrics_merge_body_filter;

    return NGX_OK;
}


/*
 * The body of a merge's subrequest, whatever its size, never reaches a
 * filter after this one (nor the client): its bytes are copied, up to
 * 16 MiB, into a buffer of the merge's own; beyond, the merge fails and
 * the rest is thrown away, with no error for the request (the in-memory
 * buffer of nginx, subrequest_output_buffer_size, would end the client's
 * connection when too small).
 */

static ngx_int_t
ngx_http_playarr_metrics_merge_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in)
{
    size_t                             n;
    ngx_buf_t                         *b;
    ngx_chain_t                       *cl;
    ngx_http_playarr_metrics_merge_t  *mg;

    if (r == r->main
        || r->post_subrequest == NULL
        || r->post_subrequest->handler != ngx_http_playarr_metrics_merge_done)
    {
        return ngx_http_next_body_filter(r, in);
    }

    mg = r->post_subrequest->data;

    for (cl = in; cl; cl = cl->next) {
        b = cl->buf;

        if (b->last_buf || b->last_in_chain) {
            mg->last = 1;
        }

        if (ngx_buf_in_memory(b)) {
            n = b->last - b->pos;

            /* an error page is not kept: the merge fails anyway */

            if (n && r->headers_out.status == NGX_HTTP_OK
                && ngx_http_playarr_metrics_merge_append(mg, r, b->pos, n)
                   != NGX_OK)
            {
                return NGX_ERROR;
            }

            b->pos = b->last;
        }

        if (b->in_file && !ngx_buf_in_memory(b)) {
            /* what the upstream's pipe had to put in a temporary file */

            if (r->headers_out.status == NGX_HTTP_OK
                && ngx_http_playarr_metrics_merge_file(mg, r, b) != NGX_OK)
            {
                return NGX_ERROR;
            }

            b->file_pos = b->file_last;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_playarr_metrics_merge_file(ngx_http_playarr_metrics_merge_t *mg,
    ngx_http_request_t *r, ngx_buf_t *b)
{
    off_t     n;
    u_char   *p;
    ssize_t   got;

    n = b->file_last - b->file_pos;

    if (mg->too_large || n <= 0) {
        return NGX_OK;
    }

    if (n > (off_t) (NGX_HTTP_PLAYARR_METRICS_MERGE_MAX - mg->len)) {
        mg->too_large = 1;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, (size_t) n);
    if (p == NULL) {
        return NGX_ERROR;
    }

    got = ngx_read_file(b->file, p, (size_t) n, b->file_pos);

    if (got != (ssize_t) n) {
        /* logged by ngx_read_file(), or a short read: no whole body */
        mg->unread = 1;
        return NGX_OK;
    }

    return ngx_http_playarr_metrics_merge_append(mg, r, p, (size_t) n);
}


static ngx_int_t
ngx_http_playarr_metrics_merge_append(ngx_http_playarr_metrics_merge_t *mg,
    ngx_http_request_t *r, u_char *p, size_t n)
{
    u_char  *body;
    size_t   size;

    if (mg->too_large) {
        return NGX_OK;
    }

    if (n > NGX_HTTP_PLAYARR_METRICS_MERGE_MAX - mg->len) {
        mg->too_large = 1;
        return NGX_OK;
    }

    if (mg->len + n > mg->size) {
        size = ngx_max(2 * mg->size, 64 * 1024);

        if (r->headers_out.content_length_n > 0
            && r->headers_out.content_length_n
               <= NGX_HTTP_PLAYARR_METRICS_MERGE_MAX)
        {
            size = ngx_max(size, (size_t) r->headers_out.content_length_n);
        }

        size = ngx_min(ngx_max(size, mg->len + n),
                       NGX_HTTP_PLAYARR_METRICS_MERGE_MAX);

        body = ngx_alloc(size, r->connection->log);
        if (body == NULL) {
            return NGX_ERROR;
        }

        if (mg->len) {
            ngx_memcpy(body, mg->body, mg->len);
        }

        if (mg->body) {
            ngx_free(mg->body);
        }

        mg->body = body;
        mg->size = size;
    }

    ngx_memcpy(mg->body + mg->len, p, n);
    mg->len += n;

    return NGX_OK;
}


/*
 * The subrequest done: a 200 whose body parses is a good merge, anything
 * else (an error status, a timeout, a body too large, text that is not
 * Prometheus 0.0.4) a failed one; the subrequest itself always ends
 * well, so that the export goes on.
 */

static ngx_int_t
ngx_http_playarr_metrics_merge_done(ngx_http_request_t *r, void *data,
    ngx_int_t rc)
{
    ngx_http_playarr_metrics_merge_t *mg = data;

    ngx_int_t   prc;
    ngx_str_t   err;

    if (mg->done) {
        return NGX_OK;
    }

    mg->done = 1;

    if (rc != NGX_OK || r->headers_out.status != NGX_HTTP_OK) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "playarr_metrics_merge \"%V\" failed: %i, status %ui",
                      &r->uri, rc, r->headers_out.status);
        return NGX_OK;
    }

    if (mg->too_large) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "playarr_metrics_merge \"%V\" failed: "
                      "body larger than 16 MiB", &r->uri);
        return NGX_OK;
    }

    if (!mg->last || mg->unread
        || (r->headers_out.content_length_n >= 0
            && (size_t) r->headers_out.content_length_n != mg->len))
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "playarr_metrics_merge \"%V\" failed: "
                      "incomplete body", &r->uri);
        return NGX_OK;
    }

    if (mg->json) {
        prc = ngx_http_playarr_metrics_merge_json(r->pool,
                                     mg->body ? mg->body : (u_char *) "",
                                     mg->len, &mg->app, &err);

    } else {
        prc = ngx_http_playarr_metrics_merge_parse(r->pool,
                                     mg->body ? mg->body : (u_char *) "",
                                     mg->len, &mg->app, &err);
    }

    if (prc == NGX_OK) {
        mg->up = 1;
        return NGX_OK;
    }

    mg->app = NULL;

    if (prc == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "playarr_metrics_merge \"%V\" failed: %V",
                      &r->uri, &err);
    }

    return NGX_OK;
}


/* the parent woken up: once the subrequest is done, the export goes on */

static void
ngx_http_playarr_metrics_merge_resume(ngx_http_request_t *r)
{
    ngx_http_playarr_metrics_ctx_t    *ctx;
    ngx_http_playarr_metrics_merge_t  *mg;

    ctx = ngx_http_get_module_ctx(r, ngx_http_playarr_metrics_module);
    mg = ctx ? ctx->merge : NULL;

    if (mg == NULL || !mg->done) {
        return;
    }

    r->write_event_handler = ngx_http_request_empty_handler;

    ngx_http_finalize_request(r, ngx_http_playarr_metrics_export_handler(r));
}


static void
ngx_http_playarr_metrics_merge_cleanup(void *data)
{
    ngx_http_playarr_metrics_merge_t  *mg = data;

    /* the families point into the body: both go with the request */

    if (mg->body) {
        ngx_free(mg->body);
        mg->body = NULL;
    }

    mg->app = NULL;
}


/* a subrequest: the whole body in one chain, its length known */

static ngx_int_t
ngx_http_playarr_metrics_export_whole(ngx_http_request_t *r,
    ngx_http_playarr_metrics_main_conf_t *pmcf, ngx_uint_t format)
{
    off_t         len;
    ngx_int_t     rc;
    ngx_chain_t  *out;

    if (format == NGX_HTTP_PLAYARR_METRICS_FORMAT_JSON) {
        out = ngx_http_playarr_metrics_json(r, pmcf, &len);

    } else {
        out = ngx_http_playarr_metrics_prometheus(r, pmcf, &len);
    }

    if (out == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.content_length_n = len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, out);
}


/*
 * The write event handler of an export: sends what is pending, then
 * renders one step if all of it went out.  A full socket waits for the
 * next write event, under send_timeout; one step done, the handler comes
 * back on the next cycle of the event loop, after the events of other
 * connections, so that a large body never holds the worker for long.
 */

static void
ngx_http_playarr_metrics_export_write(ngx_http_request_t *r)
{
    ngx_int_t                           rc;
    ngx_uint_t                          step;
    ngx_event_t                        *wev;
    ngx_connection_t                   *c;
    ngx_http_core_loc_conf_t           *clcf;
    ngx_http_playarr_metrics_ctx_t     *ctx;
    ngx_http_playarr_metrics_export_t  *ex;

    c = r->connection;
    wev = c->write;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (wev->timedout) {
        ngx_log_error(NGX_LOG_INFO, c->log, NGX_ETIMEDOUT,
                      "client timed out");
        c->timedout = 1;

        ngx_http_finalize_request(r, NGX_HTTP_REQUEST_TIME_OUT);
        return;
    }

    if (wev->delayed) {
        /* limit_rate: the write filter's timer brings the next event */

        if (ngx_handle_write_event(wev, clcf->send_lowat) != NGX_OK) {
            ngx_http_finalize_request(r, NGX_ERROR);
        }

        return;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_playarr_metrics_module);
    ex = ctx ? ctx->export : NULL;

    if (ex == NULL) {
        ngx_http_finalize_request(r, NGX_ERROR);
        return;
    }

    if (wev->timer_set) {
        ngx_del_timer(wev);
    }

    step = 0;

    for ( ;; ) {

        if (ex->out || ex->busy) {
            rc = ngx_http_output_filter(r, ex->out);

            if (rc == NGX_ERROR) {
                ngx_http_finalize_request(r, NGX_ERROR);
                return;
            }

            ngx_chain_update_chains(r->pool, &ex->free, &ex->busy, &ex->out,
                                    NGX_HTTP_PLAYARR_METRICS_TAG);

            if (ex->done) {
                /* what is left to send, ngx_http_writer() sends */
                ngx_http_finalize_request(r, rc);
                return;
            }

            if (ex->busy) {
                break;
            }
        }

        if (step) {
            ngx_post_event(wev, &ngx_posted_next_events);
            return;
        }

        rc = ngx_http_playarr_metrics_render(ex->render, &ex->free,
                                             NGX_HTTP_PLAYARR_METRICS_STEP,
                                             &ex->out);
        if (rc == NGX_ERROR) {
            ngx_http_finalize_request(r, NGX_ERROR);
            return;
        }

        ex->done = (rc == NGX_OK);
        step = 1;
    }

    /* the socket is full */

    if (!wev->delayed) {
        ngx_add_timer(wev, clcf->send_timeout);
    }

    if (ngx_handle_write_event(wev, clcf->send_lowat) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_ERROR);
    }
}


/*
 * The export's buffers are the pool's and go with it, the body sent whole
 * or the client gone.
 */

static void
ngx_http_playarr_metrics_export_cleanup(void *data)
{
    ngx_http_playarr_metrics_export_t  *ex = data;

    ex->out = NULL;
    ex->free = NULL;
    ex->busy = NULL;
}


/* an error answer as {"error": "...", "index": N} */

static ngx_int_t
ngx_http_playarr_metrics_send_error(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *error, ngx_int_t index)
{
    u_char     *p, *c, *end;
    ngx_str_t   body;

    body.data = ngx_pnalloc(r->pool, 6 * error->len + 64);
    if (body.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(body.data, "{\"error\":\"", 10);

    end = error->data + error->len;

    for (c = error->data; c < end; c++) {
        if (*c == '"' || *c == '\\') {
            *p++ = '\\';
            *p++ = *c;

        } else if (*c < 0x20) {
            p = ngx_sprintf(p, "\\u%04xd", (ngx_uint_t) *c);

        } else {
            *p++ = *c;
        }
    }

    *p++ = '"';

    if (index >= 0) {
        p = ngx_sprintf(p, ",\"index\":%i", index);
    }

    *p++ = '}';

    body.len = p - body.data;

    return ngx_http_playarr_metrics_send(r, status,
                                         &ngx_http_playarr_metrics_json_type,
                                         &body);
}


/*
 * playarr_metrics_push: POST of one update or an array of them.  The
 * token is checked on the headers, before a byte of the body is read: a
 * client without it costs no body buffer, no temporary file and no
 * count in the rejected updates.  Then the body is read whole, so that
 * every later answer leaves the connection clean.
 */

ngx_int_t
ngx_http_playarr_metrics_push_handler(ngx_http_request_t *r)
{
    ngx_int_t                              rc;
    ngx_str_t                              err;
    ngx_http_playarr_metrics_loc_conf_t   *plcf;
    ngx_http_playarr_metrics_main_conf_t  *pmcf;

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_playarr_metrics_module);
    pmcf = ngx_http_get_module_main_conf(r, ngx_http_playarr_metrics_module);

    rc = ngx_http_playarr_metrics_subrequest(r, plcf);

    if (rc != NGX_DECLINED) {
        return rc;
    }

    if (!(r->method & NGX_HTTP_POST)) {
        return ngx_http_playarr_metrics_not_allowed(r,
                                               &ngx_http_playarr_metrics_post);
    }

    rc = ngx_http_playarr_metrics_auth(r, plcf, pmcf);
    if (rc != NGX_OK) {
        return rc;
    }

    if (r->headers_in.content_length_n > NGX_HTTP_PLAYARR_METRICS_BODY_MAX) {

        rc = ngx_http_discard_request_body(r);

        if (rc != NGX_OK) {
            return rc;
        }

        ngx_str_set(&err, "Request body is larger than 1 MiB");

        ngx_http_playarr_metrics_reject(pmcf->store,
                                     NGX_HTTP_PLAYARR_METRICS_SOURCE_PUSH,
                                     NGX_HTTP_PLAYARR_METRICS_REJECT_TOO_LARGE,
                                     r->connection->log, &err);

        return ngx_http_playarr_metrics_send_error(r,
                                      NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                      &err, -1);
    }

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r,
                                           ngx_http_playarr_metrics_push_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_http_playarr_metrics_push_body(ngx_http_request_t *r)
{
    ngx_http_finalize_request(r, ngx_http_playarr_metrics_push(r));
}


static ngx_int_t
ngx_http_playarr_metrics_push(ngx_http_request_t *r)
{
    ngx_int_t                              rc, index;
    ngx_str_t                              body, err, *type;
    ngx_uint_t                             reason;
    ngx_array_t                            updates;
    ngx_http_playarr_metrics_main_conf_t  *pmcf;

    /* the token, if demanded, was checked before the body was read */

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_playarr_metrics_module);

    type = r->headers_in.content_type ? &r->headers_in.content_type->value
                                      : NULL;

    if (type == NULL
        || type->len < sizeof("application/json") - 1
        || ngx_strncasecmp(type->data, (u_char *) "application/json",
                           sizeof("application/json") - 1)
           != 0
        || (type->len > sizeof("application/json") - 1
            && type->data[sizeof("application/json") - 1] != ';'
            && type->data[sizeof("application/json") - 1] != ' '))
    {
        ngx_str_set(&err, "Content-Type must be application/json");
        return ngx_http_playarr_metrics_send_error(r,
                                         NGX_HTTP_UNSUPPORTED_MEDIA_TYPE,
                                         &err, -1);
    }

    rc = ngx_http_playarr_metrics_read_body(r, &body);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED) {
        ngx_str_set(&err, "Request body is larger than 1 MiB");

        ngx_http_playarr_metrics_reject(pmcf->store,
                                     NGX_HTTP_PLAYARR_METRICS_SOURCE_PUSH,
                                     NGX_HTTP_PLAYARR_METRICS_REJECT_TOO_LARGE,
                                     r->connection->log, &err);

        return ngx_http_playarr_metrics_send_error(r,
                                      NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                      &err, -1);
    }

    rc = ngx_http_playarr_metrics_updates_parse(r->pool, pmcf->store,
                                                body.data, body.len,
                                                &updates, &err, &index);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED) {
        reason = (index < 0) ? NGX_HTTP_PLAYARR_METRICS_REJECT_MALFORMED
                             : NGX_HTTP_PLAYARR_METRICS_REJECT_INVALID;

        ngx_http_playarr_metrics_reject(pmcf->store,
                                        NGX_HTTP_PLAYARR_METRICS_SOURCE_PUSH,
                                        reason, r->connection->log, &err);

        return ngx_http_playarr_metrics_send_error(r, NGX_HTTP_BAD_REQUEST,
                                                   &err, index);
    }

    ngx_http_playarr_metrics_updates_apply(pmcf->store, &updates,
                                           NGX_HTTP_PLAYARR_METRICS_SOURCE_PUSH,
                                           r->connection->log);

    r->headers_out.status = NGX_HTTP_NO_CONTENT;
    r->headers_out.content_length_n = 0;
    r->header_only = 1;

    return ngx_http_send_header(r);
}


/* the whole body in one buffer; NGX_DECLINED when it is too large */

static ngx_int_t
ngx_http_playarr_metrics_read_body(ngx_http_request_t *r, ngx_str_t *body)
{
    u_char       *p;
    off_t         len;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    len = 0;

    if (r->request_body == NULL) {
        ngx_str_set(body, "");
        return NGX_OK;
    }

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        len += ngx_buf_size(cl->buf);
    }

    if (len > NGX_HTTP_PLAYARR_METRICS_BODY_MAX) {
        return NGX_DECLINED;
    }

    body->data = ngx_pnalloc(r->pool, len + 1);
    if (body->data == NULL) {
        return NGX_ERROR;
    }

    p = body->data;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (!b->in_file) {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
            continue;
        }

        n = ngx_read_file(b->file, p, b->file_last - b->file_pos,
                          b->file_pos);

        if (n != b->file_last - b->file_pos) {
            return NGX_ERROR;
        }

        p += n;
    }

    body->len = p - body->data;

    return NGX_OK;
}


/*
 * playarr_metrics_token_admin, for Playarr's Settings > Metrics page:
 * GET shows the token, POST replaces it.
 *
 * Under the zone's mutex, from reading or writing the token to handing
 * the answer to the connection: another worker's POST cannot replace
 * the token in between.  So every token answered was the file's when it
 * was sent, and of concurrent POSTs the last answered is the file's.
 * The answer is a short buffer sent at once (over HTTP/1.x); other
 * workers wait at most the two fsync() of a regeneration.
 */

ngx_int_t
ngx_http_playarr_metrics_admin_handler(ngx_http_request_t *r)
{
    ngx_int_t                              rc;
    ngx_slab_pool_t                       *shpool;
    ngx_http_playarr_metrics_main_conf_t  *pmcf;

    rc = ngx_http_playarr_metrics_begin(r,
                                   NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_POST,
                                   &ngx_http_playarr_metrics_get_head_post);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_playarr_metrics_module);

    if (pmcf->shm_zone == NULL) {
        return ngx_http_playarr_metrics_admin(r, pmcf);
    }

    shpool = (ngx_slab_pool_t *) pmcf->shm_zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    rc = ngx_http_playarr_metrics_admin(r, pmcf);

    ngx_shmtx_unlock(&shpool->mutex);

    return rc;
}


static ngx_int_t
ngx_http_playarr_metrics_admin(ngx_http_request_t *r,
    ngx_http_playarr_metrics_main_conf_t *pmcf)
{
    ngx_str_t  err;

    if (r->method == NGX_HTTP_POST) {
        if (ngx_http_playarr_metrics_token_regenerate(r, &pmcf->token)
            != NGX_OK)
        {
            ngx_str_set(&err, "Could not write a new metrics token");
            return ngx_http_playarr_metrics_send_error(r,
                                             NGX_HTTP_INTERNAL_SERVER_ERROR,
                                             &err, -1);
        }

    } else if (ngx_http_playarr_metrics_token_refresh(r->connection->log,
                                                      &pmcf->token)
               != NGX_OK)
    {
        ngx_str_set(&err, "Metrics token unavailable");
        return ngx_http_playarr_metrics_send_error(r,
                                             NGX_HTTP_INTERNAL_SERVER_ERROR,
                                             &err, -1);
    }

    return ngx_http_playarr_metrics_send_token(r, &pmcf->token);
}


static ngx_int_t
ngx_http_playarr_metrics_send_token(ngx_http_request_t *r,
    ngx_http_playarr_metrics_token_t *tk)
{
    u_char     *p;
    size_t      i;
    ngx_str_t   body;

    if (ngx_http_playarr_metrics_no_store(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body.data = ngx_pnalloc(r->pool, 2 * tk->len + 16);
    if (body.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(body.data, "{\"value\":\"", 10);

    for (i = 0; i < tk->len; i++) {
        if (tk->value[i] == '"' || tk->value[i] == '\\') {
            *p++ = '\\';
        }

        *p++ = tk->value[i];
    }

    p = ngx_cpymem(p, "\"}", 2);

    body.len = p - body.data;

    return ngx_http_playarr_metrics_send(r, NGX_HTTP_OK,
                                         &ngx_http_playarr_metrics_json_type,
                                         &body);
}
