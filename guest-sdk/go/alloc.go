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
//   - it is //go:nosplit, so it cannot grow the goroutine stack itself; sbrk (a leaf that grows
//     linear memory with memory.grow) is not marked nosplit, so realloc calls it as rarely as
//     possible: every export ends by reserving a chunk twice as large as the largest block ever
//     asked for (arena.reserve), and only a message larger than that makes realloc call sbrk;
//   - when there is no memory left it returns an address past the end of memory, so the host
//     traps instead of writing the message over low memory;
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
	cur     int    // the chunk being handed out
	next    uint32 // next free address in chunks[cur]
	largest uint32 // the largest block asked for so far
}

// The WASI adapter's memory: allocated once per instance, never reset.
var adapterArena arena

const minChunk = 1 << 20

// outOfMemory is what realloc returns when it has no memory: an address past the end of any
// wasm32 memory, so the host traps ("beyond end of memory") instead of writing anywhere. (Zero
// would not do: wasmtime accepts address 0, and the message would overwrite low memory.)
//
//go:nosplit
func outOfMemory(align uint32) uint32 { return ^uint32(0) &^ (align - 1) }

//go:nosplit
func (a *arena) alloc(align, size uint32) uint32 {
	if align == 0 {
		align = 1
	}
	for {
		if a.cur < a.count {
			end := a.chunks[a.cur].end
			p := (a.next + align - 1) &^ (align - 1)
			if p >= a.next && p <= end && size <= end-p {
				a.next = p + size
				if size > a.largest {
					a.largest = size
				}
				return p
			}
			if a.cur+1 < a.count {
				a.cur++
				a.next = a.chunks[a.cur].start
				continue
			}
		}
		if !a.addChunk(size, align) {
			return outOfMemory(align)
		}
	}
}

// addChunk takes a new chunk from sbrk, large enough for size bytes at align, and at least
// twice the previous one (so 64 chunks cover any wasm32 memory); false when there is no more.
//
//go:nosplit
func (a *arena) addChunk(size, align uint32) bool {
	if a.count == len(a.chunks) || size > (1<<31) {
		return false
	}
	n := uint32(minChunk)
	if a.count > 0 {
		last := a.chunks[a.count-1]
		if grown := 2 * (last.end - last.start); grown > n && grown <= 1<<30 {
			n = grown
		}
	}
	if size+align > n {
		n = (size + align + minChunk - 1) &^ (minChunk - 1)
	}
	start := uint32(uintptr(sbrk(uintptr(n))))
	if start == 0 {
		return false
	}
	a.chunks[a.count] = chunk{start, start + n}
	a.cur = a.count
	a.count++
	a.next = start
	return true
}

// reserve makes room for a call like the last one without sbrk inside realloc: a chunk that
// holds twice the largest block asked for so far. Called at the end of every export (ordinary Go
// code, where anything may run); a message larger than twice any before still grows the arena
// from realloc, through sbrk alone.
func (a *arena) reserve() {
	want := 2 * a.largest
	for i := 0; i < a.count; i++ {
		if a.chunks[i].end-a.chunks[i].start >= want {
			return
		}
	}
	cur, next := a.cur, a.next
	if a.addChunk(want, 8) {
		a.cur, a.next = cur, next // keep handing out where the call is; the chunk waits
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
