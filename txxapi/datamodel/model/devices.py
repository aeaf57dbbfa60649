"""
XenAPI classes of the devices family, stated as facts: names, types,
qualifiers, defaults, roles, errors and lifecycle.  Written by
tools/gen_datamodel.py; edit that script, not this file, for bulk changes.
"""

from txxapi.datamodel.schema import (  # noqa: F401
    Class, Enum, Field, Message, RW, RO_CONSTRUCTOR, RO_RUNTIME,
    PROTOTYPED, DEPRECATED, REMOVED)
from txxapi.datamodel.roles import (  # noqa: F401
    NOBODY, POOL_ADMIN, POOL_OPERATOR, POOL_OPERATOR_CC, VM_POWER_ADMIN,
    VM_POWER_ADMIN_CC, VM_ADMIN, VM_OPERATOR, VM_OPERATOR_CC, READ_ONLY)

C_PCI = Class(
    'PCI',
    read_roles=READ_ONLY,
    implicit={
        'get_record': READ_ONLY,
        'get_by_uuid': READ_ONLY,
        'get_all': READ_ONLY,
        'get_all_records': READ_ONLY,
    },
    fields=(
        Field('uuid', 'string', RO_RUNTIME),
        Field('class_name', 'string', RO_CONSTRUCTOR, default='""'),
        Field('vendor_name', 'string', RO_CONSTRUCTOR, default='""'),
        Field('device_name', 'string', RO_CONSTRUCTOR, default='""'),
        Field('host', 'host ref', RO_CONSTRUCTOR, default='OpaqueRef:NULL'),
        Field('pci_id', 'string', RO_CONSTRUCTOR, default='""'),
        Field('dependencies', 'PCI ref set', RO_RUNTIME),
        Field('other_config', '(string -> string) map', RW, default='{}', write_roles=POOL_OPERATOR),
        Field('subsystem_vendor_name', 'string', RO_CONSTRUCTOR, default='""'),
        Field('subsystem_device_name', 'string', RO_CONSTRUCTOR, default='""'),
        Field('driver_name', 'string', RO_CONSTRUCTOR, default='""'),
    ),
)



C_PGPU = Class(
    'PGPU',
    read_roles=READ_ONLY,
    implicit={
        'get_record': READ_ONLY,
        'get_by_uuid': READ_ONLY,
        'get_all': READ_ONLY,
        'get_all_records': READ_ONLY,
    },
    fields=(
        Field('uuid', 'string', RO_RUNTIME),
        Field('PCI', 'PCI ref', RO_CONSTRUCTOR, default='OpaqueRef:NULL'),
        Field('GPU_group', 'GPU_group ref', RO_CONSTRUCTOR, default='OpaqueRef:NULL'),
        Field('host', 'host ref', RO_RUNTIME, default='OpaqueRef:NULL'),
        Field('other_config', '(string -> string) map', RW, default='{}', write_roles=POOL_OPERATOR),
        Field('supported_VGPU_types', 'VGPU_type ref set', RO_RUNTIME),
        Field('enabled_VGPU_types', 'VGPU_type ref set', RO_RUNTIME),
        Field('resident_VGPUs', 'VGPU ref set', RO_RUNTIME),
        Field('supported_VGPU_max_capacities', '(VGPU_type ref -> int) map', RO_RUNTIME, default='{}'),
        Field('dom0_access', 'enum pgpu_dom0_access', RO_RUNTIME, default='enabled'),
        Field('is_system_display_device', 'bool', RO_RUNTIME, default='false'),
        Field('compatibility_metadata', '(string -> string) map', RO_RUNTIME, default='{}'),
    ),
    messages=(
        Message('disable_dom0_access', (('PGPU ref', 'self'), ), result='enum pgpu_dom0_access', roles=POOL_OPERATOR),
        Message('enable_dom0_access', (('PGPU ref', 'self'), ), result='enum pgpu_dom0_access', roles=POOL_OPERATOR),
        Message('get_remaining_capacity', (('PGPU ref', 'self'), ('VGPU_type ref', 'vgpu_type'), ), result='int', roles=READ_ONLY),
        Message('set_GPU_group', (('PGPU ref', 'self'), ('GPU_group ref', 'value'), ), result='void', roles=POOL_OPERATOR),
        Message('set_enabled_VGPU_types', (('PGPU ref', 'self'), ('VGPU_type ref set', 'value'), ), result='void', roles=POOL_OPERATOR),
        Message('remove_enabled_VGPU_types', (('PGPU ref', 'self'), ('VGPU_type ref', 'value'), ), result='void', roles=POOL_OPERATOR),
        Message('add_enabled_VGPU_types', (('PGPU ref', 'self'), ('VGPU_type ref', 'value'), ), result='void', roles=POOL_OPERATOR),
    ),
    enums=(
        Enum('pgpu_dom0_access', ('enabled', 'disable_on_reboot', 'disabled', 'enable_on_reboot')),
    ),
)



C_GPU_group = Class(
    'GPU_group',
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
        Field('name_label', 'string', RW, default='""', write_roles=POOL_OPERATOR),
        Field('name_description', 'string', RW, default='""', write_roles=POOL_OPERATOR),
        Field('PGPUs', 'PGPU ref set', RO_RUNTIME),
        Field('VGPUs', 'VGPU ref set', RO_RUNTIME),
        Field('GPU_types', 'string set', RO_RUNTIME, default='{}'),
        Field('other_config', '(string -> string) map', RW, default='{}', write_roles=POOL_OPERATOR),
        Field('allocation_algorithm', 'enum allocation_algorithm', RW, default='depth_first', write_roles=POOL_OPERATOR),
        Field('supported_VGPU_types', 'VGPU_type ref set', RO_RUNTIME),
        Field('enabled_VGPU_types', 'VGPU_type ref set', RO_RUNTIME),
    ),
    messages=(
        Message('get_remaining_capacity', (('GPU_group ref', 'self'), ('VGPU_type ref', 'vgpu_type'), ), result='int', roles=READ_ONLY),
        Message('destroy', (('GPU_group ref', 'self'), ), result='void', roles=POOL_OPERATOR),
        Message('create', (('string', 'name_label'), ('string', 'name_description'), ('(string -> string) map', 'other_config'), ), result='GPU_group ref', roles=POOL_OPERATOR),
    ),
    enums=(
        Enum('allocation_algorithm', ('breadth_first', 'depth_first')),
    ),
)



C_VGPU = Class(
    'VGPU',
    read_roles=READ_ONLY,
    implicit={
        'get_record': READ_ONLY,
        'get_by_uuid': READ_ONLY,
        'get_all': READ_ONLY,
        'get_all_records': READ_ONLY,
    },
    fields=(
        Field('uuid', 'string', RO_RUNTIME),
        Field('VM', 'VM ref', RO_RUNTIME),
        Field('GPU_group', 'GPU_group ref', RO_RUNTIME),
        Field('device', 'string', RO_RUNTIME, default='"0"'),
        Field('currently_attached', 'bool', RO_RUNTIME, default='false'),
        Field('other_config', '(string -> string) map', RW, default='{}', write_roles=POOL_OPERATOR),
        Field('type', 'VGPU_type ref', RO_RUNTIME, default='OpaqueRef:NULL'),
        Field('resident_on', 'PGPU ref', RO_RUNTIME, default='OpaqueRef:NULL'),
        Field('scheduled_to_be_resident_on', 'PGPU ref', RO_RUNTIME, default='OpaqueRef:NULL'),
        Field('compatibility_metadata', '(string -> string) map', RO_RUNTIME, default='{}'),
        Field('extra_args', 'string', RW, default='""', write_roles=POOL_OPERATOR),
        Field('PCI', 'PCI ref', RO_RUNTIME, default='OpaqueRef:NULL'),
    ),
    messages=(
        Message('destroy', (('VGPU ref', 'self'), ), result='void', roles=POOL_OPERATOR),
        Message('create', (('VM ref', 'VM'), ('GPU_group ref', 'GPU_group'), ('string', 'device'), ('(string -> string) map', 'other_config'), ('VGPU_type ref', 'type'), ), result='VGPU ref', roles=POOL_OPERATOR),
    ),
)



C_VGPU_type = Class(
    'VGPU_type',
    read_roles=READ_ONLY,
    implicit={
        'get_record': READ_ONLY,
        'get_by_uuid': READ_ONLY,
        'get_all': READ_ONLY,
        'get_all_records': READ_ONLY,
    },
    fields=(
        Field('uuid', 'string', RO_RUNTIME),
        Field('vendor_name', 'string', RO_CONSTRUCTOR, default='""'),
        Field('model_name', 'string', RO_CONSTRUCTOR, default='""'),
        Field('framebuffer_size', 'int', RO_CONSTRUCTOR, default='0'),
        Field('max_heads', 'int', RO_CONSTRUCTOR, default='0'),
        Field('max_resolution_x', 'int', RO_CONSTRUCTOR, default='0'),
        Field('max_resolution_y', 'int', RO_CONSTRUCTOR, default='0'),
        Field('supported_on_PGPUs', 'PGPU ref set', RO_RUNTIME),
        Field('enabled_on_PGPUs', 'PGPU ref set', RO_RUNTIME),
        Field('VGPUs', 'VGPU ref set', RO_RUNTIME),
        Field('supported_on_GPU_groups', 'GPU_group ref set', RO_RUNTIME),
        Field('enabled_on_GPU_groups', 'GPU_group ref set', RO_RUNTIME),
        Field('implementation', 'enum vgpu_type_implementation', RO_CONSTRUCTOR, default='passthrough'),
        Field('identifier', 'string', RO_CONSTRUCTOR, default='""'),
        Field('experimental', 'bool', RO_CONSTRUCTOR, default='false'),
        Field('compatible_types_in_vm', 'VGPU_type ref set', RO_RUNTIME, default='{}'),
    ),
    enums=(
        Enum('vgpu_type_implementation', ('passthrough', 'nvidia', 'nvidia_sriov', 'gvt_g', 'mxgpu')),
    ),
)



C_PUSB = Class(
    'PUSB',
    read_roles=READ_ONLY,
    implicit={
        'get_record': READ_ONLY,
        'get_by_uuid': READ_ONLY,
        'get_all': READ_ONLY,
        'get_all_records': READ_ONLY,
    },
    fields=(
        Field('uuid', 'string', RO_RUNTIME),
        Field('USB_group', 'USB_group ref', RO_CONSTRUCTOR, default='OpaqueRef:NULL'),
        Field('host', 'host ref', RO_CONSTRUCTOR, default='OpaqueRef:NULL'),
        Field('path', 'string', RO_CONSTRUCTOR, default='""'),
        Field('vendor_id', 'string', RO_CONSTRUCTOR, default='""'),
        Field('vendor_desc', 'string', RO_CONSTRUCTOR, default='""'),
        Field('product_id', 'string', RO_CONSTRUCTOR, default='""'),
        Field('product_desc', 'string', RO_CONSTRUCTOR, default='""'),
        Field('serial', 'string', RO_CONSTRUCTOR, default='""'),
        Field('version', 'string', RO_CONSTRUCTOR, default='""'),
        Field('description', 'string', RO_CONSTRUCTOR, default='""'),
        Field('passthrough_enabled', 'bool', RO_RUNTIME, default='false'),
        Field('other_config', '(string -> string) map', RW, default='{}', write_roles=POOL_ADMIN),
        Field('speed', 'float', RO_CONSTRUCTOR, default='-1.'),
    ),
    messages=(
        Message('set_passthrough_enabled', (('PUSB ref', 'self'), ('bool', 'value'), ), result='void', roles=POOL_ADMIN),
        Message('scan', (('host ref', 'host'), ), result='void', roles=POOL_ADMIN),
    ),
)



C_USB_group = Class(
    'USB_group',
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
        Field('name_label', 'string', RW, default='""', write_roles=POOL_ADMIN),
        Field('name_description', 'string', RW, default='""', write_roles=POOL_ADMIN),
        Field('PUSBs', 'PUSB ref set', RO_RUNTIME),
        Field('VUSBs', 'VUSB ref set', RO_RUNTIME),
        Field('other_config', '(string -> string) map', RW, default='{}', write_roles=POOL_ADMIN),
    ),
    messages=(
        Message('destroy', (('USB_group ref', 'self'), ), result='void', roles=POOL_ADMIN),
        Message('create', (('string', 'name_label'), ('string', 'name_description'), ('(string -> string) map', 'other_config'), ), result='USB_group ref', roles=POOL_ADMIN),
    ),
)



C_VUSB = Class(
    'VUSB',
    read_roles=READ_ONLY,
    implicit={
        'get_record': READ_ONLY,
        'get_by_uuid': READ_ONLY,
        'get_all': READ_ONLY,
        'get_all_records': READ_ONLY,
    },
    fields=(
        Field('uuid', 'string', RO_RUNTIME),
        Field('allowed_operations', 'enum vusb_operations set', RO_RUNTIME, default='{}'),
        Field('current_operations', '(string -> enum vusb_operations) map', RO_RUNTIME, default='{}'),
        Field('VM', 'VM ref', RO_RUNTIME),
        Field('USB_group', 'USB_group ref', RO_RUNTIME),
        Field('other_config', '(string -> string) map', RW, default='{}', write_roles=POOL_ADMIN),
        Field('currently_attached', 'bool', RO_RUNTIME, default='false'),
    ),
    messages=(
        Message('destroy', (('VUSB ref', 'self'), ), result='void', roles=POOL_ADMIN),
        Message('unplug', (('VUSB ref', 'self'), ), result='void', roles=POOL_ADMIN),
        Message('create', (('VM ref', 'VM'), ('USB_group ref', 'USB_group'), ('(string -> string) map', 'other_config'), ), result='VUSB ref', roles=POOL_ADMIN),
    ),
    enums=(
        Enum('vusb_operations', ('attach', 'plug', 'unplug')),
    ),
)



CLASSES = (C_PCI, C_PGPU, C_GPU_group, C_VGPU, C_VGPU_type, C_PUSB, C_USB_group, C_VUSB, )
