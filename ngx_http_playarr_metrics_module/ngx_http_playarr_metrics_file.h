
/*
 * Copyright (C) Playarr metrics module authors
 */


#ifndef _NGX_HTTP_PLAYARR_METRICS_FILE_H_INCLUDED_
#define _NGX_HTTP_PLAYARR_METRICS_FILE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/* the module's own symbols are not exported: see the store's header */
#if (__GNUC__ >= 4 || __clang__)
#pragma GCC visibility push(hidden)
#endif


/*
 * Reads a whole file the way docs/operations.md ("What the module
 * trusts") says every file the module reads is read: opened
 * O_NONBLOCK|O_NOFOLLOW (a FIFO planted at the path cannot block, a link
 * is not followed), a regular file only, at most max bytes.
 *
 *   NGX_OK        out holds the bytes, ngx_alloc()ed and NUL-terminated
 *                 (free it with ngx_free()); fi, if not NULL, the fstat()
 *   NGX_DECLINED  there is no file (ENOENT); nothing is logged
 *   NGX_ERROR     anything else, logged at level as
 *                 "<what> \"<name>\" is a symbolic link" and the like,
 *                 through ngx_conf_log_error() when cf is not NULL (the
 *                 directive's file and line), else on log
 */
ngx_int_t ngx_http_playarr_metrics_file_read(ngx_conf_t *cf, ngx_log_t *log,
    ngx_uint_t level, const char *what, u_char *name, size_t max,
    ngx_str_t *out, ngx_file_info_t *fi);


#if (__GNUC__ >= 4 || __clang__)
#pragma GCC visibility pop
#endif


#endif /* _NGX_HTTP_PLAYARR_METRICS_FILE_H_INCLUDED_ */
