
/*
 * Copyright (C) Playarr metrics module authors
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include <ngx_http_playarr_metrics_jwt.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/hmac.h>
#include <openssl/params.h>
#include <openssl/rand.h>


#define NGX_HTTP_PLAYARR_METRICS_JWT_SIG_LEN      32

#define NGX_HTTP_PLAYARR_METRICS_JWT_ALIGN        16


/*
 * While the cache's verification parses a cookie's JSON: the cache whose
 * arena jansson's memory comes from (NULL otherwise), and jansson's own
 * allocator.  A worker parses one cookie at a time, in its one thread.
 */
typedef struct {
    ngx_http_playarr_metrics_jwt_cache_t   *cache;
    json_malloc_t                           malloc_fn;
    json_free_t                             free_fn;
} ngx_http_playarr_metrics_jwt_parsing_t;


static ngx_int_t ngx_http_playarr_metrics_jwt_check(ngx_str_t *secret,
    ngx_http_playarr_metrics_jwt_cache_t *cache, u_char *token, size_t len,
    ngx_http_playarr_metrics_jwt_claims_t *claims);
static ngx_int_t ngx_http_playarr_metrics_jwt_parse(u_char *token,
    u_char *dot1, u_char *dot2, u_char *buf,
    ngx_http_playarr_metrics_jwt_claims_t *claims);
static void *ngx_http_playarr_metrics_jwt_alloc(size_t size);
static void ngx_http_playarr_metrics_jwt_free(void *p);
static json_t *ngx_http_playarr_metrics_jwt_json(u_char *src, size_t len,
    u_char *buf);
static ngx_int_t ngx_http_playarr_metrics_jwt_claims(json_t *payload,
    ngx_http_playarr_metrics_jwt_claims_t *claims);
static ngx_int_t ngx_http_playarr_metrics_jwt_string(json_t *o,
    const char *name, u_char *dst, size_t max, size_t *len);
static ngx_int_t ngx_http_playarr_metrics_jwt_time(json_t *o,
    const char *name, time_t *t);
static void ngx_http_playarr_metrics_jwt_cache_cleanup(void *data);


static ngx_http_playarr_metrics_jwt_parsing_t
    ngx_http_playarr_metrics_jwt_parsing;


/* base64url, strictly: the alphabet only, and canonical */

static ngx_int_t
ngx_http_playarr_metrics_jwt_base64(u_char *src, size_t len, ngx_str_t *dst)
{
    u_char     c;
    size_t     i;
    ngx_str_t  in, out;
    u_char     again[4];

    if (len == 0 || len % 4 == 1) {
        return NGX_ERROR;
    }

    for (i = 0; i < len; i++) {
        c = src[i];

        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
              || (c >= '0' && c <= '9') || c == '-' || c == '_'))
        {
            return NGX_ERROR;
        }
    }

    in.data = src;
    in.len = len;

    if (ngx_decode_base64url(dst, &in) != NGX_OK) {
        return NGX_ERROR;
    }

    /* the spare bits of the last character are zero: encoded back alike */

    if (len % 4) {
        in.data = dst->data + (dst->len - dst->len % 3);
        in.len = dst->len % 3;
        out.data = again;

        ngx_encode_base64url(&out, &in);

        if (out.len != len % 4
            || ngx_memcmp(again, src + len - len % 4, out.len) != 0)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_playarr_metrics_jwt_verify(ngx_str_t *secret, u_char *token,
    size_t len, ngx_http_playarr_metrics_jwt_claims_t *claims)
{
    return ngx_http_playarr_metrics_jwt_check(secret, NULL, token, len,
                                              claims);
}


/*
 * _verify(), the HMAC with the secret, or with the cache's context keyed
 * with it, and then jansson's memory from the cache's arena
 */

static ngx_int_t
ngx_http_playarr_metrics_jwt_check(ngx_str_t *secret,
    ngx_http_playarr_metrics_jwt_cache_t *cache, u_char *token, size_t len,
    ngx_http_playarr_metrics_jwt_claims_t *claims)
{
    u_char                                  *dot1, *dot2, *last;
    size_t                                   maclen;
    ngx_int_t                                rc;
    ngx_str_t                                sig;
    EVP_MAC_CTX                             *hmac;
    unsigned int                             n;
    ngx_http_playarr_metrics_jwt_parsing_t  *parsing;
    u_char                                   mac[EVP_MAX_MD_SIZE];
    u_char                     buf[NGX_HTTP_PLAYARR_METRICS_JWT_MAX];

    if (len == 0 || len > NGX_HTTP_PLAYARR_METRICS_JWT_MAX) {
        return NGX_DECLINED;
    }

    last = token + len;

    dot1 = ngx_strlchr(token, last, '.');
    if (dot1 == NULL) {
        return NGX_DECLINED;
    }

    dot2 = ngx_strlchr(dot1 + 1, last, '.');
    if (dot2 == NULL || ngx_strlchr(dot2 + 1, last, '.') != NULL) {
        return NGX_DECLINED;
    }

    /* the signature first: nothing unsigned is parsed */

    if ((size_t) (last - dot2 - 1)
        != ngx_base64_encoded_length(NGX_HTTP_PLAYARR_METRICS_JWT_SIG_LEN) - 1)
    {
        return NGX_DECLINED;
    }

    sig.data = buf;

    if (ngx_http_playarr_metrics_jwt_base64(dot2 + 1, last - dot2 - 1, &sig)
        != NGX_OK
        || sig.len != NGX_HTTP_PLAYARR_METRICS_JWT_SIG_LEN)
    {
        return NGX_DECLINED;
    }

    if (cache) {

        /* the key set once: its pads are not computed again */

        hmac = cache->hmac;

        if (EVP_MAC_init(hmac, NULL, 0, NULL) != 1
            || EVP_MAC_update(hmac, token, dot2 - token) != 1
            || EVP_MAC_final(hmac, mac, &maclen, sizeof(mac)) != 1)
        {
            return NGX_DECLINED;
        }

    } else {
        if (HMAC(EVP_sha256(), secret->data, (int) secret->len, token,
                 dot2 - token, mac, &n)
            == NULL)
        {
            return NGX_DECLINED;
        }

        maclen = n;
    }

    if (maclen != NGX_HTTP_PLAYARR_METRICS_JWT_SIG_LEN
        || CRYPTO_memcmp(mac, sig.data, maclen) != 0)
    {
        return NGX_DECLINED;
    }

    if (cache == NULL) {
        return ngx_http_playarr_metrics_jwt_parse(token, dot1, dot2, buf,
                                                  claims);
    }

    /*
     * Every value jansson makes lives only through the parse: from the
     * arena, taken from its start each time, so that a new cookie calls
     * no malloc() (beyond the arena only) and leaves no holes among the
     * requests' memory
     */

    parsing = &ngx_http_playarr_metrics_jwt_parsing;

    json_get_alloc_funcs(&parsing->malloc_fn, &parsing->free_fn);

    parsing->cache = cache;
    cache->arena_used = 0;

    json_set_alloc_funcs(ngx_http_playarr_metrics_jwt_alloc,
                         ngx_http_playarr_metrics_jwt_free);

    rc = ngx_http_playarr_metrics_jwt_parse(token, dot1, dot2, buf, claims);

    json_set_alloc_funcs(parsing->malloc_fn, parsing->free_fn);

    parsing->cache = NULL;

    return rc;
}


/* the header (HS256 only) and the payload of a signed token */

static ngx_int_t
ngx_http_playarr_metrics_jwt_parse(u_char *token, u_char *dot1, u_char *dot2,
    u_char *buf, ngx_http_playarr_metrics_jwt_claims_t *claims)
{
    json_t     *header, *payload, *alg;
    ngx_int_t   rc;

    header = ngx_http_playarr_metrics_jwt_json(token, dot1 - token, buf);
    if (header == NULL) {
        return NGX_DECLINED;
    }

    alg = json_object_get(header, "alg");

    rc = (json_is_string(alg)
          && ngx_strcmp(json_string_value(alg), "HS256") == 0
          && json_string_length(alg) == 5)
         ? NGX_OK : NGX_DECLINED;

    json_decref(header);

    if (rc != NGX_OK) {
        return NGX_DECLINED;
    }

    payload = ngx_http_playarr_metrics_jwt_json(dot1 + 1, dot2 - dot1 - 1,
                                                buf);
    if (payload == NULL) {
        return NGX_DECLINED;
    }

    rc = ngx_http_playarr_metrics_jwt_claims(payload, claims);

    json_decref(payload);

    return rc;
}


static void *
ngx_http_playarr_metrics_jwt_alloc(size_t size)
{
    void                                  *p;
    size_t                                 n;
    ngx_http_playarr_metrics_jwt_cache_t  *cache;

    cache = ngx_http_playarr_metrics_jwt_parsing.cache;

    n = ngx_align(size, NGX_HTTP_PLAYARR_METRICS_JWT_ALIGN);

    if (n >= size
        && n <= NGX_HTTP_PLAYARR_METRICS_JWT_ARENA - cache->arena_used)
    {
        p = cache->arena + cache->arena_used;
        cache->arena_used += n;
        return p;
    }

    /* beyond the arena (a larger cookie than any session) */

    return ngx_http_playarr_metrics_jwt_parsing.malloc_fn(size);
}


static void
ngx_http_playarr_metrics_jwt_free(void *p)
{
    u_char  *a;

    a = ngx_http_playarr_metrics_jwt_parsing.cache->arena;

    /* the arena's bytes are taken back all at once, by the next parse */

    if ((u_char *) p >= a
        && (u_char *) p < a + NGX_HTTP_PLAYARR_METRICS_JWT_ARENA)
    {
        return;
    }

    ngx_http_playarr_metrics_jwt_parsing.free_fn(p);
}


/* a JSON object from its base64url text; buf holds the decoded bytes */

static json_t *
ngx_http_playarr_metrics_jwt_json(u_char *src, size_t len, u_char *buf)
{
    json_t        *o;
    ngx_str_t      text;
    json_error_t   jerr;

    text.data = buf;

    if (ngx_http_playarr_metrics_jwt_base64(src, len, &text) != NGX_OK) {
        return NULL;
    }

    o = json_loadb((char *) text.data, text.len, JSON_REJECT_DUPLICATES,
                   &jerr);

    if (o == NULL) {
        return NULL;
    }

    if (!json_is_object(o)) {
        json_decref(o);
        return NULL;
    }

    return o;
}


static ngx_int_t
ngx_http_playarr_metrics_jwt_claims(json_t *payload,
    ngx_http_playarr_metrics_jwt_claims_t *claims)
{
    ngx_memzero(claims, sizeof(ngx_http_playarr_metrics_jwt_claims_t));

    if (ngx_http_playarr_metrics_jwt_string(payload, "sub", claims->user,
                                    NGX_HTTP_PLAYARR_METRICS_JWT_USER_MAX,
                                    &claims->user_len)
        != NGX_OK
        || claims->user_len == 0)
    {
        return NGX_DECLINED;
    }

    if (json_object_get(payload, "role") != NULL
        && ngx_http_playarr_metrics_jwt_string(payload, "role", claims->role,
                                    NGX_HTTP_PLAYARR_METRICS_JWT_ROLE_MAX,
                                    &claims->role_len)
           != NGX_OK)
    {
        return NGX_DECLINED;
    }

    claims->valid_from = -NGX_MAX_TIME_T_VALUE;
    claims->valid_until = NGX_MAX_TIME_T_VALUE;

    if (ngx_http_playarr_metrics_jwt_time(payload, "exp",
                                          &claims->valid_until)
        == NGX_ERROR
        || ngx_http_playarr_metrics_jwt_time(payload, "nbf",
                                             &claims->valid_from)
           == NGX_ERROR)
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* a string claim of at most max bytes, with no control characters */

static ngx_int_t
ngx_http_playarr_metrics_jwt_string(json_t *o, const char *name, u_char *dst,
    size_t max, size_t *len)
{
    size_t       i, n;
    json_t      *v;
    const char  *s;

    v = json_object_get(o, name);

    if (!json_is_string(v)) {
        return NGX_ERROR;
    }

    s = json_string_value(v);
    n = json_string_length(v);

    if (n > max) {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        if ((u_char) s[i] < 0x20 || s[i] == 0x7f) {
            return NGX_ERROR;
        }
    }

    ngx_memcpy(dst, s, n);
    *len = n;

    return NGX_OK;
}


/*
 * NGX_OK: a number, *t the first whole second not before it (a whole
 * second compares with it as the number itself would), within what
 * time_t holds; NGX_DECLINED: absent; NGX_ERROR: anything else
 */

static ngx_int_t
ngx_http_playarr_metrics_jwt_time(json_t *o, const char *name, time_t *t)
{
    double   d;
    json_t  *v;

    v = json_object_get(o, name);

    if (v == NULL) {
        return NGX_DECLINED;
    }

    if (!json_is_number(v)) {
        return NGX_ERROR;
    }

    d = json_number_value(v);

    if (d >= (double) NGX_MAX_TIME_T_VALUE) {
        *t = NGX_MAX_TIME_T_VALUE;

    } else if (d <= (double) -NGX_MAX_TIME_T_VALUE) {
        *t = -NGX_MAX_TIME_T_VALUE;

    } else {
        *t = (time_t) d;

        if ((double) *t < d) {
            (*t)++;
        }
    }

    return NGX_OK;
}


ngx_http_playarr_metrics_jwt_cache_t *
ngx_http_playarr_metrics_jwt_cache(ngx_pool_t *pool, ngx_str_t *secret)
{
    size_t                                 size;
    EVP_MAC                               *mac;
    OSSL_PARAM                             params[2];
    ngx_pool_cleanup_t                    *cln;
    ngx_http_playarr_metrics_jwt_cache_t  *cache;

    cache = ngx_palloc(pool, sizeof(ngx_http_playarr_metrics_jwt_cache_t));
    if (cache == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    /* an HMAC-SHA256 keyed with the secret, for every verification */

    mac = EVP_MAC_fetch(NULL, OSSL_MAC_NAME_HMAC, NULL);
    if (mac == NULL) {
        return NULL;
    }

    cache->hmac = EVP_MAC_CTX_new(mac);

    EVP_MAC_free(mac);

    if (cache->hmac == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_playarr_metrics_jwt_cache_cleanup;
    cln->data = cache;

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                 (char *) "SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();

    if (EVP_MAC_init(cache->hmac, secret->data, secret->len, params) != 1) {
        return NULL;
    }

    size = NGX_HTTP_PLAYARR_METRICS_JWT_SETS
           * NGX_HTTP_PLAYARR_METRICS_JWT_WAYS
           * sizeof(ngx_http_playarr_metrics_jwt_entry_t);

    cache->entries = ngx_pcalloc(pool, size);
    if (cache->entries == NULL) {
        return NULL;
    }

    cache->arena = ngx_palloc(pool, NGX_HTTP_PLAYARR_METRICS_JWT_ARENA
                                    + NGX_HTTP_PLAYARR_METRICS_JWT_ALIGN);
    if (cache->arena == NULL) {
        return NULL;
    }

    cache->arena = ngx_align_ptr(cache->arena,
                                 NGX_HTTP_PLAYARR_METRICS_JWT_ALIGN);

    cache->arena_used = 0;

    /* keyed: which cookies share a set is not for a client to choose */

    if (RAND_bytes((u_char *) cache->key, sizeof(cache->key)) != 1) {
        cache->key[0] = ((uint64_t) ngx_random() << 32) ^ ngx_random();
        cache->key[1] = ((uint64_t) ngx_random() << 32) ^ ngx_random();
    }

    return cache;
}


static void
ngx_http_playarr_metrics_jwt_cache_cleanup(void *data)
{
    ngx_http_playarr_metrics_jwt_cache_t  *cache = data;

    EVP_MAC_CTX_free(cache->hmac);
}


ngx_http_playarr_metrics_jwt_claims_t *
ngx_http_playarr_metrics_jwt_lookup(ngx_http_playarr_metrics_jwt_cache_t *cache,
    u_char *token, size_t len, ngx_http_playarr_metrics_jwt_claims_t *tmp)
{
    uint64_t                               h;
    ngx_uint_t                             i;
    ngx_http_playarr_metrics_jwt_entry_t  *set, *e;

    if (len == 0 || len > NGX_HTTP_PLAYARR_METRICS_JWT_CACHE_TOKEN) {
        return (ngx_http_playarr_metrics_jwt_check(NULL, cache, token, len,
                                                   tmp)
                == NGX_OK) ? tmp : NULL;
    }

    set = ngx_http_playarr_metrics_jwt_set(cache, token, len, &h);

    for (i = 0; i < NGX_HTTP_PLAYARR_METRICS_JWT_WAYS; i++) {
        e = &set[i];

        if (e->hash == h && e->len == len
            && ngx_memcmp(e->token, token, len) == 0)
        {
            return e->valid ? &e->claims : NULL;
        }
    }

    for (i = NGX_HTTP_PLAYARR_METRICS_JWT_WAYS - 1; i; i--) {
        set[i] = set[i - 1];
    }

    e = &set[0];

    e->valid = (ngx_http_playarr_metrics_jwt_check(NULL, cache, token, len,
                                                   &e->claims)
                == NGX_OK);
    e->whole = (ngx_strlchr(token, token + len, ';') == NULL);
    e->hash = h;
    e->len = (uint16_t) len;
    ngx_memcpy(e->token, token, len);

    return e->valid ? &e->claims : NULL;
}
