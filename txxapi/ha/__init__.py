"""
High availability: the failover planner (which protected VMs could be
restarted on the survivors of n host failures) and its view of the
database (planner, state, status); each host's place in the liveset of
etcd leases and its self-fencing, the master's failover and a slave's
take-over of a failed master (monitor, failover); the storage side of
the heartbeat (statefile); what a host keeps of HA across restarts and
the timings derived from T (local).
"""
