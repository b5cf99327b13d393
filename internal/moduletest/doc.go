// Package moduletest holds the tests that keep Palisade usable as a Go dependency (#15): that
// every public package documents every exported identifier and exposes no type from an internal
// package (api_test.go), and that a module outside this tree can require Palisade through a
// module proxy and build an application, a PAL and a relying party that work against a real
// palisaded (proxy_test.go). It has no code of its own.
package moduletest
