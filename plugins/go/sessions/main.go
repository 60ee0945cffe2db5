// sessions (Go): enriches JSON page events and routes them by kind.
//
//	in:  {"user": "u1", "kind": "view", "page": "/cart/42", "ms": 1250}
//	out: the event plus "section" (from [config] sections, by path prefix; "other" when none
//	     matches), "seconds" and "visits" (events of this user seen by this instance: a cache, not
//	     an exact count: kp spreads a partition's messages over instances), keyed by the user, on
//	     topic `${topic-prefix}${kind}`; kinds other than [config] kinds are refused.
//
// A value that is not such an event is refused as a bad message (the on-failure policy applies).
package main

import (
	"encoding/json"
	"fmt"
	"strings"

	kp "kpguest"
)

type event struct {
	User string  `json:"user"`
	Kind string  `json:"kind"`
	Page string  `json:"page"`
	Ms   float64 `json:"ms"`
}

var (
	prefix   = "sessions-"
	kinds    = map[string]bool{"view": true, "purchase": true}
	sections [][2]string // path prefix -> section, longest first as configured
	visits   = map[string]int{}
)

func init() {
	kp.Init(setup)
	kp.Handle(handle)
}

func setup() error {
	if p, ok := kp.Config("topic-prefix"); ok {
		prefix = p
	}
	if k, ok := kp.Config("kinds"); ok {
		kinds = map[string]bool{}
		for _, kind := range strings.Split(k, ",") {
			if kind = strings.TrimSpace(kind); kind != "" {
				kinds[kind] = true
			}
		}
	}
	if s, ok := kp.Config("sections"); ok {
		for _, pair := range strings.Split(s, ",") {
			path, section, found := strings.Cut(strings.TrimSpace(pair), "=")
			if !found || path == "" || section == "" {
				return fmt.Errorf("[config] sections: %q is not PATH=SECTION", pair)
			}
			sections = append(sections, [2]string{path, section})
		}
	}
	kp.Log(kp.Info, "routing %d kinds to topics %s*, %d sections", len(kinds), prefix, len(sections))
	return nil
}

func handle(msg kp.Message) ([]kp.Output, error) {
	if msg.Value == nil {
		return nil, kp.BadMessage("a tombstone is not an event")
	}
	var e event
	if err := json.Unmarshal(msg.Value, &e); err != nil {
		return nil, kp.BadMessage("the value is not a JSON event: %v", err)
	}
	if e.User == "" {
		return nil, kp.BadMessage("the event has no \"user\"")
	}
	if !kinds[e.Kind] {
		return nil, kp.BadMessage("unknown kind %q", e.Kind)
	}
	section := "other"
	for _, s := range sections {
		if strings.HasPrefix(e.Page, s[0]) {
			section = s[1]
			break
		}
	}
	visits[e.User]++
	var enriched map[string]any
	_ = json.Unmarshal(msg.Value, &enriched) // keeps the event's other fields
	enriched["section"] = section
	enriched["seconds"] = e.Ms / 1000
	enriched["visits"] = visits[e.User]
	value, err := json.Marshal(enriched)
	if err != nil {
		return nil, kp.BadMessage("cannot encode the event: %v", err)
	}
	out := kp.OutputFrom(msg).ToTopic(prefix + e.Kind).WithKey([]byte(e.User)).WithValue(value).
		WithHeader("routed-by", []byte("sessions.go"))
	return []kp.Output{out}, nil
}

func main() {}
