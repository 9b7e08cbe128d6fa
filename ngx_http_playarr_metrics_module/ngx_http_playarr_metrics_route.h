
/*
 * Copyright (C) Playarr metrics module authors
 */


#ifndef _NGX_HTTP_PLAYARR_METRICS_ROUTE_H_INCLUDED_
#define _NGX_HTTP_PLAYARR_METRICS_ROUTE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/* the module's own symbols are not exported: see the store's header */
#if (__GNUC__ >= 4 || __clang__)
#pragma GCC visibility push(hidden)
#endif


#define NGX_HTTP_PLAYARR_METRICS_NO_ROUTE  ((ngx_uint_t) -1)

/* the longest template, in bytes, and the most segments it may have */
#define NGX_HTTP_PLAYARR_METRICS_ROUTE_MAX_LEN    128
#define NGX_HTTP_PLAYARR_METRICS_ROUTE_MAX_DEPTH  32


typedef struct ngx_http_playarr_metrics_routes_s
    ngx_http_playarr_metrics_routes_t;


/* a template as given, and the number of its ":username" segment */
typedef struct {
    ngx_str_t                            template;
    ngx_uint_t                           user;
} ngx_http_playarr_metrics_route_t;


/*
 * Express-style route templates compiled into a segment trie.
 *
 * _create() makes an empty set whose memory comes from pool; _add() parses
 * one template, reports a malformed or duplicate one with
 * ngx_conf_log_error(NGX_LOG_EMERG, ...) and returns NGX_CONF_ERROR (a
 * template must also be valid UTF-8 and at most ..._ROUTE_MAX_LEN bytes,
 * since it becomes a label value); templates are numbered 0, 1, ... in the
 * order they were added, and _template() returns the text as it was given.
 * The trie is ready after every _add(): there is no separate compile step.
 *
 * _match() returns the number of the most specific template matching a
 * normalized path (no query string), or NGX_HTTP_PLAYARR_METRICS_NO_ROUTE;
 * it allocates nothing, copies nothing and never writes to the path.
 * Literals compare ASCII case-insensitively; empty segments and a trailing
 * slash in the path are ignored; a path not starting with "/" matches
 * nothing.  Comparing segment by segment from the left, a literal beats
 * ":name.ext" (the longer ext first), which beats ":name", which beats "*".
 *
 * _user() is the number (from 1) of template n's ":username" segment, the
 * first one, or 0 if it has none.  _find() is _match() giving the
 * template matched and its user segment, or NULL.  _segment() finds the
 * n-th segment of a path, counted as _user() counts them.
 */

ngx_http_playarr_metrics_routes_t *ngx_http_playarr_metrics_routes_create(
    ngx_pool_t *pool);
char *ngx_http_playarr_metrics_routes_add(ngx_conf_t *cf,
    ngx_http_playarr_metrics_routes_t *routes, ngx_str_t *template);
ngx_uint_t ngx_http_playarr_metrics_routes_count(
    ngx_http_playarr_metrics_routes_t *routes);
ngx_str_t *ngx_http_playarr_metrics_routes_template(
    ngx_http_playarr_metrics_routes_t *routes, ngx_uint_t n);
ngx_uint_t ngx_http_playarr_metrics_routes_user(
    ngx_http_playarr_metrics_routes_t *routes, ngx_uint_t n);
ngx_uint_t ngx_http_playarr_metrics_routes_match(
    ngx_http_playarr_metrics_routes_t *routes, u_char *path, size_t len);
ngx_http_playarr_metrics_route_t *ngx_http_playarr_metrics_routes_find(
    ngx_http_playarr_metrics_routes_t *routes, u_char *path, size_t len);
ngx_int_t ngx_http_playarr_metrics_routes_segment(u_char *path, size_t len,
    ngx_uint_t n, u_char **start, u_char **end);


#if (__GNUC__ >= 4 || __clang__)
#pragma GCC visibility pop
#endif


#endif /* _NGX_HTTP_PLAYARR_METRICS_ROUTE_H_INCLUDED_ */
