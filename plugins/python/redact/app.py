"""redact (Python): strips personal data from JSON user events before they leave the team.

    in:  {"user": "u1", "email": "ada@example.com", "password": "x", "action": "login"}
    out: {"user": "u1", "email": "a***@example.com", "action": "login"}   key = the user id
         plus a header redacted=password,email

- [config] drop: comma-separated fields removed wherever they appear (default "password").
- [config] mask: comma-separated fields whose text is masked, keeping the first character and
  an e-mail's domain (default "email").
- [config] skip-actions: events with these "action" values are filtered out (no output).
A value that is not a JSON object is refused as a bad message.
"""

import kp_guest as kp
from kp_guest import Handler  # noqa: F401  (kp calls this class; it dispatches to handle below)

DROP = {"password"}
MASK = {"email"}
SKIP = set()


def _fields(name: str, default: str) -> set:
    return {f.strip() for f in kp.config.get(name, default).split(",") if f.strip()}


@kp.init
def setup() -> None:
    global DROP, MASK, SKIP
    DROP = _fields("drop", "password")
    MASK = _fields("mask", "email")
    SKIP = _fields("skip-actions", "")
    kp.log.info(f"dropping {sorted(DROP)}, masking {sorted(MASK)}, skipping {sorted(SKIP)}")


def mask(text: str) -> str:
    local, at, domain = text.partition("@")
    return (local[:1] + "***" + at + domain) if local else "***"


def redact(value, touched: set):
    if isinstance(value, dict):
        out = {}
        for name, inner in value.items():
            if name in DROP:
                touched.add(name)
            elif name in MASK and isinstance(inner, str):
                touched.add(name)
                out[name] = mask(inner)
            else:
                out[name] = redact(inner, touched)
        return out
    if isinstance(value, list):
        return [redact(inner, touched) for inner in value]
    return value


@kp.handler
def handle(msg: kp.Message):
    event = kp.json_value(msg)
    if not isinstance(event, dict):
        raise kp.BadMessage("a user event is a JSON object")
    if event.get("action") in SKIP:
        return None
    touched: set = set()
    clean = redact(event, touched)
    user = clean.get("user")
    headers = list(msg.headers) + [kp.Header("redacted", ",".join(sorted(touched)).encode())]
    return kp.output(clean, key=str(user) if user is not None else msg.key, headers=headers)
