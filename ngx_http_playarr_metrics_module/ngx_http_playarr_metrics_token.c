
/*
 * Copyright (C) Playarr metrics module authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>

#include <ngx_http_playarr_metrics_token.h>


/* 32 random bytes as lowercase hex */
#define NGX_HTTP_PLAYARR_METRICS_TOKEN_RANDOM  32
#define NGX_HTTP_PLAYARR_METRICS_TOKEN_HEX     64

/* the most that is read from the file */
#define NGX_HTTP_PLAYARR_METRICS_TOKEN_BUF     4096

/* runtime complaints about the file, per worker */
#define NGX_HTTP_PLAYARR_METRICS_TOKEN_LOG     60

/* the mode of a file with "group=" */
#define NGX_HTTP_PLAYARR_METRICS_TOKEN_GROUP   0640


#if (NGX_DARWIN)
#define ngx_http_playarr_metrics_file_mtim(fi)  (fi)->st_mtimespec
#define ngx_http_playarr_metrics_file_ctim(fi)  (fi)->st_ctimespec
#else
#define ngx_http_playarr_metrics_file_mtim(fi)  (fi)->st_mtim
#define ngx_http_playarr_metrics_file_ctim(fi)  (fi)->st_ctim
#endif


static ngx_int_t ngx_http_playarr_metrics_token_owner(ngx_conf_t *cf,
    ngx_uid_t *uid, ngx_gid_t *gid, char **user);
static ngx_uint_t ngx_http_playarr_metrics_token_member(ngx_conf_t *cf,
    ngx_http_playarr_metrics_token_t *tk, ngx_gid_t gid, char *user);
static ngx_int_t ngx_http_playarr_metrics_token_create(ngx_conf_t *cf,
    ngx_http_playarr_metrics_token_t *tk, ngx_uid_t uid, ngx_gid_t gid);
static ngx_int_t ngx_http_playarr_metrics_token_read(ngx_log_t *log,
    ngx_http_playarr_metrics_token_t *tk, ngx_file_info_t *fi,
    ngx_err_t *err, const char **fmt);
static ngx_int_t ngx_http_playarr_metrics_token_generate(u_char *buf);
static ngx_int_t ngx_http_playarr_metrics_token_write(ngx_fd_t fd,
    u_char *buf, size_t len);
static void ngx_http_playarr_metrics_token_sync_dir(ngx_str_t *path,
    ngx_pool_t *pool, ngx_log_t *log);
static void ngx_http_playarr_metrics_token_set_file(
    ngx_http_playarr_metrics_token_t *tk, ngx_file_info_t *fi);
static ngx_uint_t ngx_http_playarr_metrics_token_same_file(
    ngx_http_playarr_metrics_token_t *tk, ngx_file_info_t *fi);
static ngx_int_t ngx_http_playarr_metrics_token_parse(ngx_str_t *value,
    ngx_str_t *token);
static ngx_uint_t ngx_http_playarr_metrics_token_is_token68(u_char *p,
    u_char *last);
static ngx_uint_t ngx_http_playarr_metrics_token_is_tchar(u_char c);
static ngx_uint_t ngx_http_playarr_metrics_token_is_space(u_char c);


static ngx_str_t  ngx_http_playarr_metrics_token_missing =
    ngx_string("{\"error\":\"Missing or invalid Authorization header. "
               "Expected: Authorization: Bearer <token>\"}");

static ngx_str_t  ngx_http_playarr_metrics_token_invalid =
    ngx_string("{\"error\":\"Invalid metrics token\"}");

static ngx_str_t  ngx_http_playarr_metrics_token_malformed =
    ngx_string("{\"error\":\"Malformed Authorization header\"}");

static ngx_str_t  ngx_http_playarr_metrics_token_unavailable =
    ngx_string("{\"error\":\"Metrics token unavailable\"}");

static ngx_str_t  ngx_http_playarr_metrics_token_challenge =
    ngx_string("Bearer realm=\"playarr-metrics\"");

static ngx_str_t  ngx_http_playarr_metrics_token_challenge_invalid =
    ngx_string("Bearer realm=\"playarr-metrics\", error=\"invalid_token\"");

static ngx_str_t  ngx_http_playarr_metrics_token_challenge_malformed =
    ngx_string("Bearer realm=\"playarr-metrics\", error=\"invalid_request\"");


ngx_int_t
ngx_http_playarr_metrics_token_init(ngx_conf_t *cf,
    ngx_http_playarr_metrics_token_t *tk)
{
    char             *user;
    ngx_int_t         rc;
    ngx_err_t         err;
    ngx_gid_t         gid;
    ngx_uid_t         uid;
    const char       *fmt;
    ngx_file_info_t   fi;

    tk->len = 0;
    tk->valid = 0;
    tk->logged = 0;

    if (ngx_http_playarr_metrics_token_owner(cf, &uid, &gid, &user)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (tk->group
        && !ngx_http_playarr_metrics_token_member(cf, tk, gid, user))
    {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "playarr_metrics_token_file \"%s\": the worker "
                           "processes are not in group \"%s\", a token "
                           "they regenerate cannot be given that group",
                           tk->path.data, tk->group);
    }

    if (ngx_link_info(tk->path.data, &fi) == NGX_FILE_ERROR) {
        err = ngx_errno;

        if (err != NGX_ENOENT) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, err,
                               ngx_link_info_n " \"%s\" failed", tk->path.data);
            return NGX_ERROR;
        }

        rc = ngx_http_playarr_metrics_token_create(cf, tk, uid, gid);

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }
    }

    if (ngx_http_playarr_metrics_token_read(cf->log, tk, &fi, &err, &fmt)
        != NGX_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, err, fmt, tk->path.data);
        return NGX_ERROR;
    }

    if (uid != (ngx_uid_t) NGX_CONF_UNSET_UINT
        && uid != 0
        && !(fi.st_uid == uid && (fi.st_mode & S_IRUSR))
        && !(fi.st_gid == gid && (fi.st_mode & S_IRGRP))
        && !(fi.st_mode & S_IROTH))
    {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "playarr_metrics_token_file \"%s\" is not readable "
                           "by user \"%s\"", tk->path.data, user);
    }

    /* an existing file is left as it is */

    if (tk->group
        && !(fi.st_gid == tk->gid && (fi.st_mode & S_IRGRP)))
    {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "playarr_metrics_token_file \"%s\" is not readable "
                           "by group \"%s\"", tk->path.data, tk->group);
    }

    return NGX_OK;
}


/*
 * The user the workers will run as, when the master runs as root:
 * the "user" directive if it came before, nginx's default otherwise.
 */

static ngx_int_t
ngx_http_playarr_metrics_token_owner(ngx_conf_t *cf, ngx_uid_t *uid,
    ngx_gid_t *gid, char **user)
{
    struct group     *grp;
    struct passwd    *pwd;
    ngx_core_conf_t  *ccf;

    *uid = (ngx_uid_t) NGX_CONF_UNSET_UINT;
    *gid = (ngx_gid_t) NGX_CONF_UNSET_UINT;
    *user = NULL;

    if (geteuid() != 0) {
        return NGX_OK;
    }

    ccf = (ngx_core_conf_t *) ngx_get_conf(cf->cycle->conf_ctx,
                                           ngx_core_module);

    if (ccf->user != (ngx_uid_t) NGX_CONF_UNSET_UINT) {
        *uid = ccf->user;
        *gid = ccf->group;
        *user = ccf->username;
        return NGX_OK;
    }

    ngx_set_errno(0);
    pwd = getpwnam(NGX_USER);
    if (pwd == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "getpwnam(\"" NGX_USER "\") failed");
        return NGX_ERROR;
    }

    *uid = pwd->pw_uid;
    *user = NGX_USER;

    ngx_set_errno(0);
    grp = getgrnam(NGX_GROUP);
    if (grp == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "getgrnam(\"" NGX_GROUP "\") failed");
        return NGX_ERROR;
    }

    *gid = grp->gr_gid;

    return NGX_OK;
}


/*
 * Whether the workers can give a file they create the group of "group=":
 * chown() by a process that is not root takes only a group the process
 * is in.  A worker started by root is in the group of the "user"
 * directive (gid) and, through initgroups(), in every group listing its
 * user; otherwise the workers have this process's groups.
 */

static ngx_uint_t
ngx_http_playarr_metrics_token_member(ngx_conf_t *cf,
    ngx_http_playarr_metrics_token_t *tk, ngx_gid_t gid, char *user)
{
    int             i, n;
    char          **m;
    gid_t          *groups;
    struct group   *grp;

    if (user == NULL) {
        if (getegid() == tk->gid) {
            return 1;
        }

        n = getgroups(0, NULL);
        if (n <= 0) {
            return 0;
        }

        groups = ngx_palloc(cf->temp_pool, n * sizeof(gid_t));
        if (groups == NULL) {
            return 0;
        }

        n = getgroups(n, groups);

        for (i = 0; i < n; i++) {
            if (groups[i] == tk->gid) {
                return 1;
            }
        }

        return 0;
    }

    if (gid == tk->gid) {
        return 1;
    }

    grp = getgrgid(tk->gid);
    if (grp == NULL) {
        return 0;
    }

    for (m = grp->gr_mem; *m; m++) {
        if (ngx_strcmp(*m, user) == 0) {
            return 1;
        }
    }

    return 0;
}


/* NGX_DECLINED: someone else created the file meanwhile */

static ngx_int_t
ngx_http_playarr_metrics_token_create(ngx_conf_t *cf,
    ngx_http_playarr_metrics_token_t *tk, ngx_uid_t uid, ngx_gid_t gid)
{
    ngx_fd_t    fd;
    ngx_err_t   err;
    ngx_uint_t  access;
    u_char      buf[NGX_HTTP_PLAYARR_METRICS_TOKEN_HEX + 1];

    access = tk->group ? NGX_HTTP_PLAYARR_METRICS_TOKEN_GROUP
                       : NGX_FILE_OWNER_ACCESS;

    fd = ngx_open_file(tk->path.data, NGX_FILE_WRONLY|NGX_FILE_NOFOLLOW,
                       NGX_FILE_CREATE_OR_OPEN|O_EXCL, access);

    if (fd == NGX_INVALID_FILE) {
        err = ngx_errno;

        if (err == NGX_EEXIST) {
            return NGX_DECLINED;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, err,
                           ngx_open_file_n " \"%s\" failed", tk->path.data);
        return NGX_ERROR;
    }

    /* the owner and the mode before the token is in the file */

    if (tk->group) {
        gid = tk->gid;
    }

    if ((uid != (ngx_uid_t) NGX_CONF_UNSET_UINT || tk->group)
        && fchown(fd, uid, gid) == -1)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "fchown() \"%s\" failed", tk->path.data);
        goto failed;
    }

    /* the umask does not take the group's read permission away */

    if (tk->group && fchmod(fd, access) == -1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "fchmod() \"%s\" failed", tk->path.data);
        goto failed;
    }

    if (ngx_http_playarr_metrics_token_generate(buf) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "RAND_bytes() failed");
        goto failed;
    }

    if (ngx_http_playarr_metrics_token_write(fd, buf, sizeof(buf))
        != NGX_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_write_fd_n " \"%s\" failed", tk->path.data);
        goto failed;
    }

    ngx_explicit_memzero(buf, sizeof(buf));

    if (fsync(fd) == -1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "fsync() \"%s\" failed", tk->path.data);
        goto failed;
    }

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_close_file_n " \"%s\" failed", tk->path.data);
        fd = NGX_INVALID_FILE;
        goto failed;
    }

    ngx_http_playarr_metrics_token_sync_dir(&tk->path, cf->temp_pool,
                                            cf->log);

    ngx_log_error(NGX_LOG_NOTICE, cf->log, 0,
                  "playarr_metrics_token_file \"%s\" created with a new "
                  "token", tk->path.data);

    return NGX_OK;

failed:

    ngx_explicit_memzero(buf, sizeof(buf));

    if (fd != NGX_INVALID_FILE && ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, cf->log, ngx_errno,
                      ngx_close_file_n " \"%s\" failed", tk->path.data);
    }

    if (ngx_delete_file(tk->path.data) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, cf->log, ngx_errno,
                      ngx_delete_file_n " \"%s\" failed", tk->path.data);
    }

    return NGX_ERROR;
}


ngx_int_t
ngx_http_playarr_metrics_token_refresh(ngx_log_t *log,
    ngx_http_playarr_metrics_token_t *tk)
{
    time_t            now;
    ngx_err_t         err;
    const char       *fmt;
    ngx_file_info_t   fi;

    if (ngx_link_info(tk->path.data, &fi) == NGX_FILE_ERROR) {
        err = ngx_errno;
        fmt = ngx_link_info_n " \"%s\" failed";
        goto failed;
    }

    if (ngx_is_link(&fi)) {
        err = 0;
        fmt = "playarr_metrics_token_file \"%s\" is a symbolic link";
        goto failed;
    }

    if (tk->valid && ngx_http_playarr_metrics_token_same_file(tk, &fi)) {
        return NGX_OK;
    }

    if (ngx_http_playarr_metrics_token_read(log, tk, &fi, &err, &fmt)
        == NGX_OK)
    {
        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "playarr_metrics_token_file \"%s\" re-read",
                      tk->path.data);
        tk->logged = 0;
        return NGX_OK;
    }

failed:

    if (tk->valid) {
        ngx_explicit_memzero(tk->value, tk->len);
        tk->len = 0;
        tk->valid = 0;
    }

    now = ngx_time();

    if (now - tk->logged >= NGX_HTTP_PLAYARR_METRICS_TOKEN_LOG) {
        tk->logged = now;
        ngx_log_error(NGX_LOG_ERR, log, err, fmt, tk->path.data);
    }

    return NGX_ERROR;
}


/*
 * Reads and checks the file; on success tk holds its token and fi its
 * fstat().  On failure tk is untouched and *fmt is a message with one
 * "%s" for the path, *err the errno for it (or 0).
 */

static ngx_int_t
ngx_http_playarr_metrics_token_read(ngx_log_t *log,
    ngx_http_playarr_metrics_token_t *tk, ngx_file_info_t *fi,
    ngx_err_t *err, const char **fmt)
{
    u_char      *p, *q, *last;
    size_t       len;
    ssize_t      n;
    ngx_fd_t     fd;
    ngx_uint_t   access;
    u_char       buf[NGX_HTTP_PLAYARR_METRICS_TOKEN_BUF];

    *err = 0;
    len = 0;

    /* O_NONBLOCK: a FIFO planted at the path must not block the worker */

    fd = ngx_open_file(tk->path.data,
                       NGX_FILE_RDONLY|NGX_FILE_NONBLOCK|NGX_FILE_NOFOLLOW,
                       NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE) {
        *err = ngx_errno;

        if (*err == NGX_ELOOP) {
            *err = 0;
            *fmt = "playarr_metrics_token_file \"%s\" is a symbolic link";

        } else {
            *fmt = ngx_open_file_n " \"%s\" failed";
        }

        return NGX_ERROR;
    }

    if (ngx_fd_info(fd, fi) == NGX_FILE_ERROR) {
        *err = ngx_errno;
        *fmt = ngx_fd_info_n " \"%s\" failed";
        goto failed;
    }

    if (!ngx_is_file(fi)) {
        *fmt = "playarr_metrics_token_file \"%s\" is not a regular file";
        goto failed;
    }

    if (ngx_file_size(fi) >= NGX_HTTP_PLAYARR_METRICS_TOKEN_BUF) {
        *fmt = "playarr_metrics_token_file \"%s\" is too long";
        goto failed;
    }

    for ( ;; ) {
        n = ngx_read_fd(fd, buf + len,
                        NGX_HTTP_PLAYARR_METRICS_TOKEN_BUF - len);

        if (n == -1) {
            *err = ngx_errno;
            *fmt = ngx_read_fd_n " \"%s\" failed";
            goto failed;
        }

        if (n == 0) {
            break;
        }

        len += n;

        if (len == NGX_HTTP_PLAYARR_METRICS_TOKEN_BUF) {
            *fmt = "playarr_metrics_token_file \"%s\" is too long";
            goto failed;
        }
    }

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      ngx_close_file_n " \"%s\" failed", tk->path.data);
    }

    fd = NGX_INVALID_FILE;

    p = buf;
    last = buf + len;

    while (p < last && ngx_http_playarr_metrics_token_is_space(*p)) {
        p++;
    }

    while (last > p && ngx_http_playarr_metrics_token_is_space(last[-1])) {
        last--;
    }

    if (p == last) {
        *fmt = "playarr_metrics_token_file \"%s\" is empty";
        goto failed;
    }

    if ((size_t) (last - p) > NGX_HTTP_PLAYARR_METRICS_TOKEN_MAX) {
        *fmt = "playarr_metrics_token_file \"%s\" is too long";
        goto failed;
    }

    for (q = p; q < last; q++) {
        if (*q < 0x21 || *q > 0x7e) {
            *fmt = "playarr_metrics_token_file \"%s\" contains characters "
                   "other than printable ASCII";
            goto failed;
        }
    }

    if (tk->len > (size_t) (last - p)) {
        ngx_explicit_memzero(tk->value, tk->len);
    }

    tk->len = last - p;
    ngx_memcpy(tk->value, p, tk->len);
    tk->valid = 1;

    ngx_http_playarr_metrics_token_set_file(tk, fi);

    ngx_explicit_memzero(buf, len);

    access = ngx_file_access(fi);

    /* the group of "group=" may read it */

    if (tk->group && fi->st_gid == tk->gid) {
        access &= ~S_IRGRP;
    }

    if (access & 0066) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "playarr_metrics_token_file \"%s\" is readable or "
                      "writable by group or others", tk->path.data);
    }

    if (!ngx_http_playarr_metrics_token_is_token68(tk->value,
                                                   tk->value + tk->len))
    {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "playarr_metrics_token_file \"%s\" holds characters "
                      "a Bearer token cannot carry, no request will match",
                      tk->path.data);
    }

    return NGX_OK;

failed:

    ngx_explicit_memzero(buf, len);

    if (fd != NGX_INVALID_FILE && ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      ngx_close_file_n " \"%s\" failed", tk->path.data);
    }

    return NGX_ERROR;
}


ngx_int_t
ngx_http_playarr_metrics_token_regenerate(ngx_http_request_t *r,
    ngx_http_playarr_metrics_token_t *tk)
{
    u_char           *name, *p;
    ngx_fd_t          fd;
    ngx_log_t        *log;
    ngx_uint_t        access;
    ngx_file_info_t   fi;
    u_char            rnd[8];
    u_char            buf[NGX_HTTP_PLAYARR_METRICS_TOKEN_HEX + 1];

    log = r->connection->log;

    access = tk->group ? NGX_HTTP_PLAYARR_METRICS_TOKEN_GROUP
                       : NGX_FILE_OWNER_ACCESS;

    name = ngx_pnalloc(r->pool, tk->path.len + 1 + 2 * sizeof(rnd) + 1);
    if (name == NULL) {
        return NGX_ERROR;
    }

    if (RAND_bytes(rnd, sizeof(rnd)) != 1
        || ngx_http_playarr_metrics_token_generate(buf) != NGX_OK)
    {
        ERR_clear_error();
        ngx_log_error(NGX_LOG_ERR, log, 0, "RAND_bytes() failed");
        return NGX_ERROR;
    }

    p = ngx_cpymem(name, tk->path.data, tk->path.len);
    *p++ = '.';
    p = ngx_hex_dump(p, rnd, sizeof(rnd));
    *p = '\0';

    fd = ngx_open_file(name, NGX_FILE_WRONLY|NGX_FILE_NOFOLLOW,
                       NGX_FILE_CREATE_OR_OPEN|O_EXCL, access);

    if (fd == NGX_INVALID_FILE) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      ngx_open_file_n " \"%s\" failed", name);
        ngx_explicit_memzero(buf, sizeof(buf));
        return NGX_ERROR;
    }

    /*
     * The group of "group=", before the token is written: a worker can
     * give it only a group it is in (warned about at start).  Failing
     * that, the old token and its file stay.
     */

    if (tk->group) {
        if (fchown(fd, (ngx_uid_t) -1, tk->gid) == -1) {
            ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                          "fchown() \"%s\" to group \"%s\" failed",
                          name, tk->group);
            goto failed;
        }

        if (fchmod(fd, access) == -1) {
            ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                          "fchmod() \"%s\" failed", name);
            goto failed;
        }
    }

    if (ngx_http_playarr_metrics_token_write(fd, buf, sizeof(buf))
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      ngx_write_fd_n " \"%s\" failed", name);
        goto failed;
    }

    if (fsync(fd) == -1) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "fsync() \"%s\" failed", name);
        goto failed;
    }

    if (ngx_rename_file(name, tk->path.data) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      ngx_rename_file_n " \"%s\" to \"%s\" failed",
                      name, tk->path.data);
        goto failed;
    }

    /* the new token is in place: this worker uses it at once */

    if (tk->len > NGX_HTTP_PLAYARR_METRICS_TOKEN_HEX) {
        ngx_explicit_memzero(tk->value, tk->len);
    }

    ngx_memcpy(tk->value, buf, NGX_HTTP_PLAYARR_METRICS_TOKEN_HEX);
    tk->len = NGX_HTTP_PLAYARR_METRICS_TOKEN_HEX;
    tk->valid = 1;
    tk->logged = 0;

    ngx_explicit_memzero(buf, sizeof(buf));

    /* after rename(), which may change the ctime */

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      ngx_fd_info_n " \"%s\" failed", tk->path.data);

        /* unknown identity: the next request re-reads the file */
        ngx_memzero(&fi, sizeof(ngx_file_info_t));
    }

    ngx_http_playarr_metrics_token_set_file(tk, &fi);

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      ngx_close_file_n " \"%s\" failed", tk->path.data);
    }

    ngx_http_playarr_metrics_token_sync_dir(&tk->path, r->pool, log);

    ngx_log_error(NGX_LOG_NOTICE, log, 0,
                  "playarr_metrics_token_file \"%s\" regenerated",
                  tk->path.data);

    return NGX_OK;

failed:

    ngx_explicit_memzero(buf, sizeof(buf));

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      ngx_close_file_n " \"%s\" failed", name);
    }

    if (ngx_delete_file(name) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      ngx_delete_file_n " \"%s\" failed", name);
    }

    return NGX_ERROR;
}


/* buf: room for the hex digits and a line feed */

static ngx_int_t
ngx_http_playarr_metrics_token_generate(u_char *buf)
{
    u_char  *p;
    u_char   rnd[NGX_HTTP_PLAYARR_METRICS_TOKEN_RANDOM];

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        ERR_clear_error();
        return NGX_ERROR;
    }

    p = ngx_hex_dump(buf, rnd, sizeof(rnd));
    *p = LF;

    ngx_explicit_memzero(rnd, sizeof(rnd));

    return NGX_OK;
}


static ngx_int_t
ngx_http_playarr_metrics_token_write(ngx_fd_t fd, u_char *buf, size_t len)
{
    ssize_t  n;

    while (len) {
        n = ngx_write_fd(fd, buf, len);

        if (n == -1) {
            if (ngx_errno == NGX_EINTR) {
                continue;
            }

            return NGX_ERROR;
        }

        if (n == 0) {
            ngx_set_errno(NGX_ENOSPC);
            return NGX_ERROR;
        }

        buf += n;
        len -= n;
    }

    return NGX_OK;
}


/* makes a create or rename durable; best effort */

static void
ngx_http_playarr_metrics_token_sync_dir(ngx_str_t *path, ngx_pool_t *pool,
    ngx_log_t *log)
{
    u_char    *dir, *p;
    size_t     len;
    ngx_fd_t   fd;

    for (p = path->data + path->len; p > path->data; p--) {
        if (p[-1] == '/') {
            break;
        }
    }

    len = p - path->data;

    if (len == 0) {
        return;
    }

    dir = ngx_pnalloc(pool, len + 1);
    if (dir == NULL) {
        return;
    }

    ngx_memcpy(dir, path->data, len);
    dir[len] = '\0';

    fd = ngx_open_file(dir, NGX_FILE_RDONLY|NGX_FILE_DIRECTORY,
                       NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE) {
        ngx_log_error(NGX_LOG_WARN, log, ngx_errno,
                      ngx_open_file_n " \"%s\" failed", dir);
        return;
    }

    if (fsync(fd) == -1) {
        ngx_log_error(NGX_LOG_WARN, log, ngx_errno,
                      "fsync() \"%s\" failed", dir);
    }

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      ngx_close_file_n " \"%s\" failed", dir);
    }
}


static void
ngx_http_playarr_metrics_token_set_file(ngx_http_playarr_metrics_token_t *tk,
    ngx_file_info_t *fi)
{
    tk->dev = fi->st_dev;
    tk->uniq = ngx_file_uniq(fi);
    tk->size = ngx_file_size(fi);
    tk->mtime = ngx_http_playarr_metrics_file_mtim(fi);
    tk->ctime = ngx_http_playarr_metrics_file_ctim(fi);
}


static ngx_uint_t
ngx_http_playarr_metrics_token_same_file(
    ngx_http_playarr_metrics_token_t *tk, ngx_file_info_t *fi)
{
    struct timespec  *mtim, *ctim;

    mtim = &ngx_http_playarr_metrics_file_mtim(fi);
    ctim = &ngx_http_playarr_metrics_file_ctim(fi);

    return tk->dev == fi->st_dev
           && tk->uniq == ngx_file_uniq(fi)
           && tk->size == ngx_file_size(fi)
           && tk->mtime.tv_sec == mtim->tv_sec
           && tk->mtime.tv_nsec == mtim->tv_nsec
           && tk->ctime.tv_sec == ctim->tv_sec
           && tk->ctime.tv_nsec == ctim->tv_nsec;
}


ngx_uint_t
ngx_http_playarr_metrics_token_auth(ngx_http_request_t *r,
    ngx_http_playarr_metrics_token_t *tk,
    ngx_http_playarr_metrics_refusal_t *rf)
{
    ngx_int_t  rc;
    ngx_str_t  token;

    if (ngx_http_playarr_metrics_token_refresh(r->connection->log, tk)
        != NGX_OK)
    {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "playarr metrics token: unavailable");

        rf->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        rf->challenge = NULL;
        rf->body = &ngx_http_playarr_metrics_token_unavailable;

        return NGX_HTTP_PLAYARR_METRICS_TOKEN_UNAVAILABLE;
    }

    if (r->headers_in.authorization == NULL) {
        rc = NGX_DECLINED;

    } else {
        rc = ngx_http_playarr_metrics_token_parse(
                                     &r->headers_in.authorization->value,
                                     &token);
    }

    switch (rc) {

    case NGX_OK:

        if (token.len == tk->len
            && CRYPTO_memcmp(token.data, tk->value, tk->len) == 0)
        {
            ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "playarr metrics token: accepted");
            return NGX_HTTP_PLAYARR_METRICS_TOKEN_OK;
        }

        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "playarr metrics token: wrong token");

        rf->status = NGX_HTTP_UNAUTHORIZED;
        rf->challenge = &ngx_http_playarr_metrics_token_challenge_invalid;
        rf->body = &ngx_http_playarr_metrics_token_invalid;

        return NGX_HTTP_PLAYARR_METRICS_TOKEN_INVALID;

    case NGX_DECLINED:

        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "playarr metrics token: no bearer credentials");

        rf->status = NGX_HTTP_UNAUTHORIZED;
        rf->challenge = &ngx_http_playarr_metrics_token_challenge;
        rf->body = &ngx_http_playarr_metrics_token_missing;

        return NGX_HTTP_PLAYARR_METRICS_TOKEN_MISSING;

    default: /* NGX_ERROR */

        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "playarr metrics token: malformed credentials");

        rf->status = NGX_HTTP_BAD_REQUEST;
        rf->challenge = &ngx_http_playarr_metrics_token_challenge_malformed;
        rf->body = &ngx_http_playarr_metrics_token_malformed;

        return NGX_HTTP_PLAYARR_METRICS_TOKEN_MALFORMED;
    }
}


/*
 * RFC 7235 credentials for the Bearer scheme (RFC 6750):
 *     "Bearer" 1*SP token68
 * NGX_OK: token points into value (nothing is copied); NGX_DECLINED:
 * another scheme; NGX_ERROR: "Bearer" without a well-formed token68.
 */

static ngx_int_t
ngx_http_playarr_metrics_token_parse(ngx_str_t *value, ngx_str_t *token)
{
    u_char  *p, *last;

    p = value->data;
    last = p + value->len;

    /* optional whitespace around a field value, e.g. over HTTP/2 */

    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    while (last > p && (last[-1] == ' ' || last[-1] == '\t')) {
        last--;
    }

    if (last - p < 6 || ngx_strncasecmp(p, (u_char *) "Bearer", 6) != 0) {
        return NGX_DECLINED;
    }

    p += 6;

    if (p == last) {
        return NGX_ERROR;
    }

    if (*p != ' ') {
        /* "Bearerfoo" is another scheme */
        return ngx_http_playarr_metrics_token_is_tchar(*p) ? NGX_DECLINED
                                                           : NGX_ERROR;
    }

    while (p < last && *p == ' ') {
        p++;
    }

    if (!ngx_http_playarr_metrics_token_is_token68(p, last)) {
        return NGX_ERROR;
    }

    token->data = p;
    token->len = last - p;

    return NGX_OK;
}


/* token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=" */

static ngx_uint_t
ngx_http_playarr_metrics_token_is_token68(u_char *p, u_char *last)
{
    u_char  *start, c;

    start = p;

    while (p < last) {
        c = *p;

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
            || (c >= '0' && c <= '9')
            || c == '-' || c == '.' || c == '_' || c == '~'
            || c == '+' || c == '/')
        {
            p++;
            continue;
        }

        break;
    }

    if (p == start) {
        return 0;
    }

    while (p < last && *p == '=') {
        p++;
    }

    return p == last;
}


/* RFC 7230 tchar, the characters of a scheme name */

static ngx_uint_t
ngx_http_playarr_metrics_token_is_tchar(u_char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
        || (c >= '0' && c <= '9'))
    {
        return 1;
    }

    switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*':
    case '+': case '-': case '.': case '^': case '_': case '`': case '|':
    case '~':
        return 1;
    }

    return 0;
}


static ngx_uint_t
ngx_http_playarr_metrics_token_is_space(u_char c)
{
    return c == ' ' || c == '\t' || c == CR || c == LF
           || c == '\v' || c == '\f';
}
