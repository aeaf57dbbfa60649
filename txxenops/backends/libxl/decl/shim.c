/* Compiled into txxenops.backends.libxl._libxl (see _build.py). */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <unistd.h>
#include <libxl.h>
#include <libxl_event.h>
#include <libxl_utils.h>
#include <xenstore.h>
#include <xentoollog.h>

static void txx_log_message(int level, int errnoval, const char *context,
                            const char *message);

int txx_log_min_level = XTL_INFO;
/* The process the logger calls Python in.  libxl forks helpers that log
 * before they exec or exit; Python must not be entered there (the GIL may
 * belong to a thread the fork did not copy), so they write to stderr. */
static pid_t txx_pid;

static void txx_vmessage(struct xentoollog_logger *logger,
                         xentoollog_level level, int errnoval,
                         const char *context, const char *format,
                         va_list al)
{
    char buf[2048];

    (void)logger;
    if ((int)level < txx_log_min_level)
        return;
    vsnprintf(buf, sizeof(buf), format, al);
    if (getpid() != txx_pid) {
        fprintf(stderr, "%s: %s\n", context ? context : "libxl", buf);
        return;
    }
    txx_log_message((int)level, errnoval, context, buf);
}

static void txx_progress(struct xentoollog_logger *logger,
                         const char *context, const char *doing_what,
                         int percent, unsigned long done,
                         unsigned long total)
{
    /* Progress bars (save/restore) are of no use to a daemon. */
    (void)logger; (void)context; (void)doing_what; (void)percent;
    (void)done; (void)total;
}

static void txx_destroy(struct xentoollog_logger *logger)
{
    /* Static: nothing to free. */
    (void)logger;
}

static xentoollog_logger txx_the_logger = {
    txx_vmessage, txx_progress, txx_destroy,
};

static xentoollog_logger *txx_logger(void)
{
    txx_pid = getpid();
    return &txx_the_logger;
}

static void txx_event_fields(const libxl_event *event, uint32_t *domid,
                             int *type, int *shutdown_reason,
                             uint64_t *for_user)
{
    *domid = event->domid;
    *type = event->type;
    *for_user = event->for_user;
    *shutdown_reason = event->type == LIBXL_EVENT_TYPE_DOMAIN_SHUTDOWN
        ? event->u.domain_shutdown.shutdown_reason : -1;
}
