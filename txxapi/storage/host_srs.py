"""
The SRs a fresh XCP-ng host shows besides "Local storage":

* the tools SR ("XCP-ng Tools", is_tools_sr, a shared ISO SR in legacy
  mode) holding the guest-tools ISO.  As XAPI's master start-up, every
  start of a master makes sure there is exactly one, with its names and
  other_config keys as XAPI sets them; so a data dir from a version
  without it gets it on its next start.  Every host, master or slave,
  keeps its own PBD of it on its own directory (written only when not
  so already).  The ISO itself is made
  in <data dir>/tools-iso when missing (txstorage.tools_iso).
* the udev SRs XCP-ng's first boot creates, "Removable storage" (disks)
  and "DVD drives" (CDs), on /dev/xapi/block and /dev/xapi/cd: made on a
  first start only, as there.
"""

import os

from twisted.internet import defer
from twisted.logger import Logger

from txstorage import tools_iso
from txxapi.values import new_uuid

log = Logger()

PRODUCT_BRAND = "XCP-ng"
TOOLS_SR_NAME = PRODUCT_BRAND + " Tools"
TOOLS_SR_DESCRIPTION = TOOLS_SR_NAME + " ISOs"
TOOLS_SR_TAG = "xenserver_tools_sr"
INTERNAL_TAG = "xensource_internal"
TOOLS_ISO_DIR = "tools-iso"
I18N_KEY = "i18n-key"
I18N_ORIGINAL = "i18n-original-value-"
# (name_label, name_description, content_type, sm_config type, device
# directory, i18n key)
UDEV_SRS = (
    ("Removable storage", "", "disk", "block", "/dev/xapi/block",
     "local-hotplug-disk"),
    ("DVD drives", "Physical DVD drives", "iso", "cd", "/dev/xapi/cd",
     "local-hotplug-cd"),
)


def tools_pbd_config(directory):
    """XAPI's device_config of the tools SR's PBDs, on our directory."""
    return {"path": directory, "location": directory, "legacy_mode": "true"}


def _i18n(key, name_label, name_description=""):
    keys = {I18N_KEY: key, I18N_ORIGINAL + "name_label": name_label}
    if name_description:
        keys[I18N_ORIGINAL + "name_description"] = name_description
    return keys


@defer.inlineCallbacks
def ensure_tools_sr(storage):
    """The tools SR and its ISO, on every start."""
    db = storage.db
    directory = os.path.abspath(os.path.join(storage.identity.data_dir,
                                             TOOLS_ISO_DIR))
    yield storage.run(tools_iso.ensure, directory, PRODUCT_BRAND)
    srs = [sr for sr in db.refs("SR") if db.fields("SR", sr)["is_tools_sr"]]
    if not storage.identity.is_master:
        # The pool's SR is the master's to keep; a slave plugs its own
        # directory into it through its own PBD, and writes nothing when
        # that is as it should be.
        if srs:
            _ensure_own_pbd(storage, srs[0], directory)
        return
    if not srs:
        # An older database may only tag it in other_config.
        srs = [sr for sr in db.refs("SR")
               if TOOLS_SR_TAG in db.fields("SR", sr)["other_config"]]
    if srs:
        sr = srs[0]
        for redundant in srs[1:]:
            log.info("forgetting redundant tools SR {sr}", sr=redundant)
            _forget(storage, redundant)
    else:
        sr = storage.introduce_sr(new_uuid(), TOOLS_SR_NAME,
                                  TOOLS_SR_DESCRIPTION, "iso", "iso", True,
                                  {})
        log.info("created the tools SR in {path}", path=directory)
    other_config = dict(db.fields("SR", sr)["other_config"])
    other_config.update({INTERNAL_TAG: "true", TOOLS_SR_TAG: "true"})
    other_config.update(_i18n("xenserver-tools", TOOLS_SR_NAME,
                              TOOLS_SR_DESCRIPTION))
    db.update("SR", sr, {"name_label": TOOLS_SR_NAME,
                         "name_description": TOOLS_SR_DESCRIPTION,
                         "is_tools_sr": True, "other_config": other_config})
    _ensure_own_pbd(storage, sr, directory)


def _ensure_own_pbd(storage, sr, directory):
    """This host's PBD of the tools SR on its own directory (the other
    hosts' PBDs name theirs)."""
    config = tools_pbd_config(directory)
    pbd = storage.local_pbd(sr)
    if pbd is None:
        storage.create_pbd(storage.identity.host_ref, sr, config)
    elif storage.db.fields("PBD", pbd)["device_config"] != config:
        storage.db.update("PBD", pbd, {"device_config": config})


def _forget(storage, sr):
    db = storage.db
    for vdi in db.where("VDI", SR=sr):
        storage.forget_vdi_record(vdi)
    for pbd in db.where("PBD", SR=sr):
        db.delete("PBD", pbd)
    db.delete("SR", sr)


@defer.inlineCallbacks
def create_udev_srs(storage):
    """The removable-media SRs of a first start."""
    driver = storage.drivers["udev"]
    for name, description, content_type, kind, location, key in UDEV_SRS:
        sr_uuid = new_uuid()
        config = {"location": location}
        yield storage.run(driver.sr_create, sr_uuid, config, 0)
        sr = storage.introduce_sr(
            sr_uuid, name, description, "udev", content_type, False,
            {"type": kind}, other_config=_i18n(key, name, description))
        storage.create_pbd(storage.identity.host_ref, sr, config)


def mark_tools_iso(infos):
    """Of the tools images a scan of the tools SR found, the newest build
    is the tools ISO (sm_config xs-tools, which VDI.is_tools_iso shows)."""
    tools = [i for i in infos if "xs-tools-build" in i.sm_config]
    if tools:
        newest = max(tools, key=lambda i: _build_key(
            i.sm_config["xs-tools-build"]))
        newest.sm_config["xs-tools"] = "true"


def _build_key(build):
    return (int(build), "") if build.isdigit() else (-1, build)
