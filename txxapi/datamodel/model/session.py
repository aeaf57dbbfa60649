"""
XenAPI classes of the session family, stated as facts: names, types,
qualifiers, defaults, roles, errors and lifecycle.  Written by
tools/gen_datamodel.py; edit that script, not this file, for bulk changes.
"""

from txxapi.datamodel.schema import (  # noqa: F401
    Class, Enum, Field, Message, RW, RO_CONSTRUCTOR, RO_RUNTIME,
    PROTOTYPED, DEPRECATED, REMOVED)
from txxapi.datamodel.roles import (  # noqa: F401
    NOBODY, POOL_ADMIN, POOL_OPERATOR, POOL_OPERATOR_CC, VM_POWER_ADMIN,
    VM_POWER_ADMIN_CC, VM_ADMIN, VM_OPERATOR, VM_OPERATOR_CC, READ_ONLY)

C_session = Class(
    'session',
    read_roles=READ_ONLY,
    implicit={
        'get_record': READ_ONLY,
        'get_by_uuid': READ_ONLY,
    },
    fields=(
        Field('uuid', 'string', RO_RUNTIME),
        Field('this_host', 'host ref', RO_RUNTIME),
        Field('this_user', 'user ref', RO_RUNTIME),
        Field('last_active', 'datetime', RO_RUNTIME),
        Field('pool', 'bool', RO_RUNTIME),
        Field('other_config', '(string -> string) map', RW, default='{}', write_roles=POOL_ADMIN),
        Field('is_local_superuser', 'bool', RO_RUNTIME, default='false'),
        Field('subject', 'subject ref', RO_RUNTIME, default='OpaqueRef:NULL'),
        Field('validation_time', 'datetime', RO_RUNTIME, default='19700101T00:00:00Z'),
        Field('auth_user_sid', 'string', RO_RUNTIME, default='""'),
        Field('auth_user_name', 'string', RO_RUNTIME, default='""'),
        Field('rbac_permissions', 'string set', RO_CONSTRUCTOR, default='{}'),
        Field('tasks', 'task ref set', RO_RUNTIME),
        Field('parent', 'session ref', RO_CONSTRUCTOR, default='OpaqueRef:NULL'),
        Field('originator', 'string', RO_RUNTIME, default='""'),
        Field('client_certificate', 'bool', RO_RUNTIME, default='false'),
    ),
    messages=(
        Message('logout_subject_identifier', (('string', 'subject_identifier'), ), result='void', roles=POOL_OPERATOR),
        Message('get_all_subject_identifiers', (), result='string set', roles=READ_ONLY),
        Message('local_logout', (), result='void', roles=POOL_ADMIN),
        Message('create_from_db_file', (('string', 'filename'), ), result='session ref', roles=NOBODY),
        Message('slave_local_login_with_password', (('string', 'uname'), ('string', 'pwd'), ), result='session ref', roles=POOL_ADMIN, session=False),
        Message('change_password', (('string', 'old_pwd'), ('string', 'new_pwd'), ), result='void', roles=NOBODY),
        Message('logout', (), result='void', roles=READ_ONLY),
        Message('login_with_password', (('string', 'uname'), ('string', 'pwd'), ('string', 'version'), ('string', 'originator'), ), result='session ref', roles=READ_ONLY, errors=('SESSION_AUTHENTICATION_FAILED', 'HOST_IS_SLAVE', ), session=False),
    ),
)



C_auth = Class(
    'auth',
    read_roles=READ_ONLY,
    fields=(
    ),
    messages=(
        Message('get_group_membership', (('string', 'subject_identifier'), ), result='string set', roles=READ_ONLY),
        Message('get_subject_information_from_identifier', (('string', 'subject_identifier'), ), result='(string -> string) map', roles=READ_ONLY),
        Message('get_subject_identifier', (('string', 'subject_name'), ), result='string', roles=READ_ONLY),
    ),
)



C_subject = Class(
    'subject',
    read_roles=READ_ONLY,
    implicit={
        'get_record': READ_ONLY,
        'get_by_uuid': READ_ONLY,
        'get_all': READ_ONLY,
        'get_all_records': READ_ONLY,
        'create': POOL_ADMIN,
        'destroy': POOL_ADMIN,
    },
    fields=(
        Field('uuid', 'string', RO_RUNTIME),
        Field('subject_identifier', 'string', RO_CONSTRUCTOR, default='""'),
        Field('other_config', '(string -> string) map', RO_CONSTRUCTOR, default='{}'),
        Field('roles', 'role ref set', RO_RUNTIME, default='{OpaqueRef:0165f154-ba3e-034e-6b27-5d271af109ba}'),
    ),
    messages=(
        Message('get_permissions_name_label', (('subject ref', 'self'), ), result='string set', roles=READ_ONLY),
        Message('remove_from_roles', (('subject ref', 'self'), ('role ref', 'role'), ), result='void', roles=POOL_ADMIN),
        Message('add_to_roles', (('subject ref', 'self'), ('role ref', 'role'), ), result='void', roles=POOL_ADMIN),
    ),
)



C_role = Class(
    'role',
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
        Field('subroles', 'role ref set', RO_CONSTRUCTOR, default='{}'),
        Field('is_internal', 'bool', RO_RUNTIME, default='false'),
    ),
    messages=(
        Message('get_by_permission_name_label', (('string', 'label'), ), result='role ref set', roles=READ_ONLY),
        Message('get_by_permission', (('role ref', 'permission'), ), result='role ref set', roles=READ_ONLY),
        Message('get_permissions_name_label', (('role ref', 'self'), ), result='string set', roles=READ_ONLY),
        Message('get_permissions', (('role ref', 'self'), ), result='role ref set', roles=READ_ONLY),
    ),
)



C_user = Class(
    'user',
    state=DEPRECATED,
    read_roles=READ_ONLY,
    implicit={
        'get_record': (READ_ONLY, DEPRECATED),
        'get_by_uuid': (READ_ONLY, DEPRECATED),
        'create': (POOL_ADMIN, DEPRECATED),
        'destroy': (POOL_ADMIN, DEPRECATED),
    },
    fields=(
        Field('uuid', 'string', RO_RUNTIME),
        Field('short_name', 'string', RO_CONSTRUCTOR),
        Field('fullname', 'string', RW, write_roles=POOL_ADMIN),
        Field('other_config', '(string -> string) map', RW, default='{}', write_roles=POOL_ADMIN),
    ),
)



C_secret = Class(
    'secret',
    read_roles=POOL_OPERATOR,
    implicit={
        'get_record': POOL_OPERATOR,
        'get_by_uuid': POOL_OPERATOR,
        'get_all': POOL_OPERATOR,
        'get_all_records': POOL_OPERATOR,
        'create': POOL_OPERATOR,
        'destroy': POOL_OPERATOR,
    },
    fields=(
        Field('uuid', 'string', RO_RUNTIME),
        Field('value', 'string', RW, write_roles=POOL_OPERATOR),
        Field('other_config', '(string -> string) map', RW, default='{}', read_roles=READ_ONLY, write_roles=POOL_OPERATOR),
    ),
)



CLASSES = (C_session, C_auth, C_subject, C_role, C_user, C_secret, )
