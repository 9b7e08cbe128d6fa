
/*
 * Copyright (C) Playarr metrics module authors
 */


/*
 * The Authorization parser and the token check of
 * ngx_http_playarr_metrics_token.c, which is included here whole so that
 * its static functions can be called.
 *
 * Input: a flags byte, then
 * - flags & 1 == 0: an Authorization header value.  The parser's answer
 *   is compared with the RFC 7235 / RFC 6750 grammar written out below
 *   (credentials = "Bearer" 1*SP token68, the scheme case-insensitive,
 *   optional whitespace around the field value); a token points into the
 *   value, never a copy.  Then _token_auth() judges a request carrying it,
 *   against the token file written at start: accepted only for the exact
 *   token, otherwise the verdict and the 401 or 400 of docs/directives.md,
 *   which it leaves to the handler to send;
 * - flags & 1 == 1: the content of the token file, written (temp file +
 *   rename) and re-read by _token_refresh(): usable exactly when, without
 *   surrounding whitespace, it is 1 to 512 bytes of printable ASCII, and
 *   then "Bearer <it>" is accepted when it is a token68.
 *
 * No log line and no answer may hold the token.
 */


#include <ngx_http_playarr_metrics_token.c>

#include "fuzz.h"


#define FUZZ_TOKEN                                                            \
    "5f2b8c0d9e7a41f3b6c2d8e0a9f17b3c4d5e6f708192a3b4c5d6e7f8091a2b3c"


int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_header(u_char *value, size_t len);
static void fuzz_file(u_char *content, size_t len);
static ngx_int_t fuzz_grammar(u_char *p, size_t len);
static ngx_uint_t fuzz_token68(u_char *p, u_char *last);
static ngx_uint_t fuzz_tchar(u_char c);
static ngx_uint_t fuzz_auth(u_char *value, size_t len,
    ngx_http_playarr_metrics_refusal_t *rf);
static void fuzz_write_token(u_char *content, size_t len);
static void fuzz_no_token(ngx_uint_t level, u_char *msg, size_t len);
static void fuzz_cleanup(void);


static ngx_http_playarr_metrics_token_t  fuzz_tk;

static char        fuzz_dir[] = "/tmp/playarr-fuzz-auth-XXXXXX";
static u_char      fuzz_path[64];
static u_char      fuzz_secret[NGX_HTTP_PLAYARR_METRICS_TOKEN_MAX + 1];
static size_t      fuzz_secret_len;


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init();

    if (mkdtemp(fuzz_dir) == NULL) {
        fuzz_fatal("mkdtemp() failed");
    }

    ngx_sprintf(fuzz_path, "%s/metrics.token%Z", fuzz_dir);

    atexit(fuzz_cleanup);

    fuzz_tk.path.data = fuzz_path;
    fuzz_tk.path.len = ngx_strlen(fuzz_path);

    fuzz_log_hook = fuzz_no_token;

    fuzz_write_token((u_char *) FUZZ_TOKEN, sizeof(FUZZ_TOKEN) - 1);

    if (ngx_http_playarr_metrics_token_refresh(&fuzz_log, &fuzz_tk)
        != NGX_OK)
    {
        fuzz_fatal("the token file is not usable");
    }

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char  *copy;

    if (size == 0) {
        return 0;
    }

    /* a block of its exact size: reading past the value is seen */

    copy = malloc(size - 1 ? size - 1 : 1);
    if (copy == NULL) {
        fuzz_fatal("malloc() failed");
    }

    ngx_memcpy(copy, data + 1, size - 1);

    if (data[0] & 1) {
        fuzz_file(copy, size - 1);

        /* the next input starts from the same token */

        fuzz_write_token((u_char *) FUZZ_TOKEN, sizeof(FUZZ_TOKEN) - 1);

        if (ngx_http_playarr_metrics_token_refresh(&fuzz_log, &fuzz_tk)
            != NGX_OK)
        {
            fuzz_fatal("the token file is not usable");
        }

    } else {
        fuzz_header(copy, size - 1);
    }

    free(copy);

    return 0;
}


static void
fuzz_header(u_char *value, size_t len)
{
    ngx_int_t                           rc, expect;
    ngx_str_t                           v, token;
    ngx_uint_t                          exact, verdict;
    ngx_http_playarr_metrics_refusal_t  rf;

    v.data = value;
    v.len = len;
    token.data = NULL;
    token.len = 0;

    rc = ngx_http_playarr_metrics_token_parse(&v, &token);
    expect = fuzz_grammar(value, len);

    if (rc != expect) {
        fuzz_fatal("\"%.*s\": parse %d, the grammar %d", (int) len, value,
                   (int) rc, (int) expect);
    }

    exact = 0;

    if (rc == NGX_OK) {
        if (token.len == 0
            || token.data < value
            || token.data + token.len > value + len
            || !fuzz_token68(token.data, token.data + token.len))
        {
            fuzz_fatal("\"%.*s\": a bad token", (int) len, value);
        }

        exact = (token.len == sizeof(FUZZ_TOKEN) - 1
                 && ngx_memcmp(token.data, FUZZ_TOKEN, token.len) == 0);
    }

    /* the whole check, as a request meets it */

    verdict = fuzz_auth(value, len, &rf);

    if (exact) {
        if (verdict != NGX_HTTP_PLAYARR_METRICS_TOKEN_OK) {
            fuzz_fatal("the right token is refused");
        }

        return;
    }

    switch (rc) {

    case NGX_OK:
        if (verdict != NGX_HTTP_PLAYARR_METRICS_TOKEN_INVALID
            || rf.status != NGX_HTTP_UNAUTHORIZED
            || rf.challenge
               != &ngx_http_playarr_metrics_token_challenge_invalid
            || rf.body != &ngx_http_playarr_metrics_token_invalid)
        {
            fuzz_fatal("a wrong token is not a 401 invalid_token");
        }
        break;

    case NGX_DECLINED:
        if (verdict != NGX_HTTP_PLAYARR_METRICS_TOKEN_MISSING
            || rf.status != NGX_HTTP_UNAUTHORIZED
            || rf.challenge != &ngx_http_playarr_metrics_token_challenge
            || rf.body != &ngx_http_playarr_metrics_token_missing)
        {
            fuzz_fatal("no credentials is not a 401");
        }
        break;

    default:
        if (verdict != NGX_HTTP_PLAYARR_METRICS_TOKEN_MALFORMED
            || rf.status != NGX_HTTP_BAD_REQUEST
            || rf.challenge
               != &ngx_http_playarr_metrics_token_challenge_malformed
            || rf.body != &ngx_http_playarr_metrics_token_malformed)
        {
            fuzz_fatal("malformed credentials are not a 400");
        }
    }
}


static void
fuzz_file(u_char *content, size_t len)
{
    u_char                              *p, *last, *q, *value;
    ngx_int_t                            rc;
    ngx_uint_t                           usable, verdict;
    ngx_http_playarr_metrics_refusal_t   rf;

    p = content;
    last = content + len;

    while (p < last && ngx_http_playarr_metrics_token_is_space(*p)) {
        p++;
    }

    while (last > p && ngx_http_playarr_metrics_token_is_space(last[-1])) {
        last--;
    }

    usable = (p < last
              && last - p <= NGX_HTTP_PLAYARR_METRICS_TOKEN_MAX
              && len < NGX_HTTP_PLAYARR_METRICS_TOKEN_BUF);

    for (q = p; usable && q < last; q++) {
        if (*q < 0x21 || *q > 0x7e) {
            usable = 0;
        }
    }

    fuzz_write_token(content, len);

    rc = ngx_http_playarr_metrics_token_refresh(&fuzz_log, &fuzz_tk);

    if (rc != (usable ? NGX_OK : NGX_ERROR)) {
        fuzz_fatal("a token file of %zu bytes: refresh %d", len, (int) rc);
    }

    if (!usable) {
        if (fuzz_tk.valid || fuzz_tk.len) {
            fuzz_fatal("an unusable token file left a token");
        }

        /* fails closed: 500 */

        verdict = fuzz_auth((u_char *) "Bearer x", 8, &rf);

        if (verdict != NGX_HTTP_PLAYARR_METRICS_TOKEN_UNAVAILABLE
            || rf.status != NGX_HTTP_INTERNAL_SERVER_ERROR
            || rf.challenge != NULL
            || rf.body != &ngx_http_playarr_metrics_token_unavailable)
        {
            fuzz_fatal("no token, but not a 500");
        }

        return;
    }

    if (fuzz_tk.len != (size_t) (last - p)
        || ngx_memcmp(fuzz_tk.value, p, fuzz_tk.len) != 0)
    {
        fuzz_fatal("the token read is not the file's");
    }

    if (!fuzz_token68(p, last)) {
        return;
    }

    value = malloc(7 + (last - p));
    if (value == NULL) {
        fuzz_fatal("malloc() failed");
    }

    q = ngx_cpymem(value, "Bearer ", 7);
    q = ngx_cpymem(q, p, last - p);

    verdict = fuzz_auth(value, q - value, &rf);

    free(value);

    if (verdict != NGX_HTTP_PLAYARR_METRICS_TOKEN_OK) {
        fuzz_fatal("the token of the file is refused");
    }
}


/*
 * credentials = auth-scheme [ 1*SP token68 ], around them optional
 * whitespace (SP, HTAB); the scheme is a run of tchar.  NGX_OK: Bearer
 * and a token68; NGX_DECLINED: no scheme, or another one; NGX_ERROR:
 * Bearer with anything else.
 */

static ngx_int_t
fuzz_grammar(u_char *p, size_t len)
{
    u_char  *last, *scheme;

    last = p + len;

    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    while (last > p && (last[-1] == ' ' || last[-1] == '\t')) {
        last--;
    }

    scheme = p;

    while (p < last && fuzz_tchar(*p)) {
        p++;
    }

    if (p - scheme != 6
        || ngx_strncasecmp(scheme, (u_char *) "bearer", 6) != 0)
    {
        return NGX_DECLINED;
    }

    if (p == last || *p != ' ') {
        return NGX_ERROR;
    }

    while (p < last && *p == ' ') {
        p++;
    }

    return fuzz_token68(p, last) ? NGX_OK : NGX_ERROR;
}


/* token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=" */

static ngx_uint_t
fuzz_token68(u_char *p, u_char *last)
{
    size_t  n;

    for (n = 0; p + n < last; n++) {
        if (ngx_strlchr((u_char *) "-._~+/", (u_char *) "-._~+/" + 6, p[n])
            == NULL
            && !(p[n] >= 'a' && p[n] <= 'z')
            && !(p[n] >= 'A' && p[n] <= 'Z')
            && !(p[n] >= '0' && p[n] <= '9'))
        {
            break;
        }
    }

    if (n == 0) {
        return 0;
    }

    for (p += n; p < last; p++) {
        if (*p != '=') {
            return 0;
        }
    }

    return 1;
}


/* RFC 7230: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" /
 * "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA */

static ngx_uint_t
fuzz_tchar(u_char c)
{
    static u_char  t[] = "!#$%&'*+-.^_`|~";

    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
           || (c >= '0' && c <= '9')
           || (c && ngx_strlchr(t, t + sizeof(t) - 1, c) != NULL);
}


/*
 * _token_auth() for a request with that Authorization value: the
 * verdict, and in *rf the answer of a refusal, which must not hold the
 * token.  The check answers nothing itself: no header, no reference.
 */

static ngx_uint_t
fuzz_auth(u_char *value, size_t len, ngx_http_playarr_metrics_refusal_t *rf)
{
    ngx_uint_t           verdict;
    ngx_pool_t          *pool;
    ngx_table_elt_t      h;
    ngx_connection_t     c;
    ngx_http_request_t  *r;

    pool = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, &fuzz_log);
    if (pool == NULL) {
        fuzz_fatal("ngx_create_pool() failed");
    }

    r = ngx_pcalloc(pool, sizeof(ngx_http_request_t));
    if (r == NULL) {
        fuzz_fatal("ngx_pcalloc() failed");
    }

    ngx_memzero(&c, sizeof(ngx_connection_t));
    c.log = &fuzz_log;

    r->connection = &c;
    r->pool = pool;
    r->main = r;
    r->count = 1;

    if (ngx_list_init(&r->headers_out.headers, pool, 2,
                      sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        fuzz_fatal("ngx_list_init() failed");
    }

    ngx_memzero(&h, sizeof(ngx_table_elt_t));
    ngx_str_set(&h.key, "Authorization");
    h.value.data = value;
    h.value.len = len;
    h.hash = 1;

    r->headers_in.authorization = &h;

    ngx_memzero(rf, sizeof(ngx_http_playarr_metrics_refusal_t));

    verdict = ngx_http_playarr_metrics_token_auth(r, &fuzz_tk, rf);

    if (r->headers_out.headers.part.nelts
        || r->headers_out.www_authenticate
        || r->headers_out.status
        || r->count != 1)
    {
        fuzz_fatal("the token check answered the request itself");
    }

    if (verdict != NGX_HTTP_PLAYARR_METRICS_TOKEN_OK) {
        if (rf->status == 0 || rf->body == NULL) {
            fuzz_fatal("a refusal without an answer: verdict %d",
                       (int) verdict);
        }

        if (fuzz_secret_len
            && memmem(rf->body->data, rf->body->len, fuzz_secret,
                      fuzz_secret_len))
        {
            fuzz_fatal("the token is in a response");
        }
    }

    ngx_destroy_pool(pool);

    return verdict;
}


/* the file replaced whole, as an operator or the token admin does */

static void
fuzz_write_token(u_char *content, size_t len)
{
    int     fd;
    char    tmp[96];
    size_t  n;

    ngx_sprintf((u_char *) tmp, "%s.tmp%Z", fuzz_path);

    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd == -1) {
        fuzz_fatal("open(\"%s\") failed", tmp);
    }

    if (write(fd, content, len) != (ssize_t) len) {
        fuzz_fatal("write() failed");
    }

    close(fd);

    if (rename(tmp, (char *) fuzz_path) == -1) {
        fuzz_fatal("rename() failed");
    }

    /* the secret no log line may show: the token, when there is one */

    n = 0;

    while (n < len && ngx_http_playarr_metrics_token_is_space(content[n])) {
        n++;
    }

    while (len > n
           && ngx_http_playarr_metrics_token_is_space(content[len - 1]))
    {
        len--;
    }

    fuzz_secret_len = 0;

    if (len - n >= 8 && len - n <= NGX_HTTP_PLAYARR_METRICS_TOKEN_MAX
        && ngx_strlchr(content + n, content + len, '\0') == NULL)
    {
        ngx_memcpy(fuzz_secret, content + n, len - n);
        fuzz_secret[len - n] = '\0';
        fuzz_secret_len = len - n;
    }
}


static void
fuzz_no_token(ngx_uint_t level, u_char *msg, size_t len)
{
    if (fuzz_secret_len && memmem(msg, len, fuzz_secret, fuzz_secret_len)) {
        fuzz_fatal("the token is in a log line: \"%.*s\"", (int) len, msg);
    }
}


static void
fuzz_cleanup(void)
{
    u_char  tmp[96];

    ngx_sprintf(tmp, "%s.tmp%Z", fuzz_path);

    (void) unlink((char *) tmp);
    (void) unlink((char *) fuzz_path);
    (void) rmdir(fuzz_dir);
}
