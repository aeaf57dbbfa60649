"""
The interface every txstorage driver provides: SMAPIv1's commands as methods
(sr_create, vdi_snapshot, ...), plus the facts the toolstack needs to create
the driver's SM record.

Drivers block (they run qemu-img and touch the filesystem) and are
thread-safe: the toolstack calls them from a thread pool.  They raise
txstorage.errors.StorageError subclasses.
"""

from zope.interface import Attribute, Interface


class ISRDriver(Interface):
    # -- SM record facts ---------------------------------------------------
    sm_type = Attribute("SR.type this driver handles: 'file', 'iso', ...")
    name_label = Attribute("SM.name_label")
    name_description = Attribute("SM.name_description")
    vendor = Attribute("SM.vendor")
    copyright = Attribute("SM.copyright")
    version = Attribute("SM.version (the driver version)")
    required_api_version = Attribute("SM.required_api_version")
    capabilities = Attribute(
        "SM.capabilities: list of capability names (SR_PROBE, VDI_CREATE..)")
    features = Attribute("SM.features: dict capability name -> version")
    configuration = Attribute(
        "SM.configuration: dict device_config key -> description")
    driver_filename = Attribute("SM.driver_filename")
    required_cluster_stack = Attribute("SM.required_cluster_stack (list)")
    supported_image_formats = Attribute("image formats VDIs may use")
    content_type = Attribute("default SR.content_type ('user', 'iso')")
    shared = Attribute("True if SRs of this type are reachable from every "
                       "host (SR.shared)")

    # -- SR operations -----------------------------------------------------
    def sr_create(sr_uuid, device_config, physical_size=0):
        """Make a new, empty SR on the substrate device_config names.
        physical_size > 0 caps the SR's capacity (bytes)."""

    def sr_delete(sr_uuid, device_config):
        """Destroy an SR's substrate; SRNotEmpty if VDIs remain."""

    def sr_attach(sr_uuid, device_config):
        """Make the SR usable on this host (PBD.plug).  Later calls for
        this SR use the device_config given here."""

    def sr_detach(sr_uuid):
        """PBD.unplug; SRInUse while VDIs are attached."""

    def sr_scan(sr_uuid):
        """[VDIInfo] of every VDI on the substrate, hidden bases included
        (hidden=True) so the toolstack can introduce them unmanaged."""

    def sr_probe(device_config, sm_config=None):
        """[SRInfo] of the SRs found on the substrate device_config names;
        see txstorage.types.probe_xml for SR.probe's XML."""

    def sr_update(sr_uuid):
        """SRInfo with fresh physical_size, physical_utilisation and
        virtual_allocation."""

    def sr_reset_host(sr_uuid, host=None):
        """Drop the activations `host` holds (it restarted: none of its
        VMs runs).  Returns the uuids of the VDIs released."""

    def sr_gc(sr_uuid):
        """Garbage-collect: delete hidden nodes without children and
        coalesce hidden nodes with a single child.  Returns GCResult."""

    # -- VDI operations ----------------------------------------------------
    def vdi_create(sr_uuid, vdi_uuid, virtual_size, name_label="",
                   name_description="", sm_config=None, vdi_type="user",
                   read_only=False, sharable=False):
        """Create an empty VDI (vdi_uuid None: the driver picks one).
        virtual_size is rounded up as the driver requires.  SRFull when
        the SR cannot take it.  Returns VDIInfo."""

    def vdi_delete(sr_uuid, vdi_uuid):
        """Delete a VDI (VDIInUse while attached or active)."""

    def vdi_attach(sr_uuid, vdi_uuid, writable):
        """Make the VDI openable on this host.  Returns AttachInfo."""

    def vdi_activate(sr_uuid, vdi_uuid, writable, host=None):
        """Claim the VDI for I/O from host; VDIInUse if another host has
        it active writable (or active at all, when writable)."""

    def vdi_deactivate(sr_uuid, vdi_uuid, host=None):
        """Release an activation."""

    def vdi_detach(sr_uuid, vdi_uuid):
        """Undo vdi_attach."""

    def vdi_resize(sr_uuid, vdi_uuid, new_size):
        """Grow a VDI (shrinking is refused).  Returns VDIInfo."""

    def vdi_snapshot(sr_uuid, vdi_uuid, driver_params=None):
        """The VDI's current image becomes a hidden read-only base; the VDI
        and the new snapshot become its copy-on-write children.  Returns
        the snapshot's VDIInfo (is_snapshot=True)."""

    def vdi_clone(sr_uuid, vdi_uuid, driver_params=None):
        """Like vdi_snapshot, but the new VDI is an ordinary writable
        VDI.  Returns its VDIInfo."""

    def vdi_introduce(sr_uuid, vdi_uuid, location, sm_config=None):
        """Adopt an image already on the substrate (location) as vdi_uuid.
        Returns VDIInfo."""

    def vdi_compose(sr_uuid, parent_uuid, child_uuid):
        """Make parent_uuid's image the (hidden) parent of child_uuid's
        image; the child must hold only the differences."""

    def vdi_update(sr_uuid, vdi_uuid):
        """Fresh VDIInfo of one VDI (sizes, parent)."""

    def vdi_generate_config(sr_uuid, vdi_uuid):
        """A string from which vdi_attach_from_config can attach the VDI
        without the toolstack's database (HA statefile, redo log)."""

    def vdi_attach_from_config(config):
        """Attach from a vdi_generate_config string.  Returns
        AttachInfo."""


class IChangedBlockTracking(Interface):
    """What a driver whose SM record has VDI_CONFIG_CBT also provides: a
    changed-block log per tracked VDI (txstorage.cbt's format)."""

    def vdi_enable_cbt(sr_uuid, vdi_uuid):
        """Start the VDI's log (an empty one).  Returns VDIInfo."""

    def vdi_disable_cbt(sr_uuid, vdi_uuid):
        """Drop the VDI's log.  Returns VDIInfo."""

    def vdi_cbt_log(sr_uuid, vdi_uuid):
        """The path of the VDI's log, or None while it is not tracked:
        where a writer of the VDI's data marks what it writes."""

    def vdi_cbt_untracked_writer(sr_uuid, vdi_uuid):
        """A writer that does not mark the log has the VDI: every block
        counts as changed."""

    def vdi_list_changed_blocks(sr_uuid, vdi_from, vdi_to):
        """The bitmap of the blocks changed between two points of the
        VDI's history (bytes, most significant bit first)."""

    def vdi_data_destroy(sr_uuid, vdi_uuid):
        """Keep only a snapshot's log; its data may be reclaimed.  Returns
        VDIInfo."""
