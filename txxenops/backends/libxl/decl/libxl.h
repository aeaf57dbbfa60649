/*
 * The part of libxenlight (Xen 4.17, Debian libxen-dev) that the txxenops
 * libxl backend uses, as cffi cdef declarations.  Out-of-line API mode:
 * struct layouts ending in "...;" and enum values are checked against the
 * real headers when the module is compiled, so only the fields read here
 * are listed.
 */

/* --- basic types -------------------------------------------------------- */

typedef struct libxl__ctx libxl_ctx;
typedef struct xentoollog_logger xentoollog_logger;
typedef uint32_t libxl_domid;
typedef uint64_t libxl_ev_user;

typedef struct {
    unsigned char uuid[16];
} libxl_uuid;

typedef struct {
    uint32_t size;
    uint8_t *map;
} libxl_bitmap;

typedef enum libxl_error {
    ERROR_NONSPECIFIC = -1,
    ERROR_VERSION = -2,
    ERROR_FAIL = -3,
    ERROR_NI = -4,
    ERROR_NOMEM = -5,
    ERROR_INVAL = -6,
    ERROR_BADFAIL = -7,
    ERROR_GUEST_TIMEDOUT = -8,
    ERROR_TIMEDOUT = -9,
    ERROR_NOPARAVIRT = -10,
    ERROR_NOT_READY = -11,
    ERROR_OSEVENT_REG_FAIL = -12,
    ERROR_BUFFERFULL = -13,
    ERROR_UNKNOWN_CHILD = -14,
    ERROR_LOCK_FAIL = -15,
    ERROR_JSON_CONFIG_EMPTY = -16,
    ERROR_DEVICE_EXISTS = -17,
    ERROR_DOMAIN_NOTFOUND = -21,
    ERROR_ABORTED = -22,
    ERROR_NOTFOUND = -23,
    ERROR_DOMAIN_DESTROYED = -24,
    ...
} libxl_error;

const char *libxl_error_to_string(libxl_error p);

typedef enum libxl_domain_type {
    LIBXL_DOMAIN_TYPE_INVALID = -1,
    LIBXL_DOMAIN_TYPE_HVM = 1,
    LIBXL_DOMAIN_TYPE_PV = 2,
    LIBXL_DOMAIN_TYPE_PVH = 3,
} libxl_domain_type;

typedef enum libxl_shutdown_reason {
    LIBXL_SHUTDOWN_REASON_UNKNOWN = -1,
    LIBXL_SHUTDOWN_REASON_POWEROFF = 0,
    LIBXL_SHUTDOWN_REASON_REBOOT = 1,
    LIBXL_SHUTDOWN_REASON_SUSPEND = 2,
    LIBXL_SHUTDOWN_REASON_CRASH = 3,
    LIBXL_SHUTDOWN_REASON_WATCHDOG = 4,
    LIBXL_SHUTDOWN_REASON_SOFT_RESET = 5,
} libxl_shutdown_reason;

typedef enum libxl_console_type {
    LIBXL_CONSOLE_TYPE_UNKNOWN = 0,
    LIBXL_CONSOLE_TYPE_SERIAL = 1,
    LIBXL_CONSOLE_TYPE_PV = 2,
    ...
} libxl_console_type;

/* --- context ------------------------------------------------------------ */

#define LIBXL_VERSION 0

int libxl_ctx_alloc(libxl_ctx **pctx, int version, unsigned flags,
                    xentoollog_logger *lg);
int libxl_ctx_free(libxl_ctx *ctx);

/* --- host --------------------------------------------------------------- */

typedef struct libxl_version_info {
    int xen_version_major;
    int xen_version_minor;
    char *xen_version_extra;
    char *capabilities;
    ...;
} libxl_version_info;

const libxl_version_info *libxl_get_version_info(libxl_ctx *ctx);

typedef struct libxl_physinfo {
    uint32_t threads_per_core;
    uint32_t cores_per_socket;
    uint32_t max_cpu_id;
    uint32_t nr_cpus;
    uint32_t cpu_khz;
    uint64_t total_pages;
    uint64_t free_pages;
    uint64_t scrub_pages;
    uint64_t outstanding_pages;
    uint32_t nr_nodes;
    bool cap_hvm;
    bool cap_pv;
    ...;
} libxl_physinfo;

void libxl_physinfo_init(libxl_physinfo *p);
void libxl_physinfo_dispose(libxl_physinfo *p);
int libxl_get_physinfo(libxl_ctx *ctx, libxl_physinfo *physinfo);
int libxl_get_free_memory(libxl_ctx *ctx, uint64_t *memkb);

/* --- domains ------------------------------------------------------------ */

typedef struct libxl_dominfo {
    libxl_uuid uuid;
    libxl_domid domid;
    bool running;
    bool blocked;
    bool paused;
    bool shutdown;
    bool dying;
    libxl_shutdown_reason shutdown_reason;
    uint64_t current_memkb;
    uint64_t max_memkb;
    uint64_t cpu_time;
    uint32_t vcpu_max_id;
    uint32_t vcpu_online;
    libxl_domain_type domain_type;
    ...;
} libxl_dominfo;

void libxl_dominfo_init(libxl_dominfo *p);
void libxl_dominfo_dispose(libxl_dominfo *p);
int libxl_domain_info(libxl_ctx *ctx, libxl_dominfo *info_r, uint32_t domid);
libxl_dominfo *libxl_list_domain(libxl_ctx *ctx, int *nb_domain_out);
void libxl_dominfo_list_free(libxl_dominfo *list, int nb_domain);

typedef struct libxl_vcpuinfo {
    uint32_t vcpuid;
    uint32_t cpu;
    bool online;
    bool blocked;
    bool running;
    uint64_t vcpu_time;
    ...;
} libxl_vcpuinfo;

libxl_vcpuinfo *libxl_list_vcpu(libxl_ctx *ctx, uint32_t domid,
                                int *nb_vcpu, int *nr_cpus_out);
void libxl_vcpuinfo_list_free(libxl_vcpuinfo *, int nr_vcpus);

char *libxl_domid_to_name(libxl_ctx *ctx, uint32_t domid);
uint32_t libxl_vm_get_start_time(libxl_ctx *ctx, uint32_t domid);
int libxl_get_memory_target(libxl_ctx *ctx, uint32_t domid,
                            uint64_t *out_target);
int libxl_console_get_tty(libxl_ctx *ctx, uint32_t domid, int cons_num,
                          libxl_console_type type, char **path);

/* The domain configuration is only ever filled from libxl's JSON form, so
 * its members stay opaque here. */
typedef struct libxl_domain_config { ...; } libxl_domain_config;
void libxl_domain_config_init(libxl_domain_config *d_config);
void libxl_domain_config_dispose(libxl_domain_config *d_config);
int libxl_domain_config_from_json(libxl_ctx *ctx, libxl_domain_config *p,
                                  const char *s);
char *libxl_domain_config_to_json(libxl_ctx *ctx, libxl_domain_config *p);

typedef struct libxl_domain_restore_params {
    int checkpointed_stream;
    uint32_t stream_version;
    ...;
} libxl_domain_restore_params;
void libxl_domain_restore_params_init(libxl_domain_restore_params *p);
void libxl_domain_restore_params_dispose(libxl_domain_restore_params *p);

/* Every libxl_asyncop_how below is passed as NULL: synchronous calls on the
 * caller's thread. */
typedef struct { ...; } libxl_asyncop_how;
typedef struct { ...; } libxl_asyncprogress_how;

int libxl_retrieve_domain_configuration(libxl_ctx *ctx, uint32_t domid,
                                        libxl_domain_config *d_config,
                                        const libxl_asyncop_how *ao_how);
int libxl_domain_create_new(libxl_ctx *ctx, libxl_domain_config *d_config,
                            uint32_t *domid,
                            const libxl_asyncop_how *ao_how,
                            const libxl_asyncprogress_how *aop_console_how);
int libxl_domain_create_restore(libxl_ctx *ctx,
                                libxl_domain_config *d_config,
                                uint32_t *domid, int restore_fd,
                                int send_back_fd,
                                const libxl_domain_restore_params *params,
                                const libxl_asyncop_how *ao_how,
                                const libxl_asyncprogress_how *aop_console_how);
int libxl_domain_suspend(libxl_ctx *ctx, uint32_t domid, int fd, int flags,
                         const libxl_asyncop_how *ao_how);
int libxl_domain_resume(libxl_ctx *ctx, uint32_t domid, int suspend_cancel,
                        const libxl_asyncop_how *ao_how);
int libxl_domain_shutdown(libxl_ctx *ctx, uint32_t domid,
                          const libxl_asyncop_how *ao_how);
int libxl_domain_reboot(libxl_ctx *ctx, uint32_t domid,
                        const libxl_asyncop_how *ao_how);
int libxl_domain_destroy(libxl_ctx *ctx, uint32_t domid,
                         const libxl_asyncop_how *ao_how);
int libxl_domain_pause(libxl_ctx *ctx, uint32_t domid,
                       const libxl_asyncop_how *ao_how);
int libxl_domain_unpause(libxl_ctx *ctx, uint32_t domid,
                         const libxl_asyncop_how *ao_how);
int libxl_set_memory_target(libxl_ctx *ctx, uint32_t domid,
                            int64_t target_memkb, int relative, int enforce);

void libxl_bitmap_init(libxl_bitmap *map);
void libxl_bitmap_dispose(libxl_bitmap *map);
int libxl_bitmap_alloc(libxl_ctx *ctx, libxl_bitmap *bitmap, int n_bits);
void libxl_bitmap_set(libxl_bitmap *bitmap, int bit);
int libxl_set_vcpuonline(libxl_ctx *ctx, uint32_t domid,
                         libxl_bitmap *cpumap,
                         const libxl_asyncop_how *ao_how);

/* --- events ------------------------------------------------------------- */

typedef enum libxl_event_type {
    LIBXL_EVENT_TYPE_DOMAIN_SHUTDOWN = 1,
    LIBXL_EVENT_TYPE_DOMAIN_DEATH = 2,
    LIBXL_EVENT_TYPE_DISK_EJECT = 3,
    LIBXL_EVENT_TYPE_OPERATION_COMPLETE = 4,
    LIBXL_EVENT_TYPE_DOMAIN_CREATE_CONSOLE_AVAILABLE = 5,
} libxl_event_type;

/* Opaque: its union layout is read by txx_event_fields in shim.c. */
typedef struct libxl_event libxl_event;

void libxl_event_free(libxl_ctx *ctx, libxl_event *event);

typedef struct libxl_event_hooks {
    uint64_t event_occurs_mask;
    void (*event_occurs)(void *user, libxl_event *event);
    void (*disaster)(void *user, libxl_event_type type,
                     const char *msg, int errnoval);
} libxl_event_hooks;

void libxl_event_register_callbacks(libxl_ctx *ctx,
                                    const libxl_event_hooks *hooks,
                                    void *user);

typedef struct libxl__evgen_domain_death libxl_evgen_domain_death;
int libxl_evenable_domain_death(libxl_ctx *ctx, uint32_t domid,
                                libxl_ev_user user,
                                libxl_evgen_domain_death **evgen_out);
void libxl_evdisable_domain_death(libxl_ctx *ctx,
                                  libxl_evgen_domain_death *evgen);

/* The application's event loop, as libxl sees it: libxl registers the
 * file descriptors (xenstore watches, helper pipes) and timeouts it wants
 * watched through these hooks, and the backend's poll thread reports
 * them back with libxl_osevent_occurred_*. */
struct pollfd {
    int fd;
    short events;
    short revents;
};
struct timeval {
    long tv_sec;
    long tv_usec;
    ...;
};
#define POLLIN ...
typedef unsigned long nfds_t;
int poll(struct pollfd *fds, nfds_t nfds, int timeout);

typedef struct libxl_osevent_hooks {
    int (*fd_register)(void *user, int fd, void **for_app_registration_out,
                       short events, void *for_libxl);
    int (*fd_modify)(void *user, int fd, void **for_app_registration_update,
                     short events);
    void (*fd_deregister)(void *user, int fd, void *for_app_registration);
    int (*timeout_register)(void *user, void **for_app_registration_out,
                            struct timeval abs, void *for_libxl);
    int (*timeout_modify)(void *user, void **for_app_registration_update,
                          struct timeval abs);
    void (*timeout_deregister)(void *user, void *for_app_registration);
} libxl_osevent_hooks;

void libxl_osevent_register_hooks(libxl_ctx *ctx,
                                  const libxl_osevent_hooks *hooks,
                                  void *user);
void libxl_osevent_occurred_fd(libxl_ctx *ctx, void *for_libxl, int fd,
                               short events, short revents);
void libxl_osevent_occurred_timeout(libxl_ctx *ctx, void *for_libxl);

/* Child processes (libxl-save-helper, the destroy and lock helpers,
 * hotplug scripts): the application owns SIGCHLD, so libxl never replaces
 * the handlers of Twisted or of Python's subprocess module; the poll
 * thread asks libxl to reap its own children. */
typedef enum {
    libxl_sigchld_owner_libxl,
    libxl_sigchld_owner_mainloop,
    libxl_sigchld_owner_libxl_always,
    libxl_sigchld_owner_libxl_always_selective_reap,
} libxl_sigchld_owner;

typedef struct {
    libxl_sigchld_owner chldowner;
    ...;
} libxl_childproc_hooks;

void libxl_childproc_setmode(libxl_ctx *ctx,
                             const libxl_childproc_hooks *hooks, void *user);
void libxl_childproc_sigchld_occurred(libxl_ctx *ctx);

void free(void *ptr);
