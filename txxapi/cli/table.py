"""
The command table: the explicit commands first, then the generic ones of
every datamodel class (an explicit command of the same name wins), and
``help`` over all of them.
"""

from txxapi.cli import (
    access, disks, objects, pool, storage, transfer, vm)
from txxapi.cli.generic import generic_commands

_SELECTORS = {
    "vm": " VMs can be given by filters on any of their fields (as "
          "listed by 'xe vm-list params=all'); the pseudo-field 'vm' "
          "matches a uuid or a name-label. With no filter every VM is "
          "selected; more than one needs --multiple.",
    "host": " Hosts can be given by filters on any of their fields; the "
            "pseudo-field 'host' matches a uuid, hostname or name-label. "
            "More than one needs --multiple.",
    "sr": " SRs can be given by filters on any of their fields; the "
          "pseudo-field 'sr' matches a uuid or a name-label.",
}

USAGE = """Usage:
  %(argv0)s <command>
    [ -s <server> ]            XenServer host
    [ -p <port> ]              XenServer port number
    [ -u <username> -pw <password> | -pwf <password file> ]
                               User authentication (password or file)
    [ --nossl ]                Disable SSL/TLS
    [ --no-verify ]            Do not check the server's certificate
    [ --debug ]                Enable debug output
    [ <other arguments> ... ]  Command-specific options

To get help on a specific command:
  %(argv0)s help <command>

"""


def wrapped(names):
    """XAPI's help layout: comma-separated, lines kept under 75 columns,
    each indented by four spaces."""
    if not names:
        return []
    indent = "    "
    lines, current = [], indent + names[0]
    for name in names[1:]:
        if len(current) + len(name) > 74:
            lines.append(current)
            current = indent + name
        else:
            current += ", " + name
    lines.append(current)
    return lines


class Table:
    def __init__(self, commands):
        self.commands = {}
        for c in commands:
            self.commands.setdefault(c.name, c)

    def get(self, name):
        return self.commands.get(name)

    def names(self):
        return sorted(self.commands)

    def help(self, cli):
        asked = [k for k, _ in cli.params.items
                 if k not in ("server", "username", "password", "port",
                              "minimal", "all")]
        if asked:
            for name in asked:
                self._one(cli, name)
            return
        every = cli.params.flag("all")
        names = [n for n in self.names()
                 if every or self.commands[n].standard]
        if cli.minimal:
            cli.lines(names)
            return
        head = USAGE % {"argv0": "xe"}
        if every:
            cli.lines([head + "Full command list\n-----------------\n"])
            hosts = [n for n in names if n.startswith("host-")]
            vms = [n for n in names if n.startswith("vm-")]
            other = [n for n in names if n not in hosts and n not in vms]
            for group in (hosts, vms, other):
                cli.lines(wrapped(group))
                cli.lines(["    "])
            return
        cli.lines([head + "To get a full listing of commands:\n  xe help "
                   "--all\n\nCommon command list\n-------------------\n"])
        cli.lines(wrapped(names))

    def _one(self, cli, name):
        c = self.commands.get(name)
        if c is None:
            cli.lines(["Unknown command '%s'" % name])
            return
        optional = list(c.optn)
        if c.selectors:
            optional.append("<%s-selectors>" % c.selectors)
        cli.table([[("command name        ", name),
                    ("reqd params     ", ", ".join(c.reqd)),
                    ("optional params ", ", ".join(optional)),
                    ("description     ", c.help +
                     _SELECTORS.get(c.selectors, ""))]])


def make_table():
    return Table(vm.commands() + transfer.commands() + objects.commands()
                 + disks.commands()
                 + storage.commands() + pool.commands() + access.commands()
                 + generic_commands())


TABLE = make_table()
