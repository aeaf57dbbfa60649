"""
XVA, XAPI's VM backup format: whole-VM export and import over HTTP (GET
/export, PUT /import) and their metadata-only forms (/export_metadata,
/import_metadata), as XenCenter, Xen Orchestra and ``xe vm-export`` use
them.  tar: the container; ova: ova.xml; chunks: disks inside it;
codecs: gzip and zstd; restore: the objects an import makes; streams:
both directions on the storage data paths; handlers: the HTTP side.
"""
