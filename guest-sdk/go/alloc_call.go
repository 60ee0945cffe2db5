//go:build !kp_unsound_heap_realloc

package kp

// The arena of one call: the lowered message, config results, the call's results. Reset at
// post-return. See alloc.go for why these are sound.
var callArena arena

//go:wasmexport cabi_export_realloc
//go:nosplit
func cabiExportRealloc(old, oldSize, align, newSize uint32) uint32 {
	return callArena.grow(old, oldSize, align, newSize)
}

//go:wasmexport cabi_import_realloc
//go:nosplit
func cabiImportRealloc(old, oldSize, align, newSize uint32) uint32 {
	return callArena.grow(old, oldSize, align, newSize)
}

