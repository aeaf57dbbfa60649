"""
The pool behaviour of the HTTP data handlers, as XAPI's: a handler asked
on a host that does not own the data answers 302 with a Location on the
host that does (owners.py); that host takes the client's session and
task from the master, where they live, and reports the task's progress
and outcome back to it (remote.py on the slave, calls.py on the master).
"""
