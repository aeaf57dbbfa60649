"""
txxapi's datamodel: the single statement of the XenAPI interface that
records, implicit messages, dispatch, type checks, RBAC and the database
schema are derived from.  ``MODEL`` is the bound, ready-to-use whole.
"""

from txxapi.datamodel.model import (
    devices, network, pool, session, storage, task, vm)
from txxapi.datamodel.model.errors import ERRORS
from txxapi.datamodel.model.extra import (
    HIDDEN_MESSAGES, INTERNAL_FIELDS, PARAM_DEFAULTS)
from txxapi.datamodel.model.relations import RELATIONS
from txxapi.datamodel.schema import Model

_FAMILIES = (session, task, pool, vm, network, storage, devices)

MODEL = Model(
    [c for family in _FAMILIES for c in family.CLASSES],
    ERRORS,
    relations=RELATIONS,
    param_defaults=PARAM_DEFAULTS,
    hidden=HIDDEN_MESSAGES,
    internal_fields=INTERNAL_FIELDS,
)
