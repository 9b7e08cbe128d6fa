
/*
 * Copyright (C) Playarr metrics module authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ngx_http_playarr_metrics_module.h>


static ngx_int_t ngx_http_playarr_metrics_not_allowed(ngx_http_request_t *r,
    ngx_str_t *allow);


static ngx_str_t  ngx_http_playarr_metrics_json_type =
    ngx_string("application/json");
static ngx_str_t  ngx_http_playarr_metrics_prometheus_type =
    ngx_string("text/plain; version=0.0.4; charset=utf-8");
static ngx_str_t  ngx_http_playarr_metrics_get_head = ngx_string("GET, HEAD");


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


ngx_int_t
ngx_http_playarr_metrics_export_handler(ngx_http_request_t *r)
{
    off_t                                  len;
    ngx_int_t                              rc;
    ngx_chain_t                           *out;
    ngx_table_elt_t                       *h;
    ngx_http_playarr_metrics_loc_conf_t   *plcf;
    ngx_http_playarr_metrics_main_conf_t  *pmcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_playarr_metrics_not_allowed(r,
                                           &ngx_http_playarr_metrics_get_head);
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_playarr_metrics_module);
    pmcf = ngx_http_get_module_main_conf(r, ngx_http_playarr_metrics_module);

    if (pmcf->store == NULL) {
        return NGX_HTTP_NOT_FOUND;
    }

    if (plcf->auth) {
        rc = ngx_http_playarr_metrics_token_auth(r, &pmcf->token);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    if (plcf->format == NGX_HTTP_PLAYARR_METRICS_JSON) {
        out = ngx_http_playarr_metrics_json(r, pmcf, &len);
        r->headers_out.content_type = ngx_http_playarr_metrics_json_type;

    } else {
        out = ngx_http_playarr_metrics_prometheus(r, pmcf, &len);
        r->headers_out.content_type =
                                     ngx_http_playarr_metrics_prometheus_type;
    }

    if (out == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Cache-Control");
    ngx_str_set(&h->value, "no-store");

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.content_length_n = len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, out);
}
