
/*
 * Copyright (C) Playarr metrics module authors
 */


/*
 * The parser of playarr_metrics_merge: ngx_http_playarr_metrics_merge_parse()
 * on the input, the body of an app's /metrics.
 *
 * Checked: the body is never changed; a refusal has a reason, UTF-8; an
 * input with a control character (but tab and newline), invalid UTF-8, or
 * a "# EOF" line is refused; what is accepted re-renders (the HELP and
 * TYPE lines and the samples of each family, as the renderer writes them)
 * to a text that is accepted again, with as many families and samples,
 * and that renders to itself: the parser reads what it writes, and the
 * names, label values and escapes come through unchanged.  Each sample
 * has a valid name, its family's or a suffixed one for a histogram or a
 * summary, and a value that reads as a number.  For one input in 16 an
 * allocation fails: NGX_ERROR, nothing else.
 *
 * An input that begins with "[" goes to the json format's parser,
 * ngx_http_playarr_metrics_merge_json(), instead: what it accepts is a
 * JSON array (jansson), each family once, and each family it keeps is
 * JSON of an object with that name.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include <jansson.h>

#include "fuzz.h"


int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static u_char *fuzz_merge_render(ngx_http_playarr_metrics_app_t *app,
    size_t *len, ngx_uint_t *nsamples);
static void fuzz_check_refused(const uint8_t *data, size_t size);
static void fuzz_check_family(ngx_http_playarr_metrics_app_family_t *f);
static void fuzz_merge_check_json(const uint8_t *data, size_t size,
    ngx_http_playarr_metrics_app_t *app);


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init();

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                          *body, *text, *again;
    size_t                           len, len2;
    uint32_t                         h;
    ngx_int_t                        rc;
    ngx_str_t                        err;
    ngx_uint_t                       fail, n, n2, i;
    ngx_pool_t                      *pool;
    ngx_http_playarr_metrics_app_t  *app, *app2;

    h = fuzz_hash(data, size);
    fail = ((h >> 8) & 15) ? 0 : 1 + ((h >> 12) & 63);

    pool = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, &fuzz_log);
    if (pool == NULL) {
        fuzz_fatal("ngx_create_pool() failed");
    }

    /* the body, in a block of its own size */

    body = malloc(size ? size : 1);
    if (body == NULL) {
        fuzz_fatal("malloc() failed");
    }

    ngx_memcpy(body, data, size);

    app = NULL;
    fuzz_fail_after = fail;

    if (size && data[0] == '[') {
        rc = ngx_http_playarr_metrics_merge_json(pool, body, size, &app,
                                                 &err);
    } else {
        rc = ngx_http_playarr_metrics_merge_parse(pool, body, size, &app,
                                                  &err);
    }

    fail = (fail && fuzz_fail_after == 0);
    fuzz_fail_after = 0;

    if (ngx_memcmp(body, data, size) != 0) {
        fuzz_fatal("merge_parse() changed the body");
    }

    if (rc == NGX_OK && size && data[0] == '[') {
        fuzz_merge_check_json(data, size, app);

    } else switch (rc) {

    case NGX_OK:
        fuzz_check_refused(data, size);

        if (app == NULL) {
            fuzz_fatal("accepted without families");
        }

        for (i = 0; i < app->families.nelts; i++) {
            fuzz_check_family(
                 &((ngx_http_playarr_metrics_app_family_t *)
                   app->families.elts)[i]);
        }

        text = fuzz_merge_render(app, &len, &n);

        app2 = NULL;
        rc = ngx_http_playarr_metrics_merge_parse(pool, text, len, &app2,
                                                  &err);
        if (rc != NGX_OK) {
            fuzz_fatal("the re-rendered text is refused: %.*s\n%.*s",
                       (int) err.len, err.data, (int) len, text);
        }

        if (app2->families.nelts != app->families.nelts) {
            fuzz_fatal("%lu families, then %lu", app->families.nelts,
                       app2->families.nelts);
        }

        again = fuzz_merge_render(app2, &len2, &n2);

        if (n2 != n || len2 != len || ngx_memcmp(again, text, len) != 0) {
            fuzz_fatal("rendered twice, not the same:\n%.*s\n--\n%.*s",
                       (int) len, text, (int) len2, again);
        }

        free(text);
        free(again);
        break;

    case NGX_DECLINED:
        if (err.len == 0 || err.data == NULL) {
            fuzz_fatal("a refusal without a reason");
        }

        if (!fuzz_utf8_valid(err.data, err.len)) {
            fuzz_fatal("the reason of a refusal is not UTF-8");
        }

        break;

    default:
        if (rc != NGX_ERROR || !fail) {
            fuzz_fatal("merge_parse() returned %ld", rc);
        }
    }

    free(body);
    ngx_destroy_pool(pool);

    return 0;
}


static void
fuzz_merge_check_json(const uint8_t *data, size_t size,
    ngx_http_playarr_metrics_app_t *app)
{
    json_t                                 *root, *fam, *name;
    ngx_uint_t                              i, j;
    ngx_http_playarr_metrics_app_family_t  *f;

    root = json_loadb((char *) data, size, JSON_REJECT_DUPLICATES, NULL);

    if (!json_is_array(root)) {
        fuzz_fatal("json: accepted, not a JSON array");
    }

    if (app->families.nelts != json_array_size(root)) {
        fuzz_fatal("json: %lu families of %lu", app->families.nelts,
                   json_array_size(root));
    }

    json_decref(root);

    f = app->families.elts;

    for (i = 0; i < app->families.nelts; i++) {
        for (j = 0; j < i; j++) {
            if (f[j].name.len == f[i].name.len
                && ngx_memcmp(f[j].name.data, f[i].name.data, f[i].name.len)
                   == 0)
            {
                fuzz_fatal("json: a family twice");
            }
        }

        fam = json_loadb((char *) f[i].json.data, f[i].json.len, 0, NULL);
        name = json_object_get(fam, "name");

        if (!json_is_string(name)
            || json_string_length(name) != f[i].name.len
            || ngx_memcmp(json_string_value(name), f[i].name.data,
                          f[i].name.len)
               != 0)
        {
            fuzz_fatal("json: a family kept is not its name's");
        }

        json_decref(fam);
    }
}


/* what must have been refused: control characters, bad UTF-8, # EOF */

static void
fuzz_check_refused(const uint8_t *data, size_t size)
{
    size_t   i, j;

    if (!fuzz_utf8_valid((u_char *) data, size)) {
        fuzz_fatal("accepted, not UTF-8");
    }

    for (i = 0; i < size; i++) {
        if ((data[i] < 0x20 && data[i] != '\t' && data[i] != '\n')
            || data[i] == 0x7f)
        {
            fuzz_fatal("accepted a control character 0x%02x", data[i]);
        }
    }

    for (i = 0; i < size; i = j + 1) {
        for (j = i; j < size && data[j] != '\n'; j++) { /* void */ }

        if (j - i == 5 && ngx_memcmp(data + i, "# EOF", 5) == 0) {
            fuzz_fatal("accepted an OpenMetrics \"# EOF\"");
        }
    }
}


static void
fuzz_check_family(ngx_http_playarr_metrics_app_family_t *f)
{
    size_t                              k;
    ngx_uint_t                          i;
    ngx_http_playarr_metrics_sample_t  *s;

    if (f->type > NGX_HTTP_PLAYARR_METRICS_TYPE_UNTYPED) {
        fuzz_fatal("type %lu", f->type);
    }

    s = f->samples.elts;

    for (i = 0; i < f->samples.nelts; i++) {
        if (s[i].name.len < f->name.len
            || ngx_memcmp(s[i].name.data, f->name.data, f->name.len) != 0)
        {
            fuzz_fatal("sample \"%.*s\" in family \"%.*s\"",
                       (int) s[i].name.len, s[i].name.data,
                       (int) f->name.len, f->name.data);
        }

        k = s[i].name.len - f->name.len;

        if (k && f->type != NGX_HTTP_PLAYARR_METRICS_TYPE_HISTOGRAM
            && f->type != NGX_HTTP_PLAYARR_METRICS_TYPE_SUMMARY)
        {
            fuzz_fatal("a suffixed sample in a %lu family", f->type);
        }

        if (!ngx_http_playarr_metrics_merge_number(s[i].value.data,
                                                   s[i].value.len))
        {
            fuzz_fatal("a value that is no number");
        }
    }
}


/* the families as the renderer writes them, in one malloc()ed block */

static u_char *
fuzz_merge_render(ngx_http_playarr_metrics_app_t *app, size_t *len,
    ngx_uint_t *nsamples)
{
    u_char                                 *text, *p;
    size_t                                  size;
    ngx_uint_t                              i, j;
    ngx_http_playarr_metrics_sample_t      *s;
    ngx_http_playarr_metrics_app_family_t  *f;

    f = app->families.elts;
    size = 1;
    *nsamples = 0;

    for (i = 0; i < app->families.nelts; i++) {
        size += ngx_http_playarr_metrics_merge_header_size(&f[i]);

        s = f[i].samples.elts;

        for (j = 0; j < f[i].samples.nelts; j++) {
            size += ngx_http_playarr_metrics_merge_sample_size(&s[j]);
        }
    }

    text = malloc(size);
    if (text == NULL) {
        fuzz_fatal("malloc() failed");
    }

    p = text;

    for (i = 0; i < app->families.nelts; i++) {
        p = ngx_http_playarr_metrics_merge_header(p, &f[i]);

        s = f[i].samples.elts;

        for (j = 0; j < f[i].samples.nelts; j++) {
            p = ngx_http_playarr_metrics_merge_sample_text(p, &s[j]);
            (*nsamples)++;
        }
    }

    if ((size_t) (p - text) >= size) {
        fuzz_fatal("rendered %lu bytes in room for %lu",
                   (size_t) (p - text), size);
    }

    *len = p - text;

    return text;
}
