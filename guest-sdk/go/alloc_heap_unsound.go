//go:build kp_unsound_heap_realloc

// A DELIBERATELY UNSOUND call arena, built only with the tag kp_unsound_heap_realloc, for the
// SDK's stress test: the realloc the host's lowering calls takes memory from the Go heap (blocks
// kept alive until post-return), the way bindings generators commonly do it. (The WASI adapter's
// realloc stays the sound one of alloc.go: it runs before the Go runtime is initialized.) An allocation inside realloc may start a collection, which
// reads the clock, a host call the component model forbids there: wasmtime traps with "cannot
// leave component instance". The stress test shows that this build traps and the real one
// (alloc.go) does not. Never ship a plugin built with this tag.

package kp

import "unsafe"

type heapArena struct {
	live [][]byte // blocks handed out since the last reset, kept from the collector
}

var callArena heapArena

func (a *heapArena) alloc(align, size uint32) uint32 {
	if align == 0 {
		align = 1
	}
	block := make([]byte, size+align)
	a.live = append(a.live, block)
	p := uint32(uintptr(unsafe.Pointer(unsafe.SliceData(block))))
	return (p + align - 1) &^ (align - 1)
}

func (a *heapArena) reset() { a.live = a.live[:0] }

func (a *heapArena) reserve() {}

func (a *heapArena) grow(old, oldSize, align, newSize uint32) uint32 {
	p := a.alloc(align, newSize)
	if old != 0 && oldSize > 0 {
		n := min(oldSize, newSize)
		copy(unsafe.Slice((*byte)(unsafe.Pointer(uintptr(p))), n), unsafe.Slice((*byte)(unsafe.Pointer(uintptr(old))), n))
	}
	return p
}

//go:wasmexport cabi_export_realloc
func cabiExportRealloc(old, oldSize, align, newSize uint32) uint32 {
	return callArena.grow(old, oldSize, align, newSize)
}

//go:wasmexport cabi_import_realloc
func cabiImportRealloc(old, oldSize, align, newSize uint32) uint32 {
	return callArena.grow(old, oldSize, align, newSize)
}
