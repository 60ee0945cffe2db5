"""The {{name}} kp handler: copies each message to the output topic with a `handled-by` header.
Replace `handle` with your logic; sdk/kp_guest.py lists the helpers."""

import kp_guest as kp
from kp_guest import Handler  # noqa: F401  (kp calls this class; it dispatches to handle)


@kp.handler
def handle(msg: kp.Message):
    if msg.value is None:
        raise kp.BadMessage("{{name}} does not handle tombstones")
    headers = list(msg.headers) + [kp.Header("handled-by", b"{{name}}")]
    return kp.output(msg.value, key=msg.key, headers=headers)
