"""
How much host memory a domain costs beyond its guest memory, following
XAPI's memory model so that VM.memory_overhead matches what XenServer would
store.  Shared by all backends: on real Xen the same figure is what the
toolstack must keep free besides the guest's own pages.

All in MiB internally, rounded up, as Xen allocates in pages and XAPI in
whole MiB:
  overhead = extra_internal + extra_external + shadow + per-vCPU + shim
  shadow   = max(1, mib(256 * vcpus + 2 * static_max_mib pages) * multiplier)
  per-vCPU = mib(38 * vcpus pages)
  shim     = 23 + static_max_mib / 90, only for PV-in-PVH
"""

MIB = 1024 * 1024
PAGES_PER_MIB = 256

# domain type -> (extra_internal_mib, extra_external_mib, has_shim)
_MODELS = {
    "pv": (0, 1, False),
    "hvm": (1, 1, False),
    "pvh": (1, 1, False),
    "pv_in_pvh": (1, 1, True),
}


def _div_up(n, d):
    return -(-n // d)


def mib_of_bytes_used(n):
    return _div_up(n, MIB)


def mib_of_pages_used(n):
    return _div_up(n, PAGES_PER_MIB)


def shim_mib(domain_type, static_max_mib):
    if _MODELS.get(domain_type, _MODELS["hvm"])[2]:
        return 23 + static_max_mib // 90
    return 0


def shadow_mib(static_max_mib, vcpus, multiplier=1.0):
    pages = 256 * vcpus + 2 * static_max_mib
    # XAPI truncates after multiplying (Int64.of_float).
    return max(1, int(mib_of_pages_used(pages) * multiplier))


def overhead_mib(domain_type, static_max, vcpus_max, multiplier=1.0):
    internal, external, _ = _MODELS.get(domain_type, _MODELS["hvm"])
    smax = mib_of_bytes_used(static_max)
    return (internal + external + shadow_mib(smax, vcpus_max, multiplier)
            + mib_of_pages_used(38 * vcpus_max)
            + shim_mib(domain_type, smax))


def memory_overhead(spec):
    """Bytes beyond the guest's memory that a domain for ``spec`` needs."""
    return overhead_mib(spec.domain_type, spec.memory_static_max,
                        spec.vcpus_max, spec.shadow_multiplier) * MIB
