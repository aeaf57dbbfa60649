"""
What every backend checks of a VMSpec before building a domain, and how a
VBD's userdevice becomes the device name the guest sees.
"""

from txxenops.errors import InvalidSpec


def disk_device_name(domain_type, userdevice):
    """The device a VBD appears as: HVM guests see the first four as IDE
    (hda..hdd), everything else is xvd*, lettered like Linux does."""
    n = int(userdevice)
    if domain_type == "hvm" and n < 4:
        return "hd" + "abcd"[n]
    letters = ""
    n += 1
    while n:
        n, r = divmod(n - 1, 26)
        letters = chr(ord("a") + r) + letters
    return "xvd" + letters


def check_spec(spec):
    """InvalidSpec unless the spec's memory, vCPUs and devices are
    consistent (what is buildable is each backend's own check)."""
    def bad(reason):
        raise InvalidSpec(spec.uuid, reason)
    if spec.memory_static_max <= 0:
        bad("memory_static_max must be positive")
    if not (0 < spec.dynamic_min <= spec.dynamic_max
            <= spec.memory_static_max):
        bad("need 0 < dynamic_min <= dynamic_max <= static_max")
    if not spec.dynamic_min <= spec.target <= spec.memory_static_max:
        bad("memory_target outside [dynamic_min, static_max]")
    if not 1 <= spec.vcpus <= spec.vcpus_max:
        bad("need 1 <= vcpus_at_startup <= vcpus_max")
    names = [v.device or disk_device_name(spec.domain_type, v.userdevice)
             for v in spec.vbds]
    if len(set(names)) != len(names):
        bad("two VBDs share a device")
    if len({v.device for v in spec.vifs}) != len(spec.vifs):
        bad("two VIFs share a device")
