"""
Subjects, their roles, and messages: subject-add (a name the external
directory resolves), subject-remove, subject-role-add/-remove (role-name=
or role-uuid=), message-create (on one object of a class) and
message-destroy (uuid= or a comma-separated uuids=).  The lists and
records come from the generic commands.
"""

from twisted.internet import defer

from txxapi.cli.generic import Command, on_uuid, print_uuid
from txxapi.cli.records import NULL, CliFailure, Failure


@defer.inlineCallbacks
def subject_add(cli):
    sid = yield cli.call("auth.get_subject_identifier",
                         cli.params["subject-name"])
    subject = yield cli.call("subject.create", {
        "subject_identifier": sid, "other_config": {}})
    yield print_uuid(cli, "subject", subject)


@defer.inlineCallbacks
def _subject_and_role(cli):
    p = cli.params
    role_uuid, role_name = p.get("role-uuid", ""), p.get("role-name", "")
    if not role_uuid and not role_name:
        raise Failure("Required parameter not found: role-uuid or role-name")
    if role_uuid and role_name:
        raise Failure("Parameters role-uuid and role-name cannot be used "
                      "together")
    if role_uuid:
        role = yield cli.call("role.get_by_uuid", role_uuid)
    else:
        roles = yield cli.call("role.get_by_name_label", role_name)
        # No such role: the API's own refusal of a null one.
        role = roles[0] if roles else NULL
    subject = yield cli.call("subject.get_by_uuid", p["uuid"])
    return subject, role


def _on_role(call):
    @defer.inlineCallbacks
    def run(cli):
        subject, role = yield _subject_and_role(cli)
        yield cli.call(call, subject, role)
    return run


# message-create: the parameter naming the object, and its class.
_OBJECTS = (("vm-uuid", "VM"), ("pool-uuid", "Pool"), ("sr-uuid", "SR"),
            ("host-uuid", "Host"))


@defer.inlineCallbacks
def message_create(cli):
    p = cli.params
    try:
        priority = int(p["priority"])
    except ValueError:
        raise Failure("Priority field should be an integer")
    for key, cls in _OBJECTS:
        if key in p:
            break
    else:
        raise CliFailure("Need one of: vm-uuid, host-uuid, sr-uuid or "
                         "pool-uuid")
    yield cli.call("message.create", p["name"], priority, cls, p[key],
                   p["body"])


@defer.inlineCallbacks
def message_destroy(cli):
    p = cli.params
    if "uuid" in p and "uuids" in p:
        raise CliFailure("Ambiguous arguments; need one of uuid, uuids")
    if "uuid" in p:
        uuids = [p["uuid"]]
    elif "uuids" in p:
        uuids = p["uuids"].split(",")
    else:
        raise CliFailure("Need one of uuid, uuids")
    messages = []
    for uuid in uuids:
        ref = yield cli.call("message.get_by_uuid", uuid)
        messages.append(ref)
    yield cli.call("message.destroy_many", messages)


def commands():
    return [
        Command("subject-add", subject_add, reqd=["subject-name"],
                help="Lets a user or group of the external directory log "
                     "in to the pool; prints the subject's uuid."),
        Command("subject-remove", on_uuid("subject.destroy", "subject-uuid"),
                reqd=["subject-uuid"],
                help="Takes a subject's access to the pool away."),
        Command("subject-role-add", _on_role("subject.add_to_roles"),
                reqd=["uuid"], optn=["role-name", "role-uuid"],
                help="Gives the subject a role."),
        Command("subject-role-remove", _on_role("subject.remove_from_roles"),
                reqd=["uuid"], optn=["role-name", "role-uuid"],
                help="Takes a role from the subject."),
        Command("message-create", message_create,
                reqd=["name", "priority", "body"],
                optn=["vm-uuid", "host-uuid", "sr-uuid", "pool-uuid"],
                help="Raises a message about one object (exactly one of the "
                     "optional parameters)."),
        Command("message-destroy", message_destroy, optn=["uuid", "uuids"],
                help="Destroys a message (uuid=) or several (uuids=a,b)."),
    ]
