/*
 * cdef for the few C helpers compiled into the module (shim.c) and for the
 * Python callbacks libxl and xentoollog call back into.
 */

/* A xentoollog logger that formats each message in C (Python cannot take
 * a va_list) and hands it to txx_log_message.  Messages below
 * txx_log_min_level are dropped in C, so debug chatter costs no GIL. */
xentoollog_logger *txx_logger(void);
extern int txx_log_min_level;

extern "Python" void txx_log_message(int level, int errnoval,
                                     const char *context,
                                     const char *message);

/* libxl_event_hooks callbacks. */
extern "Python" void txx_event_occurs(void *user, libxl_event *event);
extern "Python" void txx_disaster(void *user, libxl_event_type type,
                                  const char *msg, int errnoval);

/* The members of a libxl_event the backend needs. */
void txx_event_fields(const libxl_event *event, uint32_t *domid,
                      int *type, int *shutdown_reason, uint64_t *for_user);

/* libxl_osevent_hooks: libxl's fds and timeouts, kept by the poll loop. */
extern "Python" int txx_fd_register(void *user, int fd, void **reg_out,
                                    short events, void *for_libxl);
extern "Python" int txx_fd_modify(void *user, int fd, void **reg_update,
                                  short events);
extern "Python" void txx_fd_deregister(void *user, int fd, void *reg);
extern "Python" int txx_timeout_register(void *user, void **reg_out,
                                         struct timeval abs,
                                         void *for_libxl);
extern "Python" int txx_timeout_modify(void *user, void **reg_update,
                                       struct timeval abs);
extern "Python" void txx_timeout_deregister(void *user, void *reg);
