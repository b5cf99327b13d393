package pal_test

import (
	"errors"
	"fmt"

	"github.com/palisade-project/palisade/pal"
)

// The smallest WebAssembly module measured as the daemon measures it at registration: a
// relying party computes the same value offline from the image it trusts.
func Example() {
	module := []byte("\x00asm\x01\x00\x00\x00") // magic and version: an empty module
	img, err := pal.Parse(module)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(img.Kind, img.Measurement)
	// Output: wasm c01f1db08891bfda171e080bdd354f45e0db280f23a6c717929f665738ddefce
}

// Reference values arrive as hex, from `palisade measure`, a configuration or a colleague.
func ExampleParseMeasurement() {
	want, err := pal.ParseMeasurement("c01f1db08891bfda171e080bdd354f45e0db280f23a6c717929f665738ddefce")
	if err != nil {
		fmt.Println(err)
		return
	}
	img, _ := pal.Parse([]byte("\x00asm\x01\x00\x00\x00"))
	fmt.Println(img.Measurement == want)
	// Output: true
}

// What is neither a WebAssembly module nor an x86-64 ELF executable is refused, with an error
// wrapping ErrInvalid that says why.
func ExampleParse_invalid() {
	_, err := pal.Parse([]byte("#!/bin/sh\necho hi\n"))
	fmt.Println(errors.Is(err, pal.ErrInvalid))
	// Output: true
}
