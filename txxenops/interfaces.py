"""
The interface every txxenops backend provides.

Threading contract
------------------
* Every method is synchronous and may block (libxl calls do, and so do the
  simulator's modelled operation times).  The toolstack calls them from a
  thread pool of its own (deferToThreadPool), never from its reactor thread;
  only ``host_info`` and ``free_memory`` are cheap enough for the reactor.
* Every method is thread-safe.  Operations on different VMs run in parallel;
  operations on the same VM are serialised in arrival order, like xenopsd's
  per-VM queues, except that ``destroy``, hard ``shutdown``/``reboot`` and
  ``cancel`` first interrupt whatever is waiting on that VM (which then
  raises Cancelled), so a hung clean shutdown never blocks a hard one.
* Backends never touch the Twisted reactor.  Domain events are delivered by
  calling the callbacks given to ``subscribe`` with one DomainEvent each,
  from a single backend thread, in the order the changes happened.  A
  callback must return quickly (hand the event to the reactor with
  callFromThread) and must not call back into the backend synchronously;
  exceptions it raises are logged and dropped.
* A DomainEvent is emitted after every change of a domain's state, memory,
  vCPUs, devices or guest metrics, including changes the toolstack made
  itself.  Changes the guest makes (guest_shutdown with a reason, crash)
  arrive only as events: the toolstack applies the VM's actions_after_*
  by calling destroy/reboot/pause.

Errors are the subclasses of txxenops.errors.XenopsError.  VMs are named
by uuid throughout; a VM has at most one domain on a backend.
"""

from zope.interface import Attribute, Interface


class IXenopsBackend(Interface):
    name = Attribute("Short backend name: 'simulator' or 'libxl'.")

    # --- host -------------------------------------------------------------

    def host_info():
        """A HostInfo describing this host's hypervisor, CPUs and memory.
        Cheap; may be called on the reactor thread."""

    def free_memory():
        """Bytes of host memory not used by Xen, dom0 or any domain
        (including domains being built).  Cheap."""

    def memory_overhead(spec):
        """Bytes a domain for VMSpec ``spec`` needs beyond its guest memory
        (shadow/p2m tables, per-vCPU state, ...).  XAPI stores this as
        VM.memory_overhead and adds it to the memory a start needs."""

    # --- lifecycle --------------------------------------------------------

    def start(spec, paused=False):
        """Create and build a domain for VMSpec ``spec`` with its devices
        and consoles, then unpause it unless ``paused``.  Returns the new
        DomainInfo.  The domain gets target memory if it fits, else as much
        as fits down to dynamic_min (like squeezed).  Raises
        NotEnoughMemory(needed, available) when even dynamic_min plus the
        overhead does not fit, DeviceError when a disk's path cannot be
        opened, BadDomainState(uuid, 'halted', state) when the VM already
        has a domain; on any failure nothing is left behind."""

    def pause(uuid):
        """Stop scheduling a running domain.  Returns its DomainInfo.
        BadDomainState unless running."""

    def unpause(uuid):
        """Resume a paused domain.  Returns its DomainInfo.  BadDomainState
        unless paused."""

    def shutdown(uuid, clean=True, timeout=1200.0):
        """Make the domain go away.  clean: ask the guest (PV control node
        control/shutdown = poweroff) and wait up to ``timeout`` seconds for
        it to shut down, then destroy; a guest that does not comply raises
        ShutdownTimeout and its domain is left untouched.  Clean needs a
        running domain (BadDomainState otherwise).  Not clean: destroy at
        once, whatever the state.  Returns None."""

    def reboot(uuid, clean=True, timeout=1200.0, spec=None):
        """Replace the domain with a freshly built one (new domid), from
        ``spec`` when given (the toolstack applies pending configuration
        changes at reboot) else from the spec it was started with.  clean
        asks the guest first, as for shutdown.  Hard reboot works in any
        state, e.g. after a guest-requested reboot or a crash.  Returns the
        new DomainInfo.  If the new domain does not fit (NotEnoughMemory)
        the VM is left without a domain."""

    def suspend(uuid, image, timeout=1200.0):
        """Ask the guest to suspend (SuspendTimeout if it does not), write
        its memory image to ``image`` and destroy the domain.  ``image`` is
        a file descriptor open for writing (a file, a pipe or a socket:
        the toolstack may stream it into storage as it comes); the image
        is written sequentially from its position, and the descriptor is
        neither seeked, truncated, synced nor closed.  Needs a running
        domain.  On any failure the domain is left running as it was and
        ImageError (the image could not be written), SuspendTimeout or
        Cancelled is raised.  Returns None."""

    def resume(spec, image, paused=False):
        """Build a domain for ``spec`` from the image read sequentially
        from ``image`` (a file descriptor open for reading, not closed;
        bytes after the image are not read, or ignored), written by
        suspend for a domain of the same type (of this VM, or of the VM
        a clone was made from), else ImageError; the guest continues
        where it stopped.  Memory and device rules as for start; on any
        failure nothing is left behind.  Returns the new DomainInfo."""

    def destroy(uuid):
        """Destroy the VM's domain at once, whatever its state; no-op when
        there is none (idempotent, for clean-up).  Returns None."""

    def migrate_send(uuid, sock, timeout=600.0):
        """Send the running or paused domain over the connected stream
        socket ``sock`` to a peer in migrate_receive; when the peer has
        taken it over, destroy the local domain.  On any failure the
        domain is left as it was and MigrationError is raised.  The
        toolstack opens ``sock`` (e.g. an HTTP CONNECT to the destination
        host, or socketpair() for a local test) and closes it after."""

    def migrate_receive(spec, sock, paused=False, timeout=600.0):
        """Receive a domain for ``spec`` from a peer's migrate_send on
        ``sock``.  Returns the new DomainInfo (state as on the source,
        paused if ``paused``).  NotEnoughMemory/ImageError/MigrationError
        leave nothing behind and are reported to the sender."""

    def cancel(uuid):
        """Interrupt a blocking wait (clean shutdown, reboot, suspend,
        migration, modelled build time) in progress on the VM's domain; the
        interrupted call raises Cancelled.  No-op when nothing waits."""

    # --- inspection -------------------------------------------------------

    def domain_info(uuid):
        """The DomainInfo of the VM's domain; DomainNotFound if none."""

    def list_domains():
        """DomainInfo of every guest domain (not dom0), by domid."""

    def sample_metrics(pif_devices):
        """A HostStats of this moment: the host's CPUs, memory, load and
        the counters of the network devices named in ``pif_devices`` (the
        ones the toolstack manages), and a DomainStats of every running
        or paused guest domain and of the control domain.  Counters are
        cumulative and never go back while a domain lives; a paused
        domain's do not advance.  What the backend cannot read is left
        out and named in ``unavailable``."""

    # --- devices and resources (domain running or paused) ----------------

    tracks_disk_writes = Attribute(
        "True if disk_writes says where guests write on their disks.")

    def disk_writes(path, mark=None):
        """[(offset, length)] of what guests wrote on the disk image at
        ``path`` since the last call (also of domains gone since), or
        None when the backend cannot tell: then every block counts as
        written.  ``mark(extents)``, if given, is called with them before
        they count as taken, so that a backend that keeps them across a
        restart hands them out again unless ``mark`` returned; if it
        raises they are not taken."""

    def plug_vbd(uuid, vbd):
        """Hot-plug VBDSpec ``vbd``.  Returns the DomainInfo.  DeviceError
        when the device name is taken or the path cannot be opened."""

    def unplug_vbd(uuid, device, force=False):
        """Hot-unplug a disk or CD drive.  Without force the guest must
        release it (DeviceError otherwise).  Returns the DomainInfo."""

    def insert_cd(uuid, device, path):
        """Put the medium at ``path`` into the empty CD drive ``device``.
        DeviceError if not a CD drive, or not empty.  Returns the
        DomainInfo."""

    def eject_cd(uuid, device):
        """Empty the CD drive ``device``.  DeviceError if not a CD drive,
        or empty.  Returns the DomainInfo."""

    def plug_vif(uuid, vif):
        """Hot-plug VIFSpec ``vif``; DeviceError if the device index is
        taken.  Returns the DomainInfo."""

    def unplug_vif(uuid, device):
        """Hot-unplug the VIF with device index ``device``.  Returns the
        DomainInfo."""

    def set_memory_target(uuid, target):
        """Ask the guest's balloon driver to move to ``target`` bytes
        (0 < target <= static_max, else InvalidSpec).  memory_actual
        follows as far as free memory and the guest allow.  Returns the
        DomainInfo."""

    def set_vcpus(uuid, n):
        """Bring the number of online vCPUs to ``n`` (1..vcpus_max, else
        InvalidSpec).  Returns the DomainInfo."""

    # --- events and teardown ----------------------------------------------

    def subscribe(callback):
        """Call ``callback(DomainEvent)`` for every domain change from now
        on (see the threading contract above)."""

    def unsubscribe(callback):
        """Stop calling ``callback``.  Unknown callbacks are ignored."""

    def close():
        """Release the backend's threads, sockets and handles.  Domains
        keep running (they outlive the toolstack, as on Xen).
        Idempotent."""
