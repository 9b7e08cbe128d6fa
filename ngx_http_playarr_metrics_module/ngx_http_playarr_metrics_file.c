
/*
 * Copyright (C) Playarr metrics module authors
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include <ngx_http_playarr_metrics_file.h>


static void ngx_http_playarr_metrics_file_log(ngx_conf_t *cf, ngx_log_t *log,
    ngx_uint_t level, ngx_err_t err, const char *fmt, const char *what,
    u_char *name, size_t max);


ngx_int_t
ngx_http_playarr_metrics_file_read(ngx_conf_t *cf, ngx_log_t *log,
    ngx_uint_t level, const char *what, u_char *name, size_t max,
    ngx_str_t *out, ngx_file_info_t *fi)
{
    u_char           *data;
    size_t            len, size;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_err_t         err;
    const char       *fmt;
    ngx_file_info_t   info;

    if (fi == NULL) {
        fi = &info;
    }

    fd = ngx_open_file(name, NGX_FILE_RDONLY|NGX_FILE_NONBLOCK
                             |NGX_FILE_NOFOLLOW,
                       NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE) {
        err = ngx_errno;

        if (err == NGX_ENOENT) {
            return NGX_DECLINED;
        }

        if (err == NGX_ELOOP) {
            ngx_http_playarr_metrics_file_log(cf, log, level, 0,
                                              "%s \"%s\" is a symbolic link",
                                              what, name, max);
        } else {
            ngx_http_playarr_metrics_file_log(cf, log, level, err,
                                              "%s \"%s\": "
                                              ngx_open_file_n " failed",
                                              what, name, max);
        }

        return NGX_ERROR;
    }

    data = NULL;
    err = 0;

    if (ngx_fd_info(fd, fi) == NGX_FILE_ERROR) {
        err = ngx_errno;
        fmt = "%s \"%s\": " ngx_fd_info_n " failed";
        goto failed;
    }

    if (!ngx_is_file(fi)) {
        fmt = "%s \"%s\" is not a regular file";
        goto failed;
    }

    if (ngx_file_size(fi) > (off_t) max) {
        fmt = "%s \"%s\" is larger than %uz bytes";
        goto failed;
    }

    /* the file may grow meanwhile: read at most max + 1 bytes */

    size = (size_t) ngx_file_size(fi) + 1;

    data = ngx_alloc(size + 1, log);
    if (data == NULL) {
        (void) ngx_close_file(fd);
        return NGX_ERROR;
    }

    len = 0;

    for ( ;; ) {
        n = ngx_read_fd(fd, data + len, size - len);

        if (n == -1) {
            err = ngx_errno;
            fmt = "%s \"%s\": " ngx_read_fd_n " failed";
            goto failed;
        }

        if (n == 0) {
            break;
        }

        len += n;

        if (len == size) {
            if (len > max) {
                fmt = "%s \"%s\" is larger than %uz bytes";
                goto failed;
            }

            fmt = "%s \"%s\" changed while it was read";
            goto failed;
        }
    }

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      ngx_close_file_n " \"%s\" failed", name);
    }

    data[len] = '\0';

    out->data = data;
    out->len = len;

    return NGX_OK;

failed:

    ngx_http_playarr_metrics_file_log(cf, log, level, err, fmt, what, name,
                                      max);

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      ngx_close_file_n " \"%s\" failed", name);
    }

    if (data) {
        ngx_free(data);
    }

    return NGX_ERROR;
}


static void
ngx_http_playarr_metrics_file_log(ngx_conf_t *cf, ngx_log_t *log,
    ngx_uint_t level, ngx_err_t err, const char *fmt, const char *what,
    u_char *name, size_t max)
{
    if (cf) {
        ngx_conf_log_error(level, cf, err, fmt, what, name, max);

    } else {
        ngx_log_error(level, log, err, fmt, what, name, max);
    }
}
