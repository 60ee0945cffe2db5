// Package kp writes kp message handlers in Go: register one function, build with build.sh.
//
//	package main
//
//	import kp "kpguest"
//
//	func init() { kp.Handle(handle) }
//
//	func handle(msg kp.Message) ([]kp.Output, error) {
//		if msg.Value == nil {
//			return nil, kp.BadMessage("tombstones are not handled")
//		}
//		return []kp.Output{kp.OutputFrom(msg)}, nil
//	}
//
//	func main() {} // required by Go; kp never calls it
//
// Keys, values and header values are bytes. A nil Key or Value is absent (no key; a tombstone);
// an empty non-nil one is present and empty. Return kp.BadMessage (the record can never be
// handled) or kp.RetryLater (try again later) for failures kp should act on: the manifest's
// [on-failure] policy decides. Any other error, and any panic, is a crash: kp logs the message
// (one line), counts the message as failed and replaces the instance.
//
// State kept in package variables between calls is a cache, not partition state: kp gives each
// message to any of a plugin's instances (see guest-sdk/README.md).
package kp

import (
	"errors"
	"fmt"
	"strings"
)

// Header is one Kafka record header; names may repeat, order is kept.
type Header struct {
	Name  string
	Value []byte
}

// Timestamp is a record's timestamp: milliseconds since the Unix epoch, set by the producer
// (create time) or by the broker (log-append time).
type Timestamp struct {
	Millis        int64
	LogAppendTime bool
}

// Message is the record to handle.
type Message struct {
	Topic     string
	Partition int32
	Offset    int64
	Timestamp *Timestamp // nil: the record has none
	Key       []byte     // nil: no key
	Value     []byte     // nil: a tombstone
	Headers   []Header
}

// Header returns the value of the first header called name.
func (m Message) Header(name string) ([]byte, bool) {
	for _, h := range m.Headers {
		if h.Name == name {
			return h.Value, true
		}
	}
	return nil, false
}

// Output is a record to produce.
type Output struct {
	Topic     string // "" means the manifest's output-topic
	Key       []byte // nil: no key
	Value     []byte // nil: a tombstone
	Headers   []Header
	Partition *int32 // nil: the producer's partitioner decides (by key)
}

// OutputFrom copies a message's key, value and headers into an output for the default topic.
func OutputFrom(msg Message) Output {
	return Output{Key: msg.Key, Value: msg.Value, Headers: append([]Header(nil), msg.Headers...)}
}

// ToTopic sends the output to topic (one the manifest declares).
func (o Output) ToTopic(topic string) Output { o.Topic = topic; return o }

// WithKey sets the key.
func (o Output) WithKey(key []byte) Output { o.Key = key; return o }

// WithValue sets the value.
func (o Output) WithValue(value []byte) Output { o.Value = value; return o }

// WithHeader adds a header.
func (o Output) WithHeader(name string, value []byte) Output {
	o.Headers = append(append([]Header(nil), o.Headers...), Header{name, value})
	return o
}

// ToPartition sends the output to a fixed partition.
func (o Output) ToPartition(p int32) Output { o.Partition = &p; return o }

// handlerError is the failure kp acts on.
type handlerError struct {
	kind uint8 // 0: retry-later, 1: bad-message (the WIT variant's cases)
	text string
}

func (e *handlerError) Error() string {
	if e.kind == 0 {
		return "retry later: " + e.text
	}
	return "bad message: " + e.text
}

// BadMessage says the record can never be handled (the plugin's on-failure policy applies).
func BadMessage(format string, args ...any) error {
	return &handlerError{kind: 1, text: fmt.Sprintf(format, args...)}
}

// RetryLater says the record should be handled again later (kp retries with backoff).
func RetryLater(format string, args ...any) error {
	return &handlerError{kind: 0, text: fmt.Sprintf(format, args...)}
}

// Level is a log level.
type Level int32

const (
	Trace Level = iota
	Debug
	Info
	Warn
	Error
)

// Log writes a line into kp's log, tagged with the plugin, partition and offset.
func Log(level Level, format string, args ...any) { hostLog(level, fmt.Sprintf(format, args...)) }

// Config returns the manifest's [config] value for key.
func Config(key string) (string, bool) { return hostConfigGet(key) }

// ConfigEntries returns every [config] entry, as key-value pairs.
func ConfigEntries() [][2]string { return hostConfigEntries() }

var (
	handler func(Message) ([]Output, error)
	initFn  func() error
)

// Handle registers the handler; call it from a package init function.
func Handle(h func(Message) ([]Output, error)) { handler = h }

// Init registers a function run once per fresh instance, before its first message: read the
// config there, and return an error to refuse to start.
func Init(f func() error) { initFn = f }

func runInit() (err error) {
	defer func() {
		if p := recover(); p != nil {
			recovered("init", p)
		}
	}()
	if handler == nil {
		return errors.New("no handler registered: call kp.Handle(yourFunction) in an init function")
	}
	if initFn != nil {
		return initFn()
	}
	return nil
}

func runHandle(msg Message) (outputs []Output, failure *handlerError) {
	defer func() {
		if p := recover(); p != nil {
			recovered("handle", p)
		}
	}()
	outputs, err := handler(msg)
	if err == nil {
		return outputs, nil
	}
	var known *handlerError
	if errors.As(err, &known) {
		return nil, known
	}
	// Not one kp acts on: a crash, like a panic.
	recovered("handle", fmt.Errorf("the handler returned an error that is neither kp.BadMessage nor kp.RetryLater: %w", err))
	return nil, nil
}

func panicText(p any) string {
	switch v := p.(type) {
	case error:
		return v.Error()
	case string:
		return v
	default:
		return fmt.Sprint(v)
	}
}

// firstFrames keeps the handler's own frames of a goroutine stack dump, as "func (file:line)".
func firstFrames(stack []byte) string {
	lines := strings.Split(string(stack), "\n")
	var frames []string
	for i := 1; i+1 < len(lines) && len(frames) < 4; i += 2 {
		fn := strings.TrimSpace(lines[i])
		if strings.HasPrefix(fn, "runtime.") || strings.HasPrefix(fn, "panic(") || strings.HasPrefix(fn, "kpguest.") {
			continue
		}
		if paren := strings.LastIndex(fn, "("); paren > 0 {
			fn = fn[:paren]
		}
		where := strings.TrimSpace(lines[i+1])
		if sp := strings.LastIndex(where, " +0x"); sp > 0 {
			where = where[:sp]
		}
		if slash := strings.LastIndex(where, "/"); slash >= 0 {
			where = where[slash+1:]
		}
		frames = append(frames, fn+" ("+where+")")
	}
	return strings.Join(frames, " <- ")
}
