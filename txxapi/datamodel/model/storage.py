"""
XenAPI classes of the storage family, stated as facts: names, types,
qualifiers, defaults, roles, errors and lifecycle.  Written by
tools/gen_datamodel.py; edit that script, not this file, for bulk changes.
"""

from txxapi.datamodel.schema import (  # noqa: F401
    Class, Enum, Field, Message, RW, RO_CONSTRUCTOR, RO_RUNTIME,
    PROTOTYPED, DEPRECATED, REMOVED)
from txxapi.datamodel.roles import (  # noqa: F401
    NOBODY, POOL_ADMIN, POOL_OPERATOR, POOL_OPERATOR_CC, VM_POWER_ADMIN,
    VM_POWER_ADMIN_CC, VM_ADMIN, VM_OPERATOR, VM_OPERATOR_CC, READ_ONLY)

C_SM = Class(
    'SM',
    read_roles=READ_ONLY,
    implicit={
        'get_record': READ_ONLY,
        'get_by_uuid': READ_ONLY,
        'get_by_name_label': READ_ONLY,
        'get_all': READ_ONLY,
        'get_all_records': READ_ONLY,
    },
    fields=(
        Field('uuid', 'string', RO_RUNTIME),
        Field('name_label', 'string', RO_RUNTIME, default='""'),
        Field('name_description', 'string', RO_RUNTIME, default='""'),
        Field('type', 'string', RO_RUNTIME),
        Field('vendor', 'string', RO_RUNTIME),
        Field('copyright', 'string', RO_RUNTIME),
        Field('version', 'string', RO_RUNTIME),
        Field('required_api_version', 'string', RO_RUNTIME),
        Field('configuration', '(string -> string) map', RO_RUNTIME),
        Field('capabilities', 'string set', RO_RUNTIME, default='{}', state=DEPRECATED),
        Field('features', '(string -> int) map', RO_RUNTIME, default='{}'),
        Field('other_config', '(string -> string) map', RW, default='{}', write_roles=POOL_OPERATOR),
        Field('driver_filename', 'string', RO_RUNTIME, default='""'),
        Field('required_cluster_stack', 'string set', RO_RUNTIME, default='{}'),
    ),
)



C_SR = Class(
    'SR',
    read_roles=READ_ONLY,
    implicit={
        'get_record': READ_ONLY,
        'get_by_uuid': READ_ONLY,
        'get_by_name_label': READ_ONLY,
        'get_all': READ_ONLY,
        'get_all_records': READ_ONLY,
    },
    fields=(
        Field('uuid', 'string', RO_RUNTIME),
        Field('name_label', 'string', RO_CONSTRUCTOR, default='""'),
        Field('name_description', 'string', RO_CONSTRUCTOR, default='""'),
        Field('allowed_operations', 'enum storage_operations set', RO_RUNTIME, default='{}'),
        Field('current_operations', '(string -> enum storage_operations) map', RO_RUNTIME, default='{}'),
        Field('VDIs', 'VDI ref set', RO_RUNTIME),
        Field('PBDs', 'PBD ref set', RO_RUNTIME),
        Field('virtual_allocation', 'int', RO_RUNTIME),
        Field('physical_utilisation', 'int', RO_RUNTIME),
        Field('physical_size', 'int', RO_CONSTRUCTOR),
        Field('type', 'string', RO_CONSTRUCTOR),
        Field('content_type', 'string', RO_CONSTRUCTOR),
        Field('shared', 'bool', RO_RUNTIME),
        Field('other_config', '(string -> string) map', RW, write_roles=POOL_OPERATOR),
        Field('tags', 'string set', RW, default='{}', write_roles=VM_OPERATOR),
        Field('sm_config', '(string -> string) map', RW, default='{}', write_roles=POOL_OPERATOR),
        Field('blobs', '(string -> blob ref) map', RO_RUNTIME, default='{}'),
        Field('local_cache_enabled', 'bool', RO_RUNTIME, default='false'),
        Field('introduced_by', 'DR_task ref', RO_RUNTIME, default='OpaqueRef:NULL'),
        Field('clustered', 'bool', RO_RUNTIME, default='false'),
        Field('is_tools_sr', 'bool', RO_RUNTIME, default='false'),
    ),
    messages=(
        Message('forget_data_source_archives', (('SR ref', 'sr'), ('string', 'data_source'), ), result='void', roles=POOL_OPERATOR),
        Message('query_data_source', (('SR ref', 'sr'), ('string', 'data_source'), ), result='float', roles=READ_ONLY),
        Message('record_data_source', (('SR ref', 'sr'), ('string', 'data_source'), ), result='void', roles=POOL_OPERATOR),
        Message('get_data_sources', (('SR ref', 'sr'), ), result='data_source record set', roles=READ_ONLY),
        Message('disable_database_replication', (('SR ref', 'sr'), ), result='void', roles=POOL_OPERATOR),
        Message('enable_database_replication', (('SR ref', 'sr'), ), result='void', roles=POOL_OPERATOR),
        Message('assert_supports_database_replication', (('SR ref', 'sr'), ), result='void', roles=POOL_OPERATOR),
        Message('assert_can_host_ha_statefile', (('SR ref', 'sr'), ), result='void', roles=POOL_OPERATOR),
        Message('set_physical_size', (('SR ref', 'self'), ('int', 'value'), ), result='void', roles=POOL_OPERATOR),
        Message('create_new_blob', (('SR ref', 'sr'), ('string', 'name'), ('string', 'mime_type'), ('bool', 'public'), ), result='blob ref', roles=POOL_OPERATOR),
        Message('set_name_description', (('SR ref', 'sr'), ('string', 'value'), ), result='void', roles=POOL_OPERATOR),
        Message('set_name_label', (('SR ref', 'sr'), ('string', 'value'), ), result='void', roles=POOL_OPERATOR),
        Message('set_shared', (('SR ref', 'sr'), ('bool', 'value'), ), result='void', roles=POOL_OPERATOR),
        Message('probe_ext', (('host ref', 'host'), ('(string -> string) map', 'device_config'), ('string', 'type'), ('(string -> string) map', 'sm_config'), ), result='probe_result record set', roles=POOL_OPERATOR),
        Message('probe', (('host ref', 'host'), ('(string -> string) map', 'device_config'), ('string', 'type'), ('(string -> string) map', 'sm_config'), ), result='string', roles=POOL_OPERATOR),
        Message('scan', (('SR ref', 'sr'), ), result='void', roles=VM_POWER_ADMIN),
        Message('get_supported_types', (), result='string set', roles=READ_ONLY),
        Message('update', (('SR ref', 'sr'), ), result='void', roles=POOL_OPERATOR),
        Message('forget', (('SR ref', 'sr'), ), result='void', roles=POOL_OPERATOR, errors=('SR_HAS_PBD', )),
        Message('destroy', (('SR ref', 'sr'), ), result='void', roles=POOL_OPERATOR, errors=('SR_HAS_PBD', )),
        Message('make', (('host ref', 'host'), ('(string -> string) map', 'device_config'), ('int', 'physical_size'), ('string', 'name_label'), ('string', 'name_description'), ('string', 'type'), ('string', 'content_type'), ('(string -> string) map', 'sm_config'), ), result='string', roles=POOL_OPERATOR, state=DEPRECATED),
        Message('introduce', (('string', 'uuid'), ('string', 'name_label'), ('string', 'name_description'), ('string', 'type'), ('string', 'content_type'), ('bool', 'shared'), ('(string -> string) map', 'sm_config'), ), result='SR ref', roles=POOL_OPERATOR),
        Message('create', (('host ref', 'host'), ('(string -> string) map', 'device_config'), ('int', 'physical_size'), ('string', 'name_label'), ('string', 'name_description'), ('string', 'type'), ('string', 'content_type'), ('bool', 'shared'), ('(string -> string) map', 'sm_config'), ), result='SR ref', roles=POOL_OPERATOR, errors=('SR_UNKNOWN_DRIVER', )),
    ),
    enums=(
        Enum('storage_operations', ('scan', 'destroy', 'forget', 'plug', 'unplug', 'update', 'vdi_create', 'vdi_introduce', 'vdi_destroy', 'vdi_resize', 'vdi_clone', 'vdi_snapshot', 'vdi_mirror', 'vdi_enable_cbt', 'vdi_disable_cbt', 'vdi_data_destroy', 'vdi_list_changed_blocks', 'vdi_set_on_boot', 'pbd_create', 'pbd_destroy')),
    ),
)



C_sr_stat = Class(
    'sr_stat',
    read_roles=READ_ONLY,
    field_messages=False,
    fields=(
        Field('uuid', 'string option', RO_RUNTIME),
        Field('name_label', 'string', RO_RUNTIME),
        Field('name_description', 'string', RO_RUNTIME),
        Field('free_space', 'int', RO_RUNTIME),
        Field('total_space', 'int', RO_RUNTIME),
        Field('clustered', 'bool', RO_RUNTIME),
        Field('health', 'enum sr_health', RO_RUNTIME),
    ),
    enums=(
        Enum('sr_health', ('healthy', 'recovering')),
    ),
)



C_probe_result = Class(
    'probe_result',
    read_roles=READ_ONLY,
    field_messages=False,
    fields=(
        Field('configuration', '(string -> string) map', RO_RUNTIME),
        Field('complete', 'bool', RO_RUNTIME),
        Field('sr', 'sr_stat record option', RO_RUNTIME),
        Field('extra_info', '(string -> string) map', RO_RUNTIME),
    ),
)



C_LVHD = Class(
    'LVHD',
    read_roles=READ_ONLY,
    implicit={
        'get_record': READ_ONLY,
        'get_by_uuid': READ_ONLY,
    },
    fields=(
        Field('uuid', 'string', RO_RUNTIME),
    ),
    messages=(
        Message('enable_thin_provisioning', (('host ref', 'host'), ('SR ref', 'SR'), ('int', 'initial_allocation'), ('int', 'allocation_quantum'), ), result='string', roles=POOL_ADMIN),
    ),
)



C_VDI = Class(
    'VDI',
    read_roles=READ_ONLY,
    implicit={
        'get_record': READ_ONLY,
        'get_by_uuid': READ_ONLY,
        'get_by_name_label': READ_ONLY,
        'get_all': READ_ONLY,
        'get_all_records': READ_ONLY,
        'create': VM_ADMIN,
        'destroy': VM_ADMIN,
    },
    fields=(
        Field('uuid', 'string', RO_RUNTIME),
        Field('name_label', 'string', RO_CONSTRUCTOR, default='""'),
        Field('name_description', 'string', RO_CONSTRUCTOR, default='""'),
        Field('allowed_operations', 'enum vdi_operations set', RO_RUNTIME, default='{}'),
        Field('current_operations', '(string -> enum vdi_operations) map', RO_RUNTIME, default='{}'),
        Field('SR', 'SR ref', RO_CONSTRUCTOR),
        Field('VBDs', 'VBD ref set', RO_RUNTIME),
        Field('crash_dumps', 'crashdump ref set', RO_RUNTIME),
        Field('virtual_size', 'int', RO_CONSTRUCTOR),
        Field('physical_utilisation', 'int', RO_RUNTIME),
        Field('type', 'enum vdi_type', RO_CONSTRUCTOR),
        Field('sharable', 'bool', RO_CONSTRUCTOR),
        Field('read_only', 'bool', RO_CONSTRUCTOR),
        Field('other_config', '(string -> string) map', RW, write_roles=VM_ADMIN),
        Field('storage_lock', 'bool', RO_RUNTIME),
        Field('location', 'string', RO_RUNTIME, default='""'),
        Field('managed', 'bool', RO_RUNTIME),
        Field('missing', 'bool', RO_RUNTIME),
        Field('parent', 'VDI ref', RO_RUNTIME, state=DEPRECATED),
        Field('xenstore_data', '(string -> string) map', RW, default='{}', write_roles=VM_ADMIN),
        Field('sm_config', '(string -> string) map', RW, default='{}', write_roles=VM_ADMIN),
        Field('is_a_snapshot', 'bool', RO_RUNTIME, default='false'),
        Field('snapshot_of', 'VDI ref', RO_RUNTIME, default='Null'),
        Field('snapshots', 'VDI ref set', RO_RUNTIME),
        Field('snapshot_time', 'datetime', RO_RUNTIME, default='19700101T00:00:00Z'),
        Field('tags', 'string set', RW, default='{}', write_roles=VM_OPERATOR),
        Field('allow_caching', 'bool', RO_RUNTIME, default='false'),
        Field('on_boot', 'enum on_boot', RO_RUNTIME, default='persist'),
        Field('metadata_of_pool', 'pool ref', RO_RUNTIME, default='OpaqueRef:NULL'),
        Field('metadata_latest', 'bool', RO_RUNTIME, default='false'),
        Field('is_tools_iso', 'bool', RO_RUNTIME, default='false'),
        Field('cbt_enabled', 'bool', RO_RUNTIME, default='false'),
    ),
    messages=(
        Message('get_nbd_info', (('VDI ref', 'self'), ), result='vdi_nbd_server_info record set', roles=VM_ADMIN, errors=('VDI_INCOMPATIBLE_TYPE', )),
        Message('list_changed_blocks', (('VDI ref', 'vdi_from'), ('VDI ref', 'vdi_to'), ), result='string', roles=VM_OPERATOR, errors=('SR_OPERATION_NOT_SUPPORTED', 'VDI_MISSING', 'SR_NOT_ATTACHED', 'SR_HAS_NO_PBDS', 'VDI_IN_USE', )),
        Message('data_destroy', (('VDI ref', 'self'), ), result='void', roles=VM_ADMIN, errors=('SR_OPERATION_NOT_SUPPORTED', 'VDI_MISSING', 'SR_NOT_ATTACHED', 'SR_HAS_NO_PBDS', 'OPERATION_NOT_ALLOWED', 'VDI_INCOMPATIBLE_TYPE', 'VDI_NO_CBT_METADATA', 'VDI_IN_USE', 'VDI_IS_A_PHYSICAL_DEVICE', )),
        Message('disable_cbt', (('VDI ref', 'self'), ), result='void', roles=VM_ADMIN, errors=('SR_OPERATION_NOT_SUPPORTED', 'VDI_MISSING', 'SR_NOT_ATTACHED', 'SR_HAS_NO_PBDS', 'OPERATION_NOT_ALLOWED', 'VDI_INCOMPATIBLE_TYPE', 'VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION', )),
        Message('enable_cbt', (('VDI ref', 'self'), ), result='void', roles=VM_ADMIN, errors=('SR_OPERATION_NOT_SUPPORTED', 'VDI_MISSING', 'SR_NOT_ATTACHED', 'SR_HAS_NO_PBDS', 'OPERATION_NOT_ALLOWED', 'VDI_INCOMPATIBLE_TYPE', 'VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION', )),
        Message('pool_migrate', (('VDI ref', 'vdi'), ('SR ref', 'sr'), ('(string -> string) map', 'options'), ), result='VDI ref', roles=VM_POWER_ADMIN),
        Message('read_database_pool_uuid', (('VDI ref', 'self'), ), result='string', roles=READ_ONLY),
        Message('open_database', (('VDI ref', 'self'), ), result='session ref', roles=POOL_OPERATOR),
        Message('set_allow_caching', (('VDI ref', 'self'), ('bool', 'value'), ), result='void', roles=VM_ADMIN),
        Message('set_on_boot', (('VDI ref', 'self'), ('enum on_boot', 'value'), ), result='void', roles=VM_ADMIN),
        Message('set_name_description', (('VDI ref', 'self'), ('string', 'value'), ), result='void', roles=VM_ADMIN),
        Message('set_name_label', (('VDI ref', 'self'), ('string', 'value'), ), result='void', roles=VM_ADMIN),
        Message('set_read_only', (('VDI ref', 'self'), ('bool', 'value'), ), result='void', roles=VM_ADMIN),
        Message('set_sharable', (('VDI ref', 'self'), ('bool', 'value'), ), result='void', roles=VM_ADMIN),
        Message('forget', (('VDI ref', 'vdi'), ), result='void', roles=VM_ADMIN),
        Message('copy', (('VDI ref', 'vdi'), ('SR ref', 'sr'), ('VDI ref', 'base_vdi'), ('VDI ref', 'into_vdi'), ), result='VDI ref', roles=VM_ADMIN, errors=('VDI_READONLY', 'VDI_TOO_SMALL', 'VDI_NOT_SPARSE', )),
        Message('update', (('VDI ref', 'vdi'), ), result='void', roles=VM_ADMIN, errors=('SR_OPERATION_NOT_SUPPORTED', )),
        Message('introduce', (('string', 'uuid'), ('string', 'name_label'), ('string', 'name_description'), ('SR ref', 'SR'), ('enum vdi_type', 'type'), ('bool', 'sharable'), ('bool', 'read_only'), ('(string -> string) map', 'other_config'), ('string', 'location'), ('(string -> string) map', 'xenstore_data'), ('(string -> string) map', 'sm_config'), ('bool', 'managed'), ('int', 'virtual_size'), ('int', 'physical_utilisation'), ('pool ref', 'metadata_of_pool'), ('bool', 'is_a_snapshot'), ('datetime', 'snapshot_time'), ('VDI ref', 'snapshot_of'), ), result='VDI ref', roles=VM_ADMIN, errors=('SR_OPERATION_NOT_SUPPORTED', )),
        Message('resize_online', (('VDI ref', 'vdi'), ('int', 'size'), ), result='void', roles=VM_ADMIN, state=REMOVED),
        Message('resize', (('VDI ref', 'vdi'), ('int', 'size'), ), result='void', roles=VM_ADMIN),
        Message('clone', (('VDI ref', 'vdi'), ('(string -> string) map', 'driver_params'), ), result='VDI ref', roles=VM_ADMIN),
        Message('snapshot', (('VDI ref', 'vdi'), ('(string -> string) map', 'driver_params'), ), result='VDI ref', roles=VM_ADMIN),
    ),
    enums=(
        Enum('vdi_operations', ('clone', 'copy', 'resize', 'resize_online', 'snapshot', 'mirror', 'destroy', 'forget', 'update', 'force_unlock', 'generate_config', 'enable_cbt', 'disable_cbt', 'data_destroy', 'list_changed_blocks', 'set_on_boot', 'blocked')),
        Enum('vdi_type', ('system', 'user', 'ephemeral', 'suspend', 'crashdump', 'ha_statefile', 'metadata', 'redo_log', 'rrd', 'pvs_cache', 'cbt_metadata')),
        Enum('on_boot', ('reset', 'persist')),
    ),
)



C_VBD = Class(
    'VBD',
    read_roles=READ_ONLY,
    implicit={
        'get_record': READ_ONLY,
        'get_by_uuid': READ_ONLY,
        'get_all': READ_ONLY,
        'get_all_records': READ_ONLY,
        'create': VM_ADMIN,
        'destroy': VM_ADMIN,
    },
    fields=(
        Field('uuid', 'string', RO_RUNTIME),
        Field('allowed_operations', 'enum vbd_operations set', RO_RUNTIME, default='{}'),
        Field('current_operations', '(string -> enum vbd_operations) map', RO_RUNTIME, default='{}'),
        Field('VM', 'VM ref', RO_CONSTRUCTOR),
        Field('VDI', 'VDI ref', RO_CONSTRUCTOR),
        Field('device', 'string', RO_CONSTRUCTOR, default='""'),
        Field('userdevice', 'string', RW, write_roles=VM_ADMIN),
        Field('bootable', 'bool', RW, write_roles=VM_ADMIN),
        Field('mode', 'enum vbd_mode', RO_CONSTRUCTOR),
        Field('type', 'enum vbd_type', RW, write_roles=VM_ADMIN),
        Field('unpluggable', 'bool', RW, default='true', write_roles=VM_ADMIN),
        Field('storage_lock', 'bool', RO_RUNTIME),
        Field('empty', 'bool', RO_CONSTRUCTOR),
        Field('other_config', '(string -> string) map', RW, write_roles=VM_ADMIN),
        Field('currently_attached', 'bool', RO_CONSTRUCTOR, default='false'),
        Field('status_code', 'int', RO_RUNTIME),
        Field('status_detail', 'string', RO_RUNTIME),
        Field('runtime_properties', '(string -> string) map', RO_RUNTIME),
        Field('qos_algorithm_type', 'string', RW, write_roles=VM_ADMIN),
        Field('qos_algorithm_params', '(string -> string) map', RW, write_roles=VM_ADMIN),
        Field('qos_supported_algorithms', 'string set', RO_RUNTIME),
        Field('metrics', 'VBD_metrics ref', RO_RUNTIME, default='OpaqueRef:NULL', state=REMOVED),
    ),
    messages=(
        Message('set_mode', (('VBD ref', 'self'), ('enum vbd_mode', 'value'), ), result='void', roles=VM_ADMIN),
        Message('assert_attachable', (('VBD ref', 'self'), ), result='void', roles=VM_ADMIN),
        Message('unplug_force', (('VBD ref', 'self'), ), result='void', roles=VM_ADMIN),
        Message('unplug', (('VBD ref', 'self'), ), result='void', roles=VM_ADMIN, errors=('DEVICE_DETACH_REJECTED', 'DEVICE_ALREADY_DETACHED', )),
        Message('plug', (('VBD ref', 'self'), ), result='void', roles=VM_ADMIN),
        Message('insert', (('VBD ref', 'vbd'), ('VDI ref', 'vdi'), ), result='void', roles=VM_OPERATOR, errors=('VBD_NOT_REMOVABLE_MEDIA', 'VBD_NOT_EMPTY', )),
        Message('eject', (('VBD ref', 'vbd'), ), result='void', roles=VM_OPERATOR, errors=('VBD_NOT_REMOVABLE_MEDIA', 'VBD_IS_EMPTY', )),
    ),
    enums=(
        Enum('vbd_operations', ('attach', 'eject', 'insert', 'plug', 'unplug', 'unplug_force', 'pause', 'unpause')),
        Enum('vbd_type', ('CD', 'Disk', 'Floppy')),
        Enum('vbd_mode', ('RO', 'RW')),
    ),
)



C_VBD_metrics = Class(
    'VBD_metrics',
    state=REMOVED,
    read_roles=READ_ONLY,
    implicit={
        'get_record': (READ_ONLY, REMOVED),
        'get_by_uuid': (READ_ONLY, REMOVED),
        'get_all': (READ_ONLY, REMOVED),
        'get_all_records': (READ_ONLY, REMOVED),
    },
    fields=(
        Field('uuid', 'string', RO_RUNTIME),
        Field('io_read_kbs', 'float', RO_RUNTIME, default='0.', state=REMOVED),
        Field('io_write_kbs', 'float', RO_RUNTIME, default='0.', state=REMOVED),
        Field('last_updated', 'datetime', RO_RUNTIME, default='19700101T00:00:00Z', state=REMOVED),
        Field('other_config', '(string -> string) map', RW, default='{}', write_roles=VM_ADMIN, state=REMOVED),
    ),
)



C_PBD = Class(
    'PBD',
    read_roles=READ_ONLY,
    implicit={
        'get_record': READ_ONLY,
        'get_by_uuid': READ_ONLY,
        'get_all': READ_ONLY,
        'get_all_records': READ_ONLY,
        'create': POOL_OPERATOR,
        'destroy': POOL_OPERATOR,
    },
    fields=(
        Field('uuid', 'string', RO_RUNTIME),
        Field('host', 'host ref', RO_CONSTRUCTOR),
        Field('SR', 'SR ref', RO_CONSTRUCTOR),
        Field('device_config', '(string -> string) map', RO_CONSTRUCTOR),
        Field('currently_attached', 'bool', RO_RUNTIME),
        Field('other_config', '(string -> string) map', RW, default='{}', write_roles=POOL_OPERATOR),
    ),
    messages=(
        Message('set_device_config', (('PBD ref', 'self'), ('(string -> string) map', 'value'), ), result='void', roles=POOL_OPERATOR),
        Message('unplug', (('PBD ref', 'self'), ), result='void', roles=POOL_OPERATOR),
        Message('plug', (('PBD ref', 'self'), ), result='void', roles=POOL_OPERATOR, errors=('SR_UNKNOWN_DRIVER', )),
    ),
)



C_vdi_nbd_server_info = Class(
    'vdi_nbd_server_info',
    read_roles=READ_ONLY,
    field_messages=False,
    fields=(
        Field('exportname', 'string', RO_RUNTIME),
        Field('address', 'string', RO_RUNTIME),
        Field('port', 'int', RO_RUNTIME),
        Field('cert', 'string', RO_RUNTIME),
        Field('subject', 'string', RO_RUNTIME),
    ),
)



CLASSES = (C_SM, C_SR, C_sr_stat, C_probe_result, C_LVHD, C_VDI, C_VBD, C_VBD_metrics, C_PBD, C_vdi_nbd_server_info, )
