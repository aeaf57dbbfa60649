/*
 * The part of libxenstore the backend uses: reading what a guest's PV
 * drivers advertise (control/feature-*), which libxl does not expose.
 */

struct xs_handle;
typedef uint32_t xs_transaction_t;
#define XBT_NULL 0

struct xs_handle *xs_open(unsigned long flags);
void xs_close(struct xs_handle *xsh);
/* A malloc'ed copy of the value (free() it), or NULL with errno set. */
void *xs_read(struct xs_handle *h, xs_transaction_t t, const char *path,
              unsigned int *len);
