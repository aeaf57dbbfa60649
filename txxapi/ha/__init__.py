"""
High availability: the failover planner (which protected VMs could be
restarted on the survivors of n host failures) and its view of the
database.  The liveness and fencing machinery builds on the pool.
"""
