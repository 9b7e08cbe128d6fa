
/*
 * Copyright (C) Playarr metrics module authors
 */


#ifndef _NGX_HTTP_PLAYARR_METRICS_TOKEN_H_INCLUDED_
#define _NGX_HTTP_PLAYARR_METRICS_TOKEN_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/* the module's own symbols are not exported: see the store's header */
#if (__GNUC__ >= 4 || __clang__)
#pragma GCC visibility push(hidden)
#endif


#define NGX_HTTP_PLAYARR_METRICS_TOKEN_MAX          512

/* the verdicts of ngx_http_playarr_metrics_token_auth() */
#define NGX_HTTP_PLAYARR_METRICS_TOKEN_OK           0
#define NGX_HTTP_PLAYARR_METRICS_TOKEN_UNAVAILABLE  1  /* no usable file */
#define NGX_HTTP_PLAYARR_METRICS_TOKEN_MISSING      2  /* no Bearer */
#define NGX_HTTP_PLAYARR_METRICS_TOKEN_MALFORMED    3  /* a bad token68 */
#define NGX_HTTP_PLAYARR_METRICS_TOKEN_INVALID      4  /* another token */


typedef struct {
    ngx_str_t                 path;      /* null-terminated, absolute */

    /* "group=": the file is mode 0640 and owned by this group */
    ngx_gid_t                 gid;
    u_char                   *group;     /* its name; NULL: no group */

    /* the token as this process last read it */
    u_char                    value[NGX_HTTP_PLAYARR_METRICS_TOKEN_MAX];
    size_t                    len;

    /* identity of the file it was read from, to notice rotation */
    dev_t                     dev;
    ngx_file_uniq_t           uniq;
    off_t                     size;
    struct timespec           mtime;
    struct timespec           ctime;

    /* when this process last logged that the file is unusable */
    time_t                    logged;

    unsigned                  valid:1;
} ngx_http_playarr_metrics_token_t;


/* the answer to a request refused by playarr_metrics_auth */

typedef struct {
    ngx_uint_t                status;
    ngx_str_t                *challenge; /* WWW-Authenticate; NULL: none */
    ngx_str_t                *body;      /* JSON */
} ngx_http_playarr_metrics_refusal_t;


/*
 * Config time (the directive, in the master): create the file when
 * missing (mode 0600, or 0640 owned by tk->gid when tk->group is set),
 * read and validate it; logs [emerg] and returns NGX_ERROR when it cannot
 * be used.
 */
ngx_int_t ngx_http_playarr_metrics_token_init(ngx_conf_t *cf,
    ngx_http_playarr_metrics_token_t *tk);

/*
 * Request time: NGX_HTTP_PLAYARR_METRICS_TOKEN_OK when the request
 * carries the current token.  Otherwise the verdict, and in *rf the
 * answer docs/directives.md gives for it, which the content handler
 * sends.  Only the request's headers are looked at: it can be called
 * before the body is read, and it answers nothing itself.
 */
ngx_uint_t ngx_http_playarr_metrics_token_auth(ngx_http_request_t *r,
    ngx_http_playarr_metrics_token_t *tk,
    ngx_http_playarr_metrics_refusal_t *rf);

/*
 * Request time: writes a new token (temp file + rename; mode 0640 and
 * tk->gid when tk->group is set), updates tk; NGX_OK or NGX_ERROR
 * (logged).  Not serialised here: the caller holds a lock across
 * workers.
 */
ngx_int_t ngx_http_playarr_metrics_token_regenerate(ngx_http_request_t *r,
    ngx_http_playarr_metrics_token_t *tk);

/*
 * Request time: re-reads the file if it changed; NGX_OK if tk is usable,
 * NGX_ERROR (logged at most once a minute) if it is not.
 */
ngx_int_t ngx_http_playarr_metrics_token_refresh(ngx_log_t *log,
    ngx_http_playarr_metrics_token_t *tk);


#if (__GNUC__ >= 4 || __clang__)
#pragma GCC visibility pop
#endif


#endif /* _NGX_HTTP_PLAYARR_METRICS_TOKEN_H_INCLUDED_ */
