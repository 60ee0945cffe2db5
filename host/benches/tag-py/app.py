# A Python twin of plugins/testing/tag-a: passes messages through with header tag=py.
# Used by the reload benchmark for a 12 MB-class (18 MB) component; build it with componentize-py:
#   pip install componentize-py==0.25.1
#   componentize-py -d wit -w kp:plugin/handler-world@0.1.0 bindings /tmp/tag-py-bindings
#   componentize-py -d wit -w kp:plugin/handler-world@0.1.0 componentize app -p host/benches/tag-py -p /tmp/tag-py-bindings -o /tmp/tag-py.wasm
#   KP_BENCH_BIG_MODULE=/tmp/tag-py.wasm cargo bench --bench reload

from wit_world import exports
from wit_world.imports import types


class Handler(exports.Handler):
    def init(self) -> None:
        pass

    def handle(self, message: types.Message):
        headers = list(message.headers) + [types.Header("tag", b"py")]
        return [types.Output(None, message.key, message.value, headers, None)]
