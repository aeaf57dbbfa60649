"""
NBD: VDIs exported read-only over the Network Block Device protocol, as
XAPI's xapi-nbd serves them to backup tools (Xen Orchestra's delta
backups, nbdcopy, qemu-img).  info: VDI.get_nbd_info's records and the
TLS policy networks' purposes set; protocol: the fixed-newstyle server;
service: its listener in the service tree.
"""
