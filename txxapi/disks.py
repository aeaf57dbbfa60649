"""
The seam between the VM lifecycle and the storage layer: everything a VM
operation needs from disks goes through the hooks below.

The storage layer (txstorage behind txxapi) is not wired in yet, so every
hook that would act on a VDI raises NOT_IMPLEMENTED naming what it needed;
VMs without disks never reach them and work fully.  When storage lands,
these functions call it (VDI attach/activate for a path, VDI.clone /
copy / snapshot / destroy / create) and nothing else changes.

Suspend images are the exception: until suspend VDIs exist they are files
under <data-dir>/xenops/suspend, one per VM (or snapshot) uuid, so that
suspend, resume, checkpoint and revert work for diskless VMs.  Their file
operations block: callers run them on the xenops thread pool.
"""

import os
import shutil

from txxapi.errors import XenAPIError

SUSPEND_DIR = os.path.join("xenops", "suspend")


def _storage_missing(what):
    return XenAPIError("NOT_IMPLEMENTED", what)


# --- disks (the storage layer's job) ---------------------------------------

def vdi_path(server, vdi):
    """The local path of an attached, activated VDI, for the backend."""
    raise _storage_missing("VDI.attach (storage layer)")


def clone_disk(ctx, vdi):
    """VM.clone: a new VDI sharing ``vdi``'s data (copy on write)."""
    raise _storage_missing("VDI.clone (storage layer)")


def copy_disk(ctx, vdi, sr):
    """VM.copy: a full copy of ``vdi`` into ``sr`` (NULL: the same SR)."""
    raise _storage_missing("VDI.copy (storage layer)")


def snapshot_disk(ctx, vdi):
    """VM.snapshot/checkpoint: a read-only snapshot VDI of ``vdi``."""
    raise _storage_missing("VDI.snapshot (storage layer)")


def destroy_disk(ctx, vdi):
    """Undo a clone/copy/snapshot that failed half way, or VM.revert
    replacing the disks it reverts."""
    raise _storage_missing("VDI.destroy (storage layer)")


def create_disk(ctx, sr, size, name_label, vdi_type):
    """VM.provision: a new empty VDI of ``size`` bytes in ``sr``."""
    raise _storage_missing("VDI.create (storage layer)")


def provision_sr(ctx, sr_uuid):
    """The SR a provision <disk sr="..."/> names: by uuid, else the
    pool's default SR."""
    raise _storage_missing("SR for VM.provision (storage layer)")


# --- suspend images (files until suspend VDIs exist) ------------------------

def suspend_image(server, key):
    """The image path for the VM or snapshot with uuid ``key``."""
    directory = os.path.join(server.data_dir, SUSPEND_DIR)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    return os.path.join(directory, key + ".img")


def has_suspend_image(server, key):
    return os.path.exists(os.path.join(server.data_dir, SUSPEND_DIR,
                                       key + ".img"))


def discard_suspend_image(server, key):
    try:
        os.unlink(os.path.join(server.data_dir, SUSPEND_DIR, key + ".img"))
    except FileNotFoundError:
        pass


def copy_suspend_image(server, src_key, dst_key):
    """Blocking: run on a thread."""
    src = suspend_image(server, src_key)
    dst = suspend_image(server, dst_key)
    tmp = dst + ".tmp"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
