// Why this allocator, and what keeps it sound.
//
// While the host lowers a value into the guest (the message before `handle`, the result of a
// config import), it calls the guest's realloc, and the component model forbids the guest to
// call the host from inside that realloc: wasmtime traps with "cannot leave component instance".
// A realloc that takes memory from the Go heap can start a garbage collection, and the collector
// reads the clock, a host call: the trap, on about a third of the messages of a stress run.
//
// So realloc never touches the Go heap, the scheduler or the clock:
//   - it bumps a pointer through an arena of linear memory obtained from the runtime's sbrk
//     (the memory the Go heap is carved from, but handed out past the heap's own end, so the
//     collector never scans or reuses it);
//   - it is //go:nosplit, so it cannot grow the goroutine stack either; nor can anything it calls
//     (sbrk is a leaf that grows linear memory with memory.grow);
//   - the arena is reset once the host has read a result (post-return), so memory is reused
//     across calls: it grows to the largest single call, not with the number of calls.
//
// The Go code of an export copies the lowered message into Go values before the handler runs,
// and copies results into the arena after it returns: the collector may run in between, and only
// ever sees Go memory. The WASI adapter's state (allocated once, kept for the instance's life)
// comes from its own realloc, which never resets.
//
// What would break it: a Go release that renames or changes runtime.sbrk (this package reaches it
// with go:linkname, which needs -ldflags=-checklinkname=0; the build then fails, loudly), or one
// whose sbrk could start a collection. The SDK's stress test (tests/languages.rs) runs thousands
// of messages with the collector forced to run often, and runs the same load against a build
// whose call arena comes from the Go heap (tag kp_unsound_heap_realloc, alloc_heap_unsound.go)
// to show the test would catch the problem. The call arena is in alloc_call.go.

package kp

import "unsafe"

//go:linkname sbrk runtime.sbrk
func sbrk(n uintptr) unsafe.Pointer

// chunk is a piece of linear memory from sbrk, [start, end).
type chunk struct{ start, end uint32 }

// arena hands out memory from its chunks in order; reset starts over from the first chunk.
type arena struct {
	chunks [64]chunk
	count  int    // chunks obtained so far
	cur    int    // the chunk being handed out
	next   uint32 // next free address in chunks[cur]
}

// The WASI adapter's memory: allocated once per instance, never reset.
var adapterArena arena

const minChunk = 1 << 20

//go:nosplit
func (a *arena) alloc(align, size uint32) uint32 {
	if align == 0 {
		align = 1
	}
	for {
		if a.cur < a.count {
			p := (a.next + align - 1) &^ (align - 1)
			if p+size <= a.chunks[a.cur].end && p >= a.next {
				a.next = p + size
				return p
			}
			if a.cur+1 < a.count {
				a.cur++
				a.next = a.chunks[a.cur].start
				continue
			}
		}
		// A new chunk, large enough for this request.
		if a.count == len(a.chunks) {
			return 0 // the host traps on a null result: out of memory for this call
		}
		n := uint32(minChunk)
		if size+align > n {
			n = (size + align + minChunk - 1) &^ (minChunk - 1)
		}
		start := uint32(uintptr(sbrk(uintptr(n))))
		if start == 0 {
			return 0
		}
		a.chunks[a.count] = chunk{start, start + n}
		a.cur = a.count
		a.count++
		a.next = start
	}
}

//go:nosplit
func (a *arena) reset() {
	a.cur = 0
	if a.count > 0 {
		a.next = a.chunks[0].start
	}
}

// grow implements realloc on an arena: a new block, with the old contents copied (the host
// only ever grows the last block it asked for, but a copy is always correct).
//
//go:nosplit
func (a *arena) grow(old, oldSize, align, newSize uint32) uint32 {
	p := a.alloc(align, newSize)
	if p != 0 && old != 0 && oldSize > 0 {
		n := oldSize
		if newSize < n {
			n = newSize
		}
		for i := uint32(0); i < n; i++ {
			*(*byte)(unsafe.Pointer(uintptr(p + i))) = *(*byte)(unsafe.Pointer(uintptr(old + i)))
		}
	}
	return p
}

//go:wasmexport cabi_realloc_adapter
//go:nosplit
func cabiReallocAdapter(old, oldSize, align, newSize uint32) uint32 {
	return adapterArena.grow(old, oldSize, align, newSize)
}
