
/*
 * Copyright (C) Playarr metrics module authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ngx_http_playarr_metrics_module.h>
#include <ngx_http_playarr_metrics_file.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>


/*
 * The state file: restored when a zone is made, saved by the first worker
 * every interval and for a new binary, and by the master when nginx
 * stops.  The snapshot's format is the store's (shm/, state.c); the file
 * I/O, the timer and the threads are here.
 */


/*
 * The largest state file read: a snapshot holds less than its zone, but
 * one written by a zone of another size is read too
 */
#define NGX_HTTP_PLAYARR_METRICS_STATE_ZONES    4
#define NGX_HTTP_PLAYARR_METRICS_STATE_MIN_CAP  (64 * 1024 * 1024)

/* how long a new binary waits for the old one's save */
#define NGX_HTTP_PLAYARR_METRICS_HANDOFF_WAIT   3000
#define NGX_HTTP_PLAYARR_METRICS_HANDOFF_STEP   20


#if (NGX_THREADS)

/* a save in a thread of nginx's pool; done is set by the thread, last */
typedef struct {
    ngx_http_playarr_metrics_store_t   *store;
    ngx_str_t                          *path;
    ngx_uint_t                          handoff;
    volatile ngx_uint_t                 done;
    ngx_http_playarr_metrics_save_t     sv;
} ngx_http_playarr_metrics_save_ctx_t;

#endif


static void ngx_http_playarr_metrics_save_handler(ngx_event_t *ev);
static void ngx_http_playarr_metrics_save_check(
    ngx_http_playarr_metrics_main_conf_t *pmcf, ngx_log_t *log);
static ngx_int_t ngx_http_playarr_metrics_save_start(
    ngx_http_playarr_metrics_main_conf_t *pmcf, ngx_uint_t handoff,
    ngx_log_t *log);
#if (NGX_THREADS)
static ngx_uint_t ngx_http_playarr_metrics_notify(ngx_conf_t *cf);
static void ngx_http_playarr_metrics_save_thread(void *data, ngx_log_t *log);
static void ngx_http_playarr_metrics_save_done(ngx_event_t *ev);
static void ngx_http_playarr_metrics_save_report(
    ngx_http_playarr_metrics_main_conf_t *pmcf, ngx_log_t *log);
#endif
static ngx_int_t ngx_http_playarr_metrics_save(
    ngx_http_playarr_metrics_store_t *store, ngx_str_t *path, ngx_log_t *log);
static ngx_int_t ngx_http_playarr_metrics_save_quiet(
    ngx_http_playarr_metrics_store_t *store, ngx_str_t *path,
    ngx_http_playarr_metrics_save_t *sv);
static void ngx_http_playarr_metrics_save_log(ngx_str_t *path,
    ngx_http_playarr_metrics_save_t *sv, ngx_log_t *log);
static ngx_uint_t ngx_http_playarr_metrics_save_file(ngx_str_t *path,
    u_char *temp, u_char *data, size_t len, ngx_err_t *err);
static void ngx_http_playarr_metrics_restore(
    ngx_http_playarr_metrics_store_t *store, ngx_str_t *path, ngx_log_t *log);
static ngx_int_t ngx_http_playarr_metrics_oldbin(ngx_str_t *oldpid,
    ngx_pid_t master, ngx_file_info_t *fi);
static void ngx_http_playarr_metrics_handoff(
    ngx_http_playarr_metrics_main_conf_t *pmcf, ngx_log_t *log);


/*
 * At configuration: the periodic save runs in nginx's thread pool
 * "default" when the event method can end a thread's task
 */

ngx_int_t
ngx_http_playarr_metrics_persist_conf(ngx_conf_t *cf,
    ngx_http_playarr_metrics_main_conf_t *pmcf)
{
#if (NGX_THREADS)

    if (pmcf->state_file.len && ngx_http_playarr_metrics_notify(cf)) {
        pmcf->thread_pool = ngx_thread_pool_add(cf, NULL);
        if (pmcf->thread_pool == NULL) {
            return NGX_ERROR;
        }
    }

#endif

    return NGX_OK;
}


/*
 * nginx runs init_module after it made or reused every zone of a cycle.
 * A zone made at start, or by a new binary, begins from the state file;
 * one that replaces a zone of another size, or is reused, does not.  A
 * new binary started by SIGUSR2 first lets the old one save.
 */

ngx_int_t
ngx_http_playarr_metrics_persist_init_module(ngx_cycle_t *cycle)
{
    ngx_http_playarr_metrics_main_conf_t  *pmcf;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                            ngx_http_playarr_metrics_module);

    if (pmcf == NULL || pmcf->store == NULL || !pmcf->store->fresh) {
        return NGX_OK;
    }

    pmcf->store->fresh = 0;

    if (pmcf->state_file.len == 0) {
        return NGX_OK;
    }

    if (ngx_inherited && !ngx_test_config) {
        ngx_http_playarr_metrics_handoff(pmcf, cycle->log);
    }

    ngx_http_playarr_metrics_restore(pmcf->store, &pmcf->state_file,
                                     cycle->log);

    return NGX_OK;
}


/*
 * The state file is saved by the master when nginx stops, and every
 * minute by the first worker, so that a crash of the whole server loses
 * a minute at most.  The first worker also looks every second for a
 * binary upgrade of its master, and saves at once for the new binary.
 * With threads, the worker's saves run in nginx's thread pool "default",
 * one at a time, and its event loop goes on meanwhile.
 */

ngx_int_t
ngx_http_playarr_metrics_persist_init_process(ngx_cycle_t *cycle,
    ngx_http_playarr_metrics_main_conf_t *pmcf)
{
#if (NGX_THREADS)
    ngx_thread_task_t                    *task;
    ngx_http_playarr_metrics_save_ctx_t  *ctx;
#endif

    if (pmcf->state_file.len == 0
        || ngx_process != NGX_PROCESS_WORKER || ngx_worker != 0)
    {
        return NGX_OK;
    }

#if (NGX_THREADS)

    if (pmcf->thread_pool) {
        task = ngx_thread_task_alloc(cycle->pool,
                                 sizeof(ngx_http_playarr_metrics_save_ctx_t));
        if (task == NULL) {
            return NGX_ERROR;
        }

        ctx = task->ctx;

        ctx->sv.temp = ngx_pnalloc(cycle->pool,
                   NGX_HTTP_PLAYARR_METRICS_SAVE_TEMP_LEN(&pmcf->state_file));
        if (ctx->sv.temp == NULL) {
            return NGX_ERROR;
        }

        ctx->store = pmcf->store;
        ctx->path = &pmcf->state_file;
        ctx->sv.keep = 1;

        task->handler = ngx_http_playarr_metrics_save_thread;
        task->event.handler = ngx_http_playarr_metrics_save_done;
        task->event.data = pmcf;
        task->event.log = cycle->log;

        pmcf->save_task = task;
    }

#endif

    pmcf->save.handler = ngx_http_playarr_metrics_save_handler;
    pmcf->save.data = pmcf;
    pmcf->save.log = cycle->log;
    pmcf->save.cancelable = 1;

    pmcf->save_next = ngx_current_msec + pmcf->save_every;

    ngx_add_timer(&pmcf->save, NGX_HTTP_PLAYARR_METRICS_SAVE_TICK);

    return NGX_OK;
}


static void
ngx_http_playarr_metrics_save_handler(ngx_event_t *ev)
{
    ngx_http_playarr_metrics_main_conf_t *pmcf = ev->data;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    ngx_add_timer(ev, NGX_HTTP_PLAYARR_METRICS_SAVE_TICK);

    ngx_http_playarr_metrics_save_check(pmcf, ev->log);
}


/* a save for the new binary, or the periodic one, when none is running */

static void
ngx_http_playarr_metrics_save_check(
    ngx_http_playarr_metrics_main_conf_t *pmcf, ngx_log_t *log)
{
    ngx_file_info_t  fi;

    if (ngx_http_playarr_metrics_oldbin(pmcf->oldpid, ngx_parent, &fi)
        == NGX_OK)
    {
        /*
         * the new binary starts from this save; later ones would only
         * overwrite its own.  A save still running was begun before the
         * upgrade: this one starts when it ends.
         */

        if (fi.st_ctim.tv_sec == pmcf->handoff.tv_sec
            && fi.st_ctim.tv_nsec == pmcf->handoff.tv_nsec)
        {
            return;
        }

        if (ngx_http_playarr_metrics_save_start(pmcf, 1, log) != NGX_BUSY) {
            pmcf->handoff = fi.st_ctim;
        }

        return;
    }

    if ((ngx_msec_int_t) (ngx_current_msec - pmcf->save_next) < 0) {
        return;
    }

    if (ngx_http_playarr_metrics_save_start(pmcf, 0, log) != NGX_BUSY) {
        pmcf->save_next = ngx_current_msec + pmcf->save_every;
    }
}


/* NGX_BUSY while a save runs, NGX_OK when one is started or done */

static ngx_int_t
ngx_http_playarr_metrics_save_start(
    ngx_http_playarr_metrics_main_conf_t *pmcf, ngx_uint_t handoff,
    ngx_log_t *log)
{
#if (NGX_THREADS)
    ngx_thread_task_t                    *task;
    ngx_http_playarr_metrics_save_ctx_t  *ctx;

    task = pmcf->save_task;

    if (task) {
        if (task->event.active) {
            return NGX_BUSY;
        }

        ctx = task->ctx;
        ctx->handoff = handoff;
        ctx->done = 0;

        if (ngx_thread_task_post(pmcf->thread_pool, task) == NGX_OK) {
            return NGX_OK;
        }

        /* the pool's queue is full: the save is made here and now */
    }
#endif

    if (ngx_http_playarr_metrics_save(pmcf->store, &pmcf->state_file, log)
        == NGX_OK
        && handoff)
    {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "playarr_metrics state saved to \"%V\" "
                      "for the new binary", &pmcf->state_file);
    }

    return NGX_OK;
}


#if (NGX_THREADS)

/*
 * Whether the event method can end a thread's task in the event loop
 * (the pool cannot run without): poll and select cannot.  An events
 * block that comes after http is not known yet; epoll, the default, can.
 */

static ngx_uint_t
ngx_http_playarr_metrics_notify(ngx_conf_t *cf)
{
    ngx_uint_t           m;
    ngx_event_conf_t    *ecf;
    ngx_event_module_t  *module;

    if (ngx_get_conf(cf->cycle->conf_ctx, ngx_events_module) == NULL) {
        return 1;
    }

    ecf = ngx_event_get_conf(cf->cycle->conf_ctx, ngx_event_core_module);

    for (m = 0; cf->cycle->modules[m]; m++) {
        if (cf->cycle->modules[m]->type != NGX_EVENT_MODULE
            || cf->cycle->modules[m]->ctx_index != ecf->use)
        {
            continue;
        }

        module = cf->cycle->modules[m]->ctx;

        if (module->actions.notify) {
            return 1;
        }

        ngx_conf_log_error(NGX_LOG_NOTICE, cf, 0,
                           "the event method \"%s\" cannot end a thread's "
                           "task: playarr_metrics_state_file is saved in "
                           "the worker's event loop", module->name->data);
        return 0;
    }

    return 1;
}


/*
 * In a thread: nothing here logs, locks or touches the event loop.
 *
 * The temporary file's RAND_bytes() gives the thread state of OpenSSL's,
 * which OpenSSL frees when the thread exits; the pool's threads exit as
 * the worker does, while its main thread runs OpenSSL's own cleanup at
 * exit(), and the two raced (a worker died on SIGSEGV, now and then, as
 * it shut down).  The state is freed here, at the end of the task.
 */

static void
ngx_http_playarr_metrics_save_thread(void *data, ngx_log_t *log)
{
    ngx_http_playarr_metrics_save_ctx_t *ctx = data;

    (void) ngx_http_playarr_metrics_save_quiet(ctx->store, ctx->path,
                                               &ctx->sv);

    OPENSSL_thread_stop();

    ngx_memory_barrier();

    ctx->done = 1;
}


static void
ngx_http_playarr_metrics_save_done(ngx_event_t *ev)
{
    ngx_http_playarr_metrics_main_conf_t *pmcf = ev->data;

    ngx_http_playarr_metrics_save_report(pmcf, ev->log);

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    /* a save for the new binary may have waited for this one */

    ngx_http_playarr_metrics_save_check(pmcf, ev->log);
}


static void
ngx_http_playarr_metrics_save_report(
    ngx_http_playarr_metrics_main_conf_t *pmcf, ngx_log_t *log)
{
    ngx_http_playarr_metrics_save_ctx_t  *ctx;

    ctx = pmcf->save_task->ctx;

    if (ctx->sv.step != NGX_HTTP_PLAYARR_METRICS_SAVE_OK) {
        ngx_http_playarr_metrics_save_log(ctx->path, &ctx->sv, log);
        return;
    }

    if (ctx->handoff) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "playarr_metrics state saved to \"%V\" "
                      "for the new binary", ctx->path);
    }
}


#endif


/*
 * A worker that exits has its thread pool joined first (the pool's module
 * comes before this one): a save that was running has ended, file renamed
 * or removed, but its end was not seen by the event loop.  It is said here.
 */

void
ngx_http_playarr_metrics_persist_exit_process(ngx_cycle_t *cycle)
{
#if (NGX_THREADS)
    ngx_http_playarr_metrics_main_conf_t  *pmcf;
    ngx_http_playarr_metrics_save_ctx_t   *ctx;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                            ngx_http_playarr_metrics_module);

    if (pmcf == NULL || pmcf->save_task == NULL
        || !pmcf->save_task->event.active)
    {
        return;
    }

    ctx = pmcf->save_task->ctx;

    if (ctx->done) {
        ngx_memory_barrier();
        ngx_http_playarr_metrics_save_report(pmcf, cycle->log);
    }
#endif
}


void
ngx_http_playarr_metrics_persist_exit_master(ngx_cycle_t *cycle)
{
    ngx_http_playarr_metrics_main_conf_t  *pmcf;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                            ngx_http_playarr_metrics_module);

    if (pmcf == NULL || pmcf->store == NULL || pmcf->state_file.len == 0
        || pmcf->store->sh == NULL)
    {
        return;
    }

    if (ngx_new_binary) {
        ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                      "playarr_metrics state not saved to \"%V\": "
                      "the new binary %P keeps it", &pmcf->state_file,
                      ngx_new_binary);
        return;
    }

    if (ngx_http_playarr_metrics_save(pmcf->store, &pmcf->state_file,
                                      cycle->log)
        == NGX_OK)
    {
        ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                      "playarr_metrics state saved to \"%V\"",
                      &pmcf->state_file);
    }
}



/*
 * The state file: written to a new temporary file of a random name in its
 * directory, then renamed over it.  The directory is writable by the
 * worker user, and the master saves as root at exit: the temporary file
 * is created O_EXCL|O_NOFOLLOW (a link or a file planted there is never
 * opened), and what was opened is checked to be the new, regular file of
 * this process's user before anything is written.
 */

static ngx_int_t
ngx_http_playarr_metrics_save(ngx_http_playarr_metrics_store_t *store,
    ngx_str_t *path, ngx_log_t *log)
{
    ngx_int_t                          rc;
    ngx_http_playarr_metrics_save_t    sv;

    sv.temp = ngx_alloc(NGX_HTTP_PLAYARR_METRICS_SAVE_TEMP_LEN(path), log);
    if (sv.temp == NULL) {
        return NGX_ERROR;
    }

    sv.keep = 0;

    rc = ngx_http_playarr_metrics_save_quiet(store, path, &sv);

    if (rc != NGX_OK) {
        ngx_http_playarr_metrics_save_log(path, &sv, log);
    }

    ngx_free(sv.temp);

    return rc;
}


/*
 * The save itself, logging nothing and taking no lock: it runs in a
 * thread of nginx's pool too.  On failure sv->step says what failed and
 * sv->err why; sv->temp has room for the temporary file's name.  With
 * sv->keep, the snapshot's buffer is kept in sv for the next save (no
 * new pages to fault in, nothing copied as it grows, each time).
 */

static ngx_int_t
ngx_http_playarr_metrics_save_quiet(
    ngx_http_playarr_metrics_store_t *store, ngx_str_t *path,
    ngx_http_playarr_metrics_save_t *sv)
{
    u_char     *buf;
    size_t      size, len;
    ngx_int_t   rc;

    sv->step = NGX_HTTP_PLAYARR_METRICS_SAVE_OK;
    sv->err = 0;
    sv->size = 0;
    sv->temp[0] = '\0';

    buf = sv->keep ? sv->buf : NULL;
    size = sv->keep ? sv->buf_size : 0;

    if (ngx_http_playarr_metrics_state_take(store, &buf, &size, &len)
        != NGX_OK)
    {
        sv->step = NGX_HTTP_PLAYARR_METRICS_SAVE_DUMP;
        sv->err = NGX_ENOMEM;
        sv->size = len;
        rc = NGX_ERROR;
        goto done;
    }

    sv->size = len;
    sv->step = ngx_http_playarr_metrics_save_file(path, sv->temp, buf, len,
                                                  &sv->err);

    rc = (sv->step == NGX_HTTP_PLAYARR_METRICS_SAVE_OK) ? NGX_OK : NGX_ERROR;

done:

    if (sv->keep) {
        sv->buf = buf;
        sv->buf_size = size;

    } else if (buf) {
        ngx_free(buf);
    }

    return rc;
}


/* what a failed save says, in the process that asked for it */

static void
ngx_http_playarr_metrics_save_log(ngx_str_t *path,
    ngx_http_playarr_metrics_save_t *sv, ngx_log_t *log)
{
    switch (sv->step) {

    case NGX_HTTP_PLAYARR_METRICS_SAVE_OK:
        break;

    case NGX_HTTP_PLAYARR_METRICS_SAVE_DUMP:
        ngx_log_error(NGX_LOG_EMERG, log, sv->err,
                      "malloc(%uz) failed", sv->size);
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "no memory for a snapshot, state file \"%V\" "
                      "not written", path);
        break;

    case NGX_HTTP_PLAYARR_METRICS_SAVE_RAND:
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "RAND_bytes() failed for state file \"%V\"", path);
        break;

    case NGX_HTTP_PLAYARR_METRICS_SAVE_OPEN:
        ngx_log_error(NGX_LOG_ERR, log, sv->err,
                      ngx_open_file_n " \"%s\" failed", sv->temp);
        break;

    case NGX_HTTP_PLAYARR_METRICS_SAVE_INFO:
        ngx_log_error(NGX_LOG_ERR, log, sv->err,
                      ngx_fd_info_n " \"%s\" failed", sv->temp);
        break;

    case NGX_HTTP_PLAYARR_METRICS_SAVE_NOT_NEW:
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "state file \"%s\" is not the file just created, "
                      "not written", sv->temp);
        break;

    case NGX_HTTP_PLAYARR_METRICS_SAVE_WRITE:
        ngx_log_error(NGX_LOG_ERR, log, sv->err,
                      ngx_write_fd_n " \"%s\" failed", sv->temp);
        break;

    case NGX_HTTP_PLAYARR_METRICS_SAVE_FSYNC:
        ngx_log_error(NGX_LOG_ERR, log, sv->err,
                      "fsync() \"%s\" failed", sv->temp);
        break;

    case NGX_HTTP_PLAYARR_METRICS_SAVE_CLOSE:
        ngx_log_error(NGX_LOG_ERR, log, sv->err,
                      ngx_close_file_n " \"%s\" failed", sv->temp);
        break;

    default: /* NGX_HTTP_PLAYARR_METRICS_SAVE_RENAME */
        ngx_log_error(NGX_LOG_ERR, log, sv->err,
                      ngx_rename_file_n " \"%s\" to \"%V\" failed",
                      sv->temp, path);
        break;
    }
}


/*
 * Writes data to a new temporary file and renames it to path; logs
 * nothing: returns the step that failed, its errno in *err
 */

static ngx_uint_t
ngx_http_playarr_metrics_save_file(ngx_str_t *path, u_char *temp,
    u_char *data, size_t len, ngx_err_t *err)
{
    u_char           *p;
    size_t            rest;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_uint_t        tries;
    ngx_file_info_t   fi;
    u_char            rnd[8];

    fd = NGX_INVALID_FILE;

    for (tries = 0; tries < 8; tries++) {
        if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
            return NGX_HTTP_PLAYARR_METRICS_SAVE_RAND;
        }

        *ngx_hex_dump(ngx_sprintf(temp, "%V.tmp.", path), rnd, sizeof(rnd))
            = '\0';

        fd = ngx_open_file(temp, NGX_FILE_WRONLY|NGX_FILE_NOFOLLOW,
                           O_CREAT|O_EXCL,
                           NGX_FILE_OWNER_ACCESS);

        if (fd != NGX_INVALID_FILE || ngx_errno != NGX_EEXIST) {
            break;
        }
    }

    if (fd == NGX_INVALID_FILE) {
        *err = ngx_errno;
        return NGX_HTTP_PLAYARR_METRICS_SAVE_OPEN;
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        *err = ngx_errno;
        goto close;
    }

    if (!ngx_is_file(&fi) || fi.st_nlink != 1 || fi.st_uid != geteuid()
        || ngx_file_size(&fi) != 0)
    {
        (void) ngx_close_file(fd);
        return NGX_HTTP_PLAYARR_METRICS_SAVE_NOT_NEW;
    }

    /*
     * write() may write less: a full disk says ENOSPC only on the next
     * call, and Linux writes at most 0x7ffff000 bytes at a time
     */

    for (p = data, rest = len; rest; p += n, rest -= n) {
        n = ngx_write_fd(fd, p, rest);

        if (n == -1 || n == 0) {
            *err = (n == -1) ? ngx_errno : 0;
            (void) ngx_close_file(fd);
            (void) ngx_delete_file(temp);
            return NGX_HTTP_PLAYARR_METRICS_SAVE_WRITE;
        }
    }

    if (fsync(fd) == -1) {
        *err = ngx_errno;
        (void) ngx_close_file(fd);
        (void) ngx_delete_file(temp);
        return NGX_HTTP_PLAYARR_METRICS_SAVE_FSYNC;
    }

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        *err = ngx_errno;
        (void) ngx_delete_file(temp);
        return NGX_HTTP_PLAYARR_METRICS_SAVE_CLOSE;
    }

    if (ngx_rename_file(temp, path->data) == NGX_FILE_ERROR) {
        *err = ngx_errno;
        (void) ngx_delete_file(temp);
        return NGX_HTTP_PLAYARR_METRICS_SAVE_RENAME;
    }

    *err = 0;

    return NGX_HTTP_PLAYARR_METRICS_SAVE_OK;

close:

    (void) ngx_close_file(fd);
    (void) ngx_delete_file(temp);

    return NGX_HTTP_PLAYARR_METRICS_SAVE_INFO;
}


/*
 * At start: a missing file is a first start, anything else is said.  The
 * file is read as every file the module reads (a link, a FIFO or a file
 * far larger than any snapshot of this zone is refused with a warning);
 * a snapshot is restored whole or not at all.
 */

static void
ngx_http_playarr_metrics_restore(ngx_http_playarr_metrics_store_t *store,
    ngx_str_t *path, ngx_log_t *log)
{
    u_char     *from;
    size_t      max;
    ngx_str_t   data;

    max = (size_t) (store->shpool->end - (u_char *) store->shpool);
    max = ngx_max(NGX_HTTP_PLAYARR_METRICS_STATE_MIN_CAP,
                  NGX_HTTP_PLAYARR_METRICS_STATE_ZONES * max);

    switch (ngx_http_playarr_metrics_file_read(NULL, log, NGX_LOG_WARN,
                                               "playarr_metrics_state_file",
                                               path->data, max, &data, NULL))
    {
    case NGX_OK:
        break;

    case NGX_DECLINED:
        return;

    default:
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "state file \"%V\" not restored, "
                      "metrics start from zero", path);
        return;
    }

    from = ngx_alloc(path->len + sizeof("state file \"\""), log);

    if (from == NULL) {
        ngx_free(data.data);
        return;
    }

    ngx_sprintf(from, "state file \"%V\"%Z", path);

    if (ngx_http_playarr_metrics_state_load(store, data.data, data.len,
                                            (char *) from, log)
        == NGX_OK)
    {
        ngx_log_error(NGX_LOG_NOTICE, log, 0, "%s restored", from);
    }

    ngx_free(data.data);
    ngx_free(from);
}


/*
 * A binary upgrade (SIGUSR2) renames the pid file to ".oldbin" and runs
 * the new binary, which starts its zone from the state file.  The first
 * worker of the old binary looks for that file every second and, when it
 * names its own master, saves at once; the new binary waits a few seconds
 * for that save, so that it starts from the counts of the upgrade rather
 * than from the last periodic save.
 *
 * _oldbin() returns NGX_OK when the ".oldbin" file exists and holds the
 * pid of master, its information in fi (the rename set its st_ctim).
 */

static ngx_int_t
ngx_http_playarr_metrics_oldbin(ngx_str_t *oldpid, ngx_pid_t master,
    ngx_file_info_t *fi)
{
    u_char    *p, *last;
    ssize_t    n;
    ngx_fd_t   fd;
    u_char     buf[NGX_INT64_LEN + 2];

    if (oldpid == NULL || oldpid->len == 0
        || ngx_file_info(oldpid->data, fi) == NGX_FILE_ERROR)
    {
        return NGX_DECLINED;
    }

    fd = ngx_open_file(oldpid->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        return NGX_DECLINED;
    }

    n = ngx_read_fd(fd, buf, sizeof(buf));

    (void) ngx_close_file(fd);

    if (n <= 0) {
        return NGX_DECLINED;
    }

    last = buf + n;

    for (p = buf; p < last && *p >= '0' && *p <= '9'; p++) {
        /* void */
    }

    if (ngx_atoi(buf, p - buf) != (ngx_int_t) master) {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static void
ngx_http_playarr_metrics_handoff(ngx_http_playarr_metrics_main_conf_t *pmcf,
    ngx_log_t *log)
{
    ngx_uint_t       i;
    ngx_file_info_t  pfi, sfi;

    if (ngx_http_playarr_metrics_oldbin(pmcf->oldpid, ngx_parent, &pfi)
        != NGX_OK)
    {
        return;
    }

    for (i = 0;
         i <= NGX_HTTP_PLAYARR_METRICS_HANDOFF_WAIT
              / NGX_HTTP_PLAYARR_METRICS_HANDOFF_STEP;
         i++)
    {
        if (ngx_file_info(pmcf->state_file.data, &sfi) != NGX_FILE_ERROR
            && (sfi.st_mtim.tv_sec > pfi.st_ctim.tv_sec
                || (sfi.st_mtim.tv_sec == pfi.st_ctim.tv_sec
                    && sfi.st_mtim.tv_nsec >= pfi.st_ctim.tv_nsec)))
        {
            ngx_log_error(NGX_LOG_NOTICE, log, 0,
                          "state file \"%V\" saved by the old binary",
                          &pmcf->state_file);
            return;
        }

        ngx_msleep(NGX_HTTP_PLAYARR_METRICS_HANDOFF_STEP);
    }

    ngx_log_error(NGX_LOG_WARN, log, 0,
                  "the old binary did not save state file \"%V\" "
                  "within %ui s, the counts since its last save are lost",
                  &pmcf->state_file,
                  (ngx_uint_t) NGX_HTTP_PLAYARR_METRICS_HANDOFF_WAIT / 1000);
}

