
/*
 * Copyright (C) Playarr metrics module authors
 */


/*
 * The session cookie verifier, ngx_http_playarr_metrics_jwt.c, and its
 * per-worker cache.
 *
 * Input: a flags byte, then
 * - flags & 1 == 0: a cookie value as a client sends it.  Accepted only
 *   when its signature is the HMAC-SHA256 of its first two parts under
 *   the secret, recomputed here, and its header says "alg": "HS256"; the
 *   claims then keep to their limits (sub of 1 to 128 bytes without
 *   control characters, role of at most 32);
 * - flags & 1 == 1: a header and a payload, split at the first NUL byte,
 *   encoded and signed here with the secret (flags & 2: another key).
 *   Under the secret, a header of exactly {"alg":"HS256"} and a payload
 *   of exactly {"sub":"<1 to 128 bytes of [a-z]>"} must be accepted, with
 *   that sub; under another key, nothing is.
 * Either way the cache (looked up twice) answers as _verify() does, the
 * same claims; then _find() as well for a value it keeps whole (1 to 512
 * bytes, no ";"), and never for another.
 */


#include "fuzz.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>


#define FUZZ_SECRET  "playarr-fuzz-secret"


int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_check_claims(ngx_http_playarr_metrics_jwt_claims_t *c);
static void fuzz_check_signed(u_char *token, size_t len);
static ngx_uint_t fuzz_simple(u_char *header, size_t hlen, u_char *payload,
    size_t plen, ngx_str_t *sub);


static ngx_str_t                              fuzz_secret =
    ngx_string(FUZZ_SECRET);
static ngx_http_playarr_metrics_jwt_cache_t  *fuzz_cache;
static ngx_pool_t                            *fuzz_pool;


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init();

    fuzz_pool = ngx_create_pool(4096, &fuzz_log);
    if (fuzz_pool == NULL) {
        fuzz_fatal("ngx_create_pool() failed");
    }

    fuzz_cache = ngx_http_playarr_metrics_jwt_cache(fuzz_pool, &fuzz_secret);
    if (fuzz_cache == NULL) {
        fuzz_fatal("the cache was not made");
    }

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                                 *token, *p, *nul;
    size_t                                  len, hlen, plen;
    ngx_int_t                               rc;
    ngx_str_t                               sub, in, out, key;
    ngx_uint_t                              simple, i, whole;
    ngx_http_playarr_metrics_jwt_claims_t   claims, tmp, *cached;
    unsigned int                            maclen;
    u_char                                  mac[EVP_MAX_MD_SIZE];

    if (size < 1) {
        return 0;
    }

    token = malloc(2 * size + 128);
    if (token == NULL) {
        fuzz_fatal("malloc() failed");
    }

    simple = 0;
    ngx_str_null(&sub);

    if ((data[0] & 1) == 0) {
        len = size - 1;
        ngx_memcpy(token, data + 1, len);

    } else {
        p = (u_char *) data + 1;
        nul = memchr(p, '\0', size - 1);
        hlen = nul ? (size_t) (nul - p) : size - 1;
        plen = nul ? size - 2 - hlen : 0;

        simple = fuzz_simple(p, hlen, nul ? nul + 1 : NULL, plen, &sub);

        in.data = p;
        in.len = hlen;
        out.data = token;
        ngx_encode_base64url(&out, &in);
        len = out.len;
        token[len++] = '.';

        in.data = nul ? nul + 1 : p;
        in.len = plen;
        out.data = token + len;
        ngx_encode_base64url(&out, &in);
        len += out.len;

        key = fuzz_secret;

        if (data[0] & 2) {
            key.data = (u_char *) "another-key";
            key.len = 11;
            simple = 0;
        }

        if (HMAC(EVP_sha256(), key.data, (int) key.len, token, len, mac,
                 &maclen)
            == NULL)
        {
            fuzz_fatal("HMAC() failed");
        }

        token[len++] = '.';
        in.data = mac;
        in.len = maclen;
        out.data = token + len;
        ngx_encode_base64url(&out, &in);
        len += out.len;
    }

    rc = ngx_http_playarr_metrics_jwt_verify(&fuzz_secret, token, len,
                                             &claims);

    if (rc == NGX_OK) {
        fuzz_check_claims(&claims);
        fuzz_check_signed(token, len);

        if ((data[0] & 3) == 3) {
            fuzz_fatal("a token signed with another key was accepted");
        }

    } else if (rc != NGX_DECLINED) {
        fuzz_fatal("_verify() returned %d", (int) rc);
    }

    if (simple) {
        if (rc != NGX_OK) {
            fuzz_fatal("a plain HS256 session of sub \"%.*s\" was refused",
                       (int) sub.len, sub.data);
        }

        if (claims.user_len != sub.len
            || ngx_memcmp(claims.user, sub.data, sub.len) != 0)
        {
            fuzz_fatal("the user is not the sub");
        }
    }

    for (i = 0; i < 2; i++) {
        cached = ngx_http_playarr_metrics_jwt_lookup(fuzz_cache, token, len,
                                                     &tmp);

        if ((cached != NULL) != (rc == NGX_OK)) {
            fuzz_fatal("the cache says otherwise than _verify() (%d)",
                       (int) i);
        }

        if (cached
            && (cached->user_len != claims.user_len
                || ngx_memcmp(cached->user, claims.user, claims.user_len)
                   != 0
                || cached->role_len != claims.role_len
                || ngx_memcmp(cached->role, claims.role, claims.role_len)
                   != 0
                || cached->valid_from != claims.valid_from
                || cached->valid_until != claims.valid_until))
        {
            fuzz_fatal("the cache holds other claims");
        }
    }

    whole = (len > 0 && len <= NGX_HTTP_PLAYARR_METRICS_JWT_CACHE_TOKEN
             && memchr(token, ';', len) == NULL);

    switch (ngx_http_playarr_metrics_jwt_find(fuzz_cache, token, len,
                                              &cached))
    {
    case NGX_OK:
        if (!whole) {
            fuzz_fatal("_find() answers for a value not kept whole");
        }

        if ((cached != NULL) != (rc == NGX_OK)) {
            fuzz_fatal("_find() says otherwise than _verify()");
        }

        break;

    default:
        if (whole) {
            fuzz_fatal("_find() misses a value just kept");
        }
    }

    free(token);

    return 0;
}


static void
fuzz_check_claims(ngx_http_playarr_metrics_jwt_claims_t *c)
{
    size_t  i;

    if (c->user_len == 0
        || c->user_len > NGX_HTTP_PLAYARR_METRICS_JWT_USER_MAX
        || c->role_len > NGX_HTTP_PLAYARR_METRICS_JWT_ROLE_MAX)
    {
        fuzz_fatal("claims out of their limits");
    }

    for (i = 0; i < c->user_len; i++) {
        if (c->user[i] < 0x20 || c->user[i] == 0x7f) {
            fuzz_fatal("a control character in the user");
        }
    }
}


/* an accepted token: its signature and its header, checked again here */

static void
fuzz_check_signed(u_char *token, size_t len)
{
    u_char        *dot1, *dot2, *last;
    json_t        *h, *alg;
    ngx_str_t      in, out;
    unsigned int   maclen;
    u_char         mac[EVP_MAX_MD_SIZE];
    u_char         text[4096], sig[64];

    last = token + len;
    dot1 = memchr(token, '.', len);
    dot2 = dot1 ? memchr(dot1 + 1, '.', last - dot1 - 1) : NULL;

    if (dot2 == NULL) {
        fuzz_fatal("accepted without two dots");
    }

    if (HMAC(EVP_sha256(), fuzz_secret.data, (int) fuzz_secret.len, token,
             dot2 - token, mac, &maclen)
        == NULL)
    {
        fuzz_fatal("HMAC() failed");
    }

    in.data = mac;
    in.len = maclen;
    out.data = sig;
    ngx_encode_base64url(&out, &in);

    if ((size_t) (last - dot2 - 1) != out.len
        || ngx_memcmp(dot2 + 1, sig, out.len) != 0)
    {
        fuzz_fatal("accepted with a signature that is not the HMAC");
    }

    in.data = token;
    in.len = dot1 - token;
    out.data = text;

    if (in.len > 4000 || ngx_decode_base64url(&out, &in) != NGX_OK) {
        fuzz_fatal("accepted with a header that does not decode");
    }

    h = json_loadb((char *) text, out.len, 0, NULL);
    alg = json_object_get(h, "alg");

    if (!json_is_string(alg) || strcmp(json_string_value(alg), "HS256")) {
        fuzz_fatal("accepted with a header that is not HS256");
    }

    json_decref(h);
}


/* {"alg":"HS256"} and {"sub":"[a-z]{1,128}"}, exactly */

static ngx_uint_t
fuzz_simple(u_char *header, size_t hlen, u_char *payload, size_t plen,
    ngx_str_t *sub)
{
    size_t  i, n;

    if (payload == NULL || hlen != sizeof("{\"alg\":\"HS256\"}") - 1
        || ngx_memcmp(header, "{\"alg\":\"HS256\"}", hlen) != 0
        || plen < sizeof("{\"sub\":\"\"}")
        || ngx_memcmp(payload, "{\"sub\":\"", 8) != 0
        || ngx_memcmp(payload + plen - 2, "\"}", 2) != 0)
    {
        return 0;
    }

    n = plen - 10;

    if (n == 0 || n > NGX_HTTP_PLAYARR_METRICS_JWT_USER_MAX) {
        return 0;
    }

    for (i = 0; i < n; i++) {
        if (payload[8 + i] < 'a' || payload[8 + i] > 'z') {
            return 0;
        }
    }

    sub->data = payload + 8;
    sub->len = n;

    return 1;
}
