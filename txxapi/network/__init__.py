"""
The host's network interfaces as XAPI's PIFs see them: the devices a
host has (devices.py: the simulator's cards, or the kernel's physical
ones), and the calls that change PIFs from them (pif.py: PIF.scan,
PIF.reconfigure_ip, host.management_reconfigure).
"""
