// The canonical-ABI glue between kp's WIT world (wit/kp.wit, world handler-world) and this
// package's types, written by hand for wasm32 (GOOS=wasip1 GOARCH=wasm, -buildmode=c-shared).
// `kp componentize` embeds the world and turns the core module into a component, as for C.
//
// Layouts (wasm32: pointers and lengths are 4 bytes; a record is aligned to its largest field):
//
//	header                 16 bytes: name ptr @0, name len @4, value ptr @8, value len @12
//	output                 52 bytes: topic option<string> (tag @0, ptr @4, len @8),
//	                       key option<list<u8>> (tag @12, ptr @16, len @20),
//	                       value option<list<u8>> (tag @24, ptr @28, len @32),
//	                       headers list<header> (ptr @36, len @40),
//	                       partition option<s32> (tag @44, value @48)
//	handle's result        16 bytes: tag @0; ok: list<output> (ptr @4, len @8);
//	                       err: handler-error (case @4: 0 retry-later, 1 bad-message; ptr @8, len @12)
//	init's result          12 bytes: tag @0; err: string (ptr @4, len @8)
//	config.get's result    12 bytes: tag @0; some: string (ptr @4, len @8)
//	config.entries' result  8 bytes: ptr @0, len @4; each entry 16 bytes (key ptr, len, value ptr, len)
//
// handle's message arrives flattened into 15 core parameters (canonical ABI: at most 16 are
// passed directly), in record field order.
//
// Memory: see alloc.go. Everything the host writes into the guest (the message, results of
// config imports) and everything handed back (results) lives in the call arena, outside the Go
// heap, and is copied into or out of Go values inside the exported function, where the garbage
// collector may run. The arena is reset after the host has read a result (post-return).

package kp

import (
	"os"
	"runtime"
	"unsafe"
)

//go:wasmimport kp:plugin/logging@0.1.0 log
func wasmLog(level int32, ptr uint32, length uint32)

//go:wasmimport kp:plugin/config@0.1.0 get
func wasmConfigGet(keyPtr uint32, keyLen uint32, ret uint32)

//go:wasmimport kp:plugin/config@0.1.0 entries
func wasmConfigEntries(ret uint32)

// Memory addresses are uint32 (not unsafe.Pointer) in Go variables: the arena is not Go memory,
// and the garbage collector must never be asked to look at it.

func load8(addr uint32) uint8   { return *(*uint8)(unsafe.Pointer(uintptr(addr))) }
func load32(addr uint32) uint32 { return *(*uint32)(unsafe.Pointer(uintptr(addr))) }
func store8(addr uint32, v uint8) {
	*(*uint8)(unsafe.Pointer(uintptr(addr))) = v
}
func store32(addr uint32, v uint32) {
	*(*uint32)(unsafe.Pointer(uintptr(addr))) = v
}

// goBytes copies length bytes at addr into a new Go slice (never nil: an empty list is present).
func goBytes(addr, length uint32) []byte {
	out := make([]byte, length)
	if length > 0 {
		copy(out, unsafe.Slice((*byte)(unsafe.Pointer(uintptr(addr))), length))
	}
	return out
}

func goString(addr, length uint32) string { return string(goBytes(addr, length)) }

// arenaBytes copies b into the call arena and returns its address.
func arenaBytes(b []byte) uint32 {
	if len(b) == 0 {
		return 1 // a valid, aligned, non-null address for an empty list; never read
	}
	addr := callArena.alloc(1, uint32(len(b)))
	copy(unsafe.Slice((*byte)(unsafe.Pointer(uintptr(addr))), len(b)), b)
	return addr
}

func arenaString(s string) uint32 { return arenaBytes(stringBytes(s)) }

// ---------------------------------------------------------------------------------------------
// Imports

// goStringAddr is the address of a Go string's bytes, for a host call that reads them before it
// returns (the caller keeps the string alive across the call with runtime.KeepAlive).
func goStringAddr(s string) uint32 {
	if len(s) == 0 {
		return 1
	}
	return uint32(uintptr(unsafe.Pointer(unsafe.StringData(s))))
}

func hostLog(level Level, text string) {
	wasmLog(int32(level), goStringAddr(text), uint32(len(text)))
	runtime.KeepAlive(text)
}

func hostConfigGet(key string) (string, bool) {
	ret := callArena.alloc(4, 12)
	wasmConfigGet(goStringAddr(key), uint32(len(key)), ret)
	runtime.KeepAlive(key)
	if load8(ret) == 0 {
		return "", false
	}
	return goString(load32(ret+4), load32(ret+8)), true
}

func hostConfigEntries() [][2]string {
	ret := callArena.alloc(4, 8)
	wasmConfigEntries(ret)
	base, n := load32(ret), load32(ret+4)
	entries := make([][2]string, n)
	for i := uint32(0); i < n; i++ {
		e := base + 16*i
		entries[i] = [2]string{goString(load32(e), load32(e+4)), goString(load32(e+8), load32(e+12))}
	}
	return entries
}

// ---------------------------------------------------------------------------------------------
// Exports

//go:wasmexport kp:plugin/handler@0.1.0#init
func exportInit() uint32 {
	err := runInit()
	ret := callArena.alloc(4, 12)
	if err == nil {
		store8(ret, 0)
	} else {
		// result<_, string>'s error has option<string>'s layout: tag 1, pointer, length.
		lowerOptionalBytes(ret, []byte(err.Error()))
	}
	settle()
	return ret
}

//go:wasmexport cabi_post_kp:plugin/handler@0.1.0#init
func postInit(ret uint32) { callArena.reset() }

//go:wasmexport kp:plugin/handler@0.1.0#handle
func exportHandle(
	topicPtr, topicLen uint32, partition int32, offset int64,
	tsTag int32, tsMillis int64, tsKind int32,
	keyTag int32, keyPtr, keyLen uint32,
	valueTag int32, valuePtr, valueLen uint32,
	headersPtr, headersLen uint32,
) uint32 {
	// The message is copied out of the arena into Go values first: from here on, the
	// collector may run (an allocation may start it), and it only ever sees Go memory.
	msg := Message{
		Topic:     goString(topicPtr, topicLen),
		Partition: partition,
		Offset:    offset,
		Headers:   make([]Header, headersLen),
	}
	if tsTag == 1 {
		msg.Timestamp = &Timestamp{Millis: tsMillis, LogAppendTime: tsKind == 1}
	}
	if keyTag == 1 {
		msg.Key = goBytes(keyPtr, keyLen)
	}
	if valueTag == 1 {
		msg.Value = goBytes(valuePtr, valueLen)
	}
	for i := uint32(0); i < headersLen; i++ {
		h := headersPtr + 16*i
		msg.Headers[i] = Header{Name: goString(load32(h), load32(h+4)), Value: goBytes(load32(h+8), load32(h+12))}
	}

	outputs, err := runHandle(msg)
	ret := callArena.alloc(4, 16)
	if err != nil {
		store8(ret, 1)
		store8(ret+4, uint8(err.kind))
		store32(ret+8, arenaString(err.text))
		store32(ret+12, uint32(len(err.text)))
	} else {
		store8(ret, 0)
		store32(ret+4, lowerOutputs(outputs))
		store32(ret+8, uint32(len(outputs)))
	}
	settle()
	return ret
}

//go:wasmexport cabi_post_kp:plugin/handler@0.1.0#handle
func postHandle(ret uint32) { callArena.reset() }

// lowerOutputs writes outputs into the arena in the canonical layout; returns the list's address.
func lowerOutputs(outputs []Output) uint32 {
	if len(outputs) == 0 {
		return 4
	}
	base := callArena.alloc(4, uint32(52*len(outputs)))
	for i, o := range outputs {
		p := base + uint32(52*i)
		lowerOptionalBytes(p, stringBytes(o.Topic)) // "" is the manifest's topic: none
		lowerOptionalBytes(p+12, o.Key)
		lowerOptionalBytes(p+24, o.Value)
		headers := uint32(4)
		if len(o.Headers) > 0 {
			headers = callArena.alloc(4, uint32(16*len(o.Headers)))
			for j, h := range o.Headers {
				q := headers + uint32(16*j)
				store32(q, arenaString(h.Name))
				store32(q+4, uint32(len(h.Name)))
				store32(q+8, arenaBytes(h.Value))
				store32(q+12, uint32(len(h.Value)))
			}
		}
		store32(p+36, headers)
		store32(p+40, uint32(len(o.Headers)))
		if o.Partition != nil {
			store8(p+44, 1)
			store32(p+48, uint32(*o.Partition))
		} else {
			store8(p+44, 0)
		}
	}
	return base
}

// stringBytes is s's bytes without a copy, nil for "" (read-only: arenaBytes copies them).
func stringBytes(s string) []byte {
	if s == "" {
		return nil
	}
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// lowerOptionalBytes writes option<list<u8>> (or option<string>) at p: nil is none, anything else
// (empty too) is some.
func lowerOptionalBytes(p uint32, b []byte) {
	if b == nil {
		store8(p, 0)
		return
	}
	store8(p, 1)
	store32(p+4, arenaBytes(b))
	store32(p+8, uint32(len(b)))
}

// settle runs at the end of every export, while the guest may still call the host: it lets the
// collector's goroutines run now. Go does not run them after an export returns (golang/go#65199),
// so without this a handler's garbage piles up until the memory cap.
func settle() {
	callArena.reserve()
	runtime.Gosched()
}

// recovered turns a panic into one line on stderr (kp puts the last lines a call wrote there into
// the failure's message) and a trap: the instance is not entered again.
func recovered(what string, p any) {
	buf := make([]byte, 2048)
	n := runtime.Stack(buf, false)
	os.Stderr.WriteString("panic in " + what + ": " + panicText(p) + " [" + firstFrames(buf[:n]) + "]\n")
	os.Exit(70) // a trap for kp: the message counts as failed, the instance is replaced
}
