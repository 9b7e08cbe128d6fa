
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


/*
 * What a cookie says, as far as its signature and claims go.  Its times
 * in whole seconds, as ngx_time() has them: valid from "nbf" (rounded
 * up; the smallest time_t without one) until "exp" (rounded up, the
 * second it expires; the largest time_t without one).
 */
typedef struct {
    time_t                    valid_from;
    time_t                    valid_until;
    size_t                    user_len;
    size_t                    role_len;
    u_char                    user[NGX_HTTP_PLAYARR_METRICS_JWT_USER_MAX];
    u_char                    role[NGX_HTTP_PLAYARR_METRICS_JWT_ROLE_MAX];
} ngx_http_playarr_metrics_jwt_claims_t;


/*
 * Sessions a worker verified lately, keyed by the cookie's value: a known
 * cookie costs a hash and a compare, not an HMAC.  Created per worker:
 * 256 sets of 2 entries, the newest first; a cookie longer than
 * ..._CACHE_TOKEN bytes (Playarr's are about 200) is verified every time.
 * About 720 bytes an entry, 360 kB a worker.
 */

#define NGX_HTTP_PLAYARR_METRICS_JWT_SET_BITS     8
#define NGX_HTTP_PLAYARR_METRICS_JWT_SETS                                    \
    (1 << NGX_HTTP_PLAYARR_METRICS_JWT_SET_BITS)
#define NGX_HTTP_PLAYARR_METRICS_JWT_WAYS         2
#define NGX_HTTP_PLAYARR_METRICS_JWT_CACHE_TOKEN  512

/* jansson's memory for the parse of one cookie, most of it for 4 kB */
#define NGX_HTTP_PLAYARR_METRICS_JWT_ARENA        16384


typedef struct {
    uint64_t                                hash;
    uint16_t                                len;       /* 0: unused */
    u_char                                  valid;
    u_char                                  whole;     /* no ";" in it */
    ngx_http_playarr_metrics_jwt_claims_t   claims;
    u_char                    token[NGX_HTTP_PLAYARR_METRICS_JWT_CACHE_TOKEN];
} ngx_http_playarr_metrics_jwt_entry_t;


typedef struct {
    uint64_t                                key[2];    /* random */
    ngx_http_playarr_metrics_jwt_entry_t   *entries;
    void                                   *hmac;      /* EVP_MAC_CTX */
    u_char                                 *arena;
    size_t                                  arena_used;
} ngx_http_playarr_metrics_jwt_cache_t;


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

/*
 * 1 when the claims hold at now, as jsonwebtoken has it: expired from
 * "exp" on, valid from "nbf" on
 */
#define ngx_http_playarr_metrics_jwt_current(claims, now)                    \
    ((now) >= (claims)->valid_from && (now) < (claims)->valid_until)

/* a cache for cookies signed with that secret; NULL on failure */
ngx_http_playarr_metrics_jwt_cache_t *ngx_http_playarr_metrics_jwt_cache(
    ngx_pool_t *pool, ngx_str_t *secret);

/*
 * The claims of a cookie value whose signature checks out under the
 * cache's secret, from the cache or verified and kept (a cookie too long
 * to keep is verified into tmp); NULL for a cookie that does not verify
 * (kept too, so that a bad cookie sent again costs no HMAC either).
 */
ngx_http_playarr_metrics_jwt_claims_t *ngx_http_playarr_metrics_jwt_lookup(
    ngx_http_playarr_metrics_jwt_cache_t *cache, u_char *token, size_t len,
    ngx_http_playarr_metrics_jwt_claims_t *tmp);


/*
 * The set of a value of 1 to ..._CACHE_TOKEN bytes, *hash its hash.  The
 * hash is of the last 16 bytes, those of a session's signature, which
 * differ from one session to the next (the compare is of the whole
 * value): two multiplications of their two words with the worker's key,
 * whose top bits pick the set.  Fewer bytes are taken one at a time.
 */

static ngx_inline ngx_http_playarr_metrics_jwt_entry_t *
ngx_http_playarr_metrics_jwt_set(ngx_http_playarr_metrics_jwt_cache_t *cache,
    u_char *token, size_t len, uint64_t *hash)
{
    size_t    n;
    uint64_t  a, b, h;

    if (len >= 2 * sizeof(uint64_t)) {
        ngx_memcpy(&a, token + len - 2 * sizeof(uint64_t), sizeof(uint64_t));
        ngx_memcpy(&b, token + len - sizeof(uint64_t), sizeof(uint64_t));

    } else {
        a = 0;
        b = 0;

        for (n = 0; n < len; n++) {
            a = (a << 8) | (b >> 56);
            b = (b << 8) | token[n];
        }
    }

    h = ((a ^ cache->key[0]) * 0x9e3779b97f4a7c15ULL) ^ b ^ cache->key[1];
    h *= 0xc2b2ae3d27d4eb4fULL;

    *hash = h;

    return &cache->entries[(h >> (64 - NGX_HTTP_PLAYARR_METRICS_JWT_SET_BITS))
                           * NGX_HTTP_PLAYARR_METRICS_JWT_WAYS];
}


/*
 * The verdict of a value kept in the cache that is exactly those bytes
 * and has no ";" (so that in a Cookie header it would be a whole value):
 * NGX_OK, *claims set as by _lookup(); NGX_DECLINED when there is none.
 * Nothing is verified or kept: a known session's whole cost, inline.
 */

static ngx_inline ngx_int_t
ngx_http_playarr_metrics_jwt_find(ngx_http_playarr_metrics_jwt_cache_t *cache,
    u_char *token, size_t len, ngx_http_playarr_metrics_jwt_claims_t **claims)
{
    uint64_t                               h;
    ngx_uint_t                             i;
    ngx_http_playarr_metrics_jwt_entry_t  *set, *e;

    if (len == 0 || len > NGX_HTTP_PLAYARR_METRICS_JWT_CACHE_TOKEN) {
        return NGX_DECLINED;
    }

    set = ngx_http_playarr_metrics_jwt_set(cache, token, len, &h);

    for (i = 0; i < NGX_HTTP_PLAYARR_METRICS_JWT_WAYS; i++) {
        e = &set[i];

        if (e->hash == h && e->len == len && e->whole
            && ngx_memcmp(e->token, token, len) == 0)
        {
            *claims = e->valid ? &e->claims : NULL;
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


#if (__GNUC__ >= 4 || __clang__)
#pragma GCC visibility pop
#endif


#endif /* _NGX_HTTP_PLAYARR_METRICS_JWT_H_INCLUDED_ */
