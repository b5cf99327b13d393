// Command nullpal is the smallest Go PAL: it returns its input. palisade bench measures
// registration, invocation and unregistration of Go PALs with it.
package main

import "github.com/palisade-project/palisade/sdk/go/pal"

func init() { pal.Handle(func(in []byte) ([]byte, error) { return in, nil }) }

func main() {}
