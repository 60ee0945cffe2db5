"""kp guest SDK for Python: write a kp message handler as one decorated function.

    import kp_guest as kp
    from kp_guest import Handler  # noqa: F401  (the class kp calls; it dispatches to @kp.handler)

    @kp.handler
    def handle(msg: kp.Message):
        order = kp.json_value(msg)               # raises kp.BadMessage when the value is not JSON
        return kp.output(order, key=msg.key)     # dicts and lists are JSON-encoded, str is UTF-8

Build with guest-sdk/python/build.sh (componentize-py). Map of this module:
- Message, Header, Output: the WIT records (bytes are bytes; key/value None means absent).
- output(...), text(...), json_value(...), header(...): building and reading records.
- BadMessage / RetryLater: raise them to refuse a message or ask for a retry; any other exception
  is a bug: the instance traps and the message counts as failed.
- log.info(...) etc., config.get(key) / config.entries(): the host's logging and [config].
- handler / init: decorators registering your functions with Handler.
"""

import json as _json
import sys as _sys
import traceback as _traceback
from typing import Any, Callable, Iterable, List, Optional, Union

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import config as _config
from wit_world.imports import logging as _logging
from wit_world.imports import types

Message = types.Message
Header = types.Header
Output = types.Output
Timestamp = types.Timestamp

Bytesish = Union[bytes, bytearray, str, dict, list, int, float, bool, None]


class BadMessage(Exception):
    """A permanent failure: this message can never be handled (the on-failure policy applies)."""


class RetryLater(Exception):
    """A transient failure: kp retries the same message with backoff."""


def _to_bytes(value: Bytesish) -> Optional[bytes]:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    return _json.dumps(value, separators=(",", ":")).encode("utf-8")


def output(
    value: Bytesish = None,
    *,
    key: Bytesish = None,
    topic: Optional[str] = None,
    headers: Union[Iterable[Header], dict, None] = None,
    partition: Optional[int] = None,
) -> Output:
    """One output record; `topic` None means the manifest's output-topic."""
    if isinstance(headers, dict):
        header_list = [Header(name, _to_bytes(v) or b"") for name, v in headers.items()]
    else:
        header_list = [Header(h.name, h.value) for h in (headers or [])]
    return Output(topic, _to_bytes(key), _to_bytes(value), header_list, partition)


def text(value: Optional[bytes]) -> Optional[str]:
    """UTF-8 text of a key or value (None stays None); raises BadMessage on invalid UTF-8."""
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadMessage(f"not UTF-8: {e}") from None


def json_value(msg: Message) -> Any:
    """The message value parsed as JSON; raises BadMessage when it is absent or not JSON."""
    if msg.value is None:
        raise BadMessage("the value is null (a tombstone), expected JSON")
    try:
        return _json.loads(msg.value)
    except ValueError as e:
        raise BadMessage(f"the value is not JSON: {e}") from None


def header(msg: Message, name: str) -> Optional[bytes]:
    """The first header called `name`, or None."""
    for h in msg.headers:
        if h.name == name:
            return h.value
    return None


class _Log:
    """Lines in the host's log, tagged with the plugin's name and version."""

    def trace(self, message: str) -> None:
        _logging.log(_logging.Level.TRACE, message)

    def debug(self, message: str) -> None:
        _logging.log(_logging.Level.DEBUG, message)

    def info(self, message: str) -> None:
        _logging.log(_logging.Level.INFO, message)

    def warn(self, message: str) -> None:
        _logging.log(_logging.Level.WARN, message)

    def error(self, message: str) -> None:
        _logging.log(_logging.Level.ERROR, message)


class _Config:
    """The plugin's [config] table from its manifest."""

    def get(self, key: str, default: Optional[str] = None) -> Optional[str]:
        value = _config.get(key)
        return default if value is None else value

    def entries(self) -> List[tuple]:
        return _config.entries()


log = _Log()
config = _Config()

_handle: Optional[Callable[[Message], Any]] = None
_init: Optional[Callable[[], None]] = None


def handler(fn: Callable[[Message], Any]) -> Callable[[Message], Any]:
    """Registers the message handler. It returns None, one Output, or a list of them."""
    global _handle
    _handle = fn
    return fn


def init(fn: Callable[[], None]) -> Callable[[], None]:
    """Registers a function run once per instance before its first message; raise to refuse."""
    global _init
    _init = fn
    return fn


class Handler(exports.Handler):
    """The export kp calls; import it into your app module (componentize-py looks it up there)."""

    def init(self) -> None:
        if _handle is None:
            raise Err("no handler registered: decorate your function with @kp_guest.handler")
        if _init is not None:
            try:
                _init()
            except Exception as e:  # noqa: BLE001 - every init failure refuses the instance
                raise Err(f"{type(e).__name__}: {e}") from None

    def handle(self, message: Message) -> List[Output]:
        assert _handle is not None  # init refused the instance otherwise
        try:
            result = _handle(message)
        except BadMessage as e:
            raise Err(types.HandlerError_BadMessage(str(e))) from None
        except RetryLater as e:
            raise Err(types.HandlerError_RetryLater(str(e))) from None
        except BaseException:
            # A bug: the instance traps and the message counts as failed. The traceback goes to
            # stderr first, where kp keeps the last lines of a call for the failure's message.
            _traceback.print_exc(file=_sys.stderr)
            _sys.stderr.flush()
            raise
        if result is None:
            return []
        if isinstance(result, Output):
            return [result]
        return list(result)
