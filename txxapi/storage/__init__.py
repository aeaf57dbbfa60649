"""
The toolstack side of storage (XAPI's storage_access): SRs, PBDs, VDIs and
SM records kept in step with the txstorage drivers, and the small API the
rest of the toolstack uses for disks (VM lifecycle, HTTP data paths).
The component is ``Storage`` (storage.component); the names below are
what the implementations use.
"""

from txxapi.storage.common import (CLAIMS, data_path_users,  # noqa: F401
                                   register_rules, sm_features, translate,
                                   xapi_error)
from txxapi.storage.component import Storage  # noqa: F401
