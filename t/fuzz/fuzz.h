
/*
 * Copyright (C) Playarr metrics module authors
 */


/*
 * The libFuzzer harnesses of the module: what ngx_stubs.c (stand-ins for
 * the few nginx core functions the module's files call) and fuzz_common.c
 * (Playarr's families and routes, a store per input) give them.
 */


#ifndef _NGX_HTTP_PLAYARR_METRICS_FUZZ_H_INCLUDED_
#define _NGX_HTTP_PLAYARR_METRICS_FUZZ_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ngx_http_playarr_metrics_module.h>


/* ngx_stubs.c */

/* every log line, formatted; NULL: none */
extern void (*fuzz_log_hook)(ngx_uint_t level, u_char *msg, size_t len);

/* 0: allocations never fail; N: the Nth ngx_palloc() from now on fails */
extern ngx_uint_t  fuzz_fail_after;
/* 0: as the zone's pages allow; N: the Nth slab allocation from now fails */
extern ngx_uint_t  fuzz_slab_fail_after;

extern ngx_log_t   fuzz_log;

void fuzz_init(void);
/* a message as printf() formats it, then abort() */
void fuzz_fatal(const char *fmt, ...)
    __attribute__ ((noreturn, format (printf, 1, 2)));

/*
 * A shared zone of that many pages, whose slab allocations come from
 * malloc(), each its own block (so that AddressSanitizer sees every
 * overflow), and fail once the pages are used up, as in nginx.
 */
ngx_slab_pool_t *fuzz_zone_create(ngx_uint_t pages);
void fuzz_zone_destroy(ngx_slab_pool_t *shpool);
size_t fuzz_zone_size(ngx_slab_pool_t *shpool);


/* fuzz_common.c */

/* Playarr's families: the 4 built-in HTTP ones, then metrics.json's */
ngx_array_t *fuzz_playarr_families(void);

/* Playarr's route templates, from docs/playarr-routes.conf (ngx_str_t) */
ngx_array_t *fuzz_playarr_templates(void);

/* a store of those families (a copy), not bound to a zone; NULL: failed */
ngx_http_playarr_metrics_store_t *fuzz_store_new(ngx_pool_t *pool,
    ngx_array_t *families, ngx_uint_t max_series);

/* a zone and a store bound to it, with Playarr's families; NULL: failed */
ngx_http_playarr_metrics_store_t *fuzz_store_create(ngx_pool_t *pool,
    ngx_uint_t pages, ngx_uint_t max_series);
void fuzz_store_destroy(ngx_http_playarr_metrics_store_t *store);

/* the pages of the smallest zone that holds Playarr's families */
ngx_uint_t fuzz_min_pages(void);

/* a hash of the input, to pick sizes and limits reproducibly */
uint32_t fuzz_hash(const uint8_t *data, size_t size);


/* fuzz_check.c */

ngx_uint_t fuzz_utf8_valid(u_char *p, size_t len);

/* the body as one malloc() block; checks the chain and its length */
u_char *fuzz_flatten(ngx_chain_t *out, off_t len);

/* abort unless well-formed; the number of samples of the families */
ngx_uint_t fuzz_check_prometheus(ngx_http_playarr_metrics_store_t *store,
    u_char *buf, size_t len);
void fuzz_check_json(ngx_http_playarr_metrics_store_t *store, u_char *buf,
    size_t len, ngx_uint_t samples);

/* both renderers on a store, their output checked; NGX_ERROR: no memory */
ngx_int_t fuzz_render(ngx_pool_t *pool,
    ngx_http_playarr_metrics_store_t *store);


#endif /* _NGX_HTTP_PLAYARR_METRICS_FUZZ_H_INCLUDED_ */
