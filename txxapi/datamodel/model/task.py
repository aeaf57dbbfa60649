"""
XenAPI classes of the task family, stated as facts: names, types,
qualifiers, defaults, roles, errors and lifecycle.  Written by
tools/gen_datamodel.py; edit that script, not this file, for bulk changes.
"""

from txxapi.datamodel.schema import (  # noqa: F401
    Class, Enum, Field, Message, RW, RO_CONSTRUCTOR, RO_RUNTIME,
    PROTOTYPED, DEPRECATED, REMOVED)
from txxapi.datamodel.roles import (  # noqa: F401
    NOBODY, POOL_ADMIN, POOL_OPERATOR, POOL_OPERATOR_CC, VM_POWER_ADMIN,
    VM_POWER_ADMIN_CC, VM_ADMIN, VM_OPERATOR, VM_OPERATOR_CC, READ_ONLY)

C_task = Class(
    'task',
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
        Field('allowed_operations', 'enum task_allowed_operations set', RO_RUNTIME, default='{}'),
        Field('current_operations', '(string -> enum task_allowed_operations) map', RO_RUNTIME, default='{}'),
        Field('created', 'datetime', RO_RUNTIME),
        Field('finished', 'datetime', RO_RUNTIME),
        Field('status', 'enum task_status_type', RO_RUNTIME),
        Field('resident_on', 'host ref', RO_RUNTIME),
        Field('progress', 'float', RO_RUNTIME),
        Field('type', 'string', RO_RUNTIME),
        Field('result', 'string', RO_RUNTIME),
        Field('error_info', 'string set', RO_RUNTIME),
        Field('other_config', '(string -> string) map', RW, default='{}', write_roles=POOL_OPERATOR),
        Field('subtask_of', 'task ref', RO_RUNTIME, default='Null'),
        Field('subtasks', 'task ref set', RO_RUNTIME),
        Field('backtrace', 'string', RO_RUNTIME, default='"()"'),
    ),
    messages=(
        Message('set_error_info', (('task ref', 'self'), ('string set', 'value'), ), result='void', roles=READ_ONLY),
        Message('set_result', (('task ref', 'self'), ('string', 'value'), ), result='void', roles=READ_ONLY),
        Message('set_progress', (('task ref', 'self'), ('float', 'value'), ), result='void', roles=READ_ONLY),
        Message('set_status', (('task ref', 'self'), ('enum task_status_type', 'value'), ), result='void', roles=READ_ONLY),
        Message('cancel', (('task ref', 'task'), ), result='void', roles=READ_ONLY, errors=('OPERATION_NOT_ALLOWED', )),
        Message('destroy', (('task ref', 'self'), ), result='void', roles=READ_ONLY),
        Message('create', (('string', 'label'), ('string', 'description'), ), result='task ref', roles=READ_ONLY),
    ),
    enums=(
        Enum('task_allowed_operations', ('cancel', 'destroy')),
        Enum('task_status_type', ('pending', 'success', 'failure', 'cancelling', 'cancelled')),
    ),
)



C_event = Class(
    'event',
    read_roles=READ_ONLY,
    field_messages=False,
    fields=(
        Field('snapshot', '<class> record', RO_RUNTIME),
        Field('id', 'int', RO_CONSTRUCTOR),
        Field('timestamp', 'datetime', RO_CONSTRUCTOR, state=DEPRECATED),
        Field('class', 'string', RO_CONSTRUCTOR),
        Field('operation', 'enum event_operation', RO_CONSTRUCTOR),
        Field('ref', 'string', RO_CONSTRUCTOR),
        Field('obj_uuid', 'string', RO_CONSTRUCTOR, state=DEPRECATED),
    ),
    messages=(
        Message('inject', (('string', 'class'), ('string', 'ref'), ), result='string', roles=READ_ONLY),
        Message('get_current_id', (), result='int', roles=READ_ONLY),
        Message('from', (('string set', 'classes'), ('string', 'token'), ('float', 'timeout'), ), result='an event batch', roles=READ_ONLY, errors=('SESSION_NOT_REGISTERED', 'EVENTS_LOST', )),
        Message('next', (), result='event record set', roles=READ_ONLY, errors=('SESSION_NOT_REGISTERED', 'EVENTS_LOST', ), state=DEPRECATED),
        Message('unregister', (('string set', 'classes'), ), result='void', roles=READ_ONLY, state=DEPRECATED),
        Message('register', (('string set', 'classes'), ), result='void', roles=READ_ONLY, state=DEPRECATED),
    ),
    enums=(
        Enum('event_operation', ('add', 'del', 'mod')),
    ),
)



C_message = Class(
    'message',
    read_roles=READ_ONLY,
    field_messages=False,
    fields=(
        Field('uuid', 'string', RO_RUNTIME),
        Field('name', 'string', RO_RUNTIME),
        Field('priority', 'int', RO_RUNTIME),
        Field('cls', 'enum cls', RO_RUNTIME),
        Field('obj_uuid', 'string', RO_RUNTIME),
        Field('timestamp', 'datetime', RO_RUNTIME),
        Field('body', 'string', RO_RUNTIME),
    ),
    messages=(
        Message('get_all_records_where', (('string', 'expr'), ), result='(message ref -> message record) map', roles=READ_ONLY),
        Message('get_all_records', (), result='(message ref -> message record) map', roles=READ_ONLY),
        Message('get_by_uuid', (('string', 'uuid'), ), result='message ref', roles=READ_ONLY),
        Message('get_record', (('message ref', 'self'), ), result='message record', roles=READ_ONLY),
        Message('get_since', (('datetime', 'since'), ), result='(message ref -> message record) map', roles=READ_ONLY),
        Message('get_all', (), result='message ref set', roles=READ_ONLY),
        Message('get', (('enum cls', 'cls'), ('string', 'obj_uuid'), ('datetime', 'since'), ), result='(message ref -> message record) map', roles=READ_ONLY),
        Message('destroy_many', (('message ref set', 'messages'), ), result='void', roles=POOL_OPERATOR, state=PROTOTYPED),
        Message('destroy', (('message ref', 'self'), ), result='void', roles=POOL_OPERATOR),
        Message('create', (('string', 'name'), ('int', 'priority'), ('enum cls', 'cls'), ('string', 'obj_uuid'), ('string', 'body'), ), result='message ref', roles=POOL_OPERATOR),
    ),
    enums=(
        Enum('cls', ('VM', 'Host', 'SR', 'Pool', 'VMPP', 'VMSS', 'PVS_proxy', 'VDI', 'Certificate')),
    ),
)



C_blob = Class(
    'blob',
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
        Field('size', 'int', RO_RUNTIME),
        Field('public', 'bool', RW, default='false', write_roles=POOL_OPERATOR),
        Field('last_updated', 'datetime', RO_CONSTRUCTOR),
        Field('mime_type', 'string', RO_CONSTRUCTOR),
    ),
    messages=(
        Message('destroy', (('blob ref', 'self'), ), result='void', roles=POOL_OPERATOR),
        Message('create', (('string', 'mime_type'), ('bool', 'public'), ), result='blob ref', roles=POOL_OPERATOR),
    ),
)



C_data_source = Class(
    'data_source',
    read_roles=READ_ONLY,
    field_messages=False,
    fields=(
        Field('name_label', 'string', RO_RUNTIME, default='""'),
        Field('name_description', 'string', RO_RUNTIME, default='""'),
        Field('enabled', 'bool', RO_RUNTIME),
        Field('standard', 'bool', RO_RUNTIME),
        Field('units', 'string', RO_RUNTIME),
        Field('min', 'float', RO_RUNTIME),
        Field('max', 'float', RO_RUNTIME),
        Field('value', 'float', RO_RUNTIME),
    ),
)



CLASSES = (C_task, C_event, C_message, C_blob, C_data_source, )
