// The {{name}} kp handler: copies each message to the output topic with a `handled-by` header.
// Replace handle with your logic; sdk/kp.go lists the helpers.
package main

import kp "kpguest"

func init() {
	kp.Handle(handle)
}

func handle(msg kp.Message) ([]kp.Output, error) {
	if msg.Value == nil {
		return nil, kp.BadMessage("{{name}} does not handle tombstones")
	}
	return []kp.Output{kp.OutputFrom(msg).WithHeader("handled-by", []byte("{{name}}"))}, nil
}

// Required by Go; kp never calls it (the module is a library of exported functions).
func main() {}
