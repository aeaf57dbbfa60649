"""
Implementations of explicit messages, one module per class family.  Each
registers plain functions with ``@implements("Class.message")``; importing
this package registers them all.  ``VM.start`` lives in ``impl/vm.py``.
"""

from txxapi.impl import event, host, message, session, task  # noqa: F401
from txxapi.impl import vbd, vif, vm, vm_config, vm_copy  # noqa: F401
from txxapi.impl import sr, vdi, pool, access, network, ha  # noqa: F401
from txxapi.impl import host_power, pool_sync, pool_transition  # noqa: F401
from txxapi.migration import evacuation, sender, storage_motion  # noqa: F401
from txxapi.metrics import api as metrics_api  # noqa: F401
from txxapi.xva import url_import  # noqa: F401
from txxapi.network import pif  # noqa: F401
from txxapi.redirect import calls as redirect_calls  # noqa: F401
