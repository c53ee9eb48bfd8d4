package abi

// The Go types are generated from the C header by cgo -godefs. The layouts
// contain no pointers and no longs, so one file serves every 64-bit Linux
// architecture; preload/abi/abicheck asserts it on the one being built.
//go:generate sh -c "go tool cgo -godefs types.go | gofmt > zabi_linux.go && rm -rf _obj _cgo_*.o"
