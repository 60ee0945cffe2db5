// stress (Go): a test guest for the SDK's allocator, not an example. It makes the Go collector
// run often (GOGC from [config] gogc, default 5) and allocates on every call, reads [config]
// through the host on every call (results the host lowers into the guest), and returns outputs
// the test can check byte for byte:
//
//	output 0: key, value = hex SHA-256 of the input value, the input headers plus "n" = "0"
//	output 1 (odd offsets and every third): the input value echoed, headers in reverse order
//	output 2 (every third offset): a tombstone with an empty (present) key, to partition 1
//
// A message keyed "gc-count" gets one output instead: how many collections this instance has run.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"runtime"
	"runtime/debug"
	"strconv"

	kp "kpguest"
)

var garbage [][]byte

func init() {
	kp.Init(func() error {
		gogc := 5
		if v, ok := kp.Config("gogc"); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				return err
			}
			gogc = n
		}
		debug.SetGCPercent(gogc)
		return nil
	})
	kp.Handle(handle)
}

func handle(msg kp.Message) ([]kp.Output, error) {
	if string(msg.Key) == "gc-count" {
		var stats runtime.MemStats
		runtime.ReadMemStats(&stats)
		return []kp.Output{{Value: []byte(strconv.Itoa(int(stats.NumGC)))}}, nil
	}
	// Garbage for the collector: a few short-lived blocks per call.
	for i := 0; i < 8; i++ {
		garbage = append(garbage, make([]byte, 4096+len(msg.Headers)*64))
	}
	if len(garbage) > 64 {
		garbage = garbage[:0]
	}
	salt, _ := kp.Config("salt")
	if msg.Offset%10 == 0 {
		_ = kp.ConfigEntries()
	}
	sum := sha256.Sum256(append([]byte(salt), msg.Value...))
	first := kp.Output{Key: msg.Key, Value: []byte(hex.EncodeToString(sum[:]))}
	for _, h := range msg.Headers {
		first = first.WithHeader(h.Name, h.Value)
	}
	outputs := []kp.Output{first.WithHeader("n", []byte("0"))}
	if msg.Offset%2 == 1 || msg.Offset%3 == 0 {
		echo := kp.Output{Key: msg.Key, Value: msg.Value}
		for i := len(msg.Headers) - 1; i >= 0; i-- {
			echo = echo.WithHeader(msg.Headers[i].Name, msg.Headers[i].Value)
		}
		outputs = append(outputs, echo)
	}
	if msg.Offset%3 == 0 {
		outputs = append(outputs, kp.Output{Key: []byte{}}.ToPartition(1))
	}
	return outputs, nil
}

func main() {}
