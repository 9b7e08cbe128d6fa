
/*
 * Copyright (C) Playarr metrics module authors
 */


#ifndef _NGX_HTTP_PLAYARR_METRICS_JWT_H_INCLUDED_
#define _NGX_HTTP_PLAYARR_METRICS_JWT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/* the module's own symbols are not exported: see the store's header */
#if (__GNUC__ >= 4 || __clang__)
#pragma GCC visibility push(hidden)
#endif


/* the longest session cookie looked at, and the parts of one kept */
#define NGX_HTTP_PLAYARR_METRICS_JWT_MAX        4096
#define NGX_HTTP_PLAYARR_METRICS_JWT_USER_MAX   128
#define NGX_HTTP_PLAYARR_METRICS_JWT_ROLE_MAX   32

/* the largest secret file read */
#define NGX_HTTP_PLAYARR_METRICS_JWT_SECRET_MAX  65536


/* what a cookie says, as far as its signature and claims go */
typedef struct {
    double                    exp;
    double                    nbf;
    size_t                    user_len;
    size_t                    role_len;
    u_char                    user[NGX_HTTP_PLAYARR_METRICS_JWT_USER_MAX];
    u_char                    role[NGX_HTTP_PLAYARR_METRICS_JWT_ROLE_MAX];
    unsigned                  has_exp:1;
    unsigned                  has_nbf:1;
} ngx_http_playarr_metrics_jwt_claims_t;


/*
 * Sessions a worker verified lately, keyed by the cookie's value: a known
 * cookie costs a hash and a compare, not an HMAC.  Created per worker.
 */
typedef struct ngx_http_playarr_metrics_jwt_cache_s
    ngx_http_playarr_metrics_jwt_cache_t;


/*
 * _verify(): NGX_OK when token is a JWS compact token whose header is a
 * JSON object with "alg": "HS256", whose HMAC-SHA256 under secret is its
 * signature (compared in constant time), and whose payload is a JSON
 * object with a string "sub" (1 to ..._USER_MAX bytes), an optional string
 * "role" (at most ..._ROLE_MAX bytes) and optional numeric "exp" and
 * "nbf"; claims then holds them.  Base64url without padding, strictly
 * (no other characters, no non-zero spare bits), JSON strictly (jansson,
 * duplicate keys refused).  NGX_DECLINED otherwise.  The times are not
 * checked here: see _current().
 */
ngx_int_t ngx_http_playarr_metrics_jwt_verify(ngx_str_t *secret,
    u_char *token, size_t len, ngx_http_playarr_metrics_jwt_claims_t *claims);

/* 1 when the claims hold at now: before "exp", not before "nbf" */
ngx_uint_t ngx_http_playarr_metrics_jwt_current(
    ngx_http_playarr_metrics_jwt_claims_t *claims, time_t now);

ngx_http_playarr_metrics_jwt_cache_t *ngx_http_playarr_metrics_jwt_cache(
    ngx_pool_t *pool);

/*
 * The claims of a cookie value whose signature checks out, from the cache
 * or verified and kept (a cookie too long to keep is verified into tmp);
 * NULL for a cookie that does not verify (kept too, so that a bad cookie
 * sent again costs no HMAC either).
 */
ngx_http_playarr_metrics_jwt_claims_t *ngx_http_playarr_metrics_jwt_lookup(
    ngx_http_playarr_metrics_jwt_cache_t *cache, ngx_str_t *secret,
    u_char *token, size_t len, ngx_http_playarr_metrics_jwt_claims_t *tmp);


#if (__GNUC__ >= 4 || __clang__)
#pragma GCC visibility pop
#endif


#endif /* _NGX_HTTP_PLAYARR_METRICS_JWT_H_INCLUDED_ */
