"""The ``xapi`` twistd plugin: ``twistd -n xapi --help``."""

from twisted.application.service import ServiceMaker

xapi = ServiceMaker(
    "txxapi",
    "txxapi.tap",
    "XenAPI toolstack daemon (XAPI on Twisted)",
    "xapi",
)
