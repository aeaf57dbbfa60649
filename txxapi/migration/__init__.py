"""
Moving running VMs between the hosts of a pool: VM.pool_migrate to
another host, host.evacuate and its plan.

As XAPI does it, the host the VM runs on (the source) sends the domain to
the destination over HTTPS, to the destination's memory receiver
(PUT /services/xenops/memory/<vm uuid>, a pool session's only): the
destination builds a paused domain with the VM's memory reserved, the
source's backend streams the domain's state and its memory image (the
simulator's: txxenops/backends/simmemory.py), the destination takes the
domain over, the source lets its domain and disks go, and the
destination plugs the disks, lets the guest run on and writes the VM's
new home (resident_on, domid, metrics, consoles; the VM record in one
change, all of it in one call to the master), so a client sees the VM
running throughout, on one host at a time.  The master holds the marks
and the destination's memory reservation for the whole move
(txxapi/forwarding/migration.py).  As in XAPI, only a running VM moves
(a paused one is VM_BAD_POWER_STATE).

* stream.py: the connection between the two hosts and its messages;
* sender.py: the source's steps (the implementation of VM.pool_migrate);
* receiver.py: the destination's HTTP handler and steps;
* checks.py: what a migration needs of its destination;
* evacuation.py: host.evacuate, host.assert_can_evacuate and
  host.get_vms_which_prevent_evacuation;
* host_operations.py: the host operations the moves mark (evacuate,
  vm_migrate);
* storage_motion.py: VM.migrate_send, VM.assert_can_migrate and
  host.migrate_receive; live_copy.py: a running VM's disks moved to
  other SRs of the pool;
* cross_pool.py: VM.migrate_send to another pool; remote_pool.py: the
  calls and uploads to that pool.
"""
