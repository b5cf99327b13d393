package config

import (
	"errors"
	"fmt"
	"slices"
)

// Reasons Authorize refuses, for errors.Is.
var (
	ErrUnknownName    = errors.New("name is not in the active configuration")
	ErrNotListed      = errors.New("measurement is not listed for this name (unknown or revoked)")
	ErrUnknownSecret  = errors.New("secret is not in the active configuration")
	ErrNotReleased    = errors.New("secret is not released to this name")
	ErrNoActiveConfig = errors.New("no active configuration")
)

// AuthError says which request was refused and why; Err is one of the sentinels above.
type AuthError struct {
	Secret      string
	Name        string
	Measurement Measurement
	Err         error
}

func (e *AuthError) Error() string {
	return fmt.Sprintf("secret %q for %q (measurement %s): %v", e.Secret, e.Name, e.Measurement.Short(), e.Err)
}

func (e *AuthError) Unwrap() error { return e.Err }

// Check reports whether code with measurement m may run as name under c: the name exists
// and lists m.
func Check(c *Config, name string, m Measurement) error {
	if c == nil {
		return ErrNoActiveConfig
	}
	_, ms, ok := c.Lookup(name)
	if !ok {
		return fmt.Errorf("%q: %w", name, ErrUnknownName)
	}
	if !slices.Contains(ms, m) {
		return fmt.Errorf("%q, measurement %s: %w", name, m, ErrNotListed)
	}
	return nil
}

// Authorize decides whether secret may be released to code with measurement m running as
// name, under the active configuration c. The order of the checks makes the reason precise:
// an unknown name, then a measurement that name does not list, then a secret the
// configuration does not have or does not release to name.
func Authorize(c *Config, secret, name string, m Measurement) error {
	fail := func(err error) error { return &AuthError{Secret: secret, Name: name, Measurement: m, Err: err} }
	if c == nil {
		return fail(ErrNoActiveConfig)
	}
	_, ms, ok := c.Lookup(name)
	if !ok {
		return fail(ErrUnknownName)
	}
	if !slices.Contains(ms, m) {
		return fail(ErrNotListed)
	}
	names, ok := c.Secrets[secret]
	if !ok {
		return fail(ErrUnknownSecret)
	}
	if !slices.Contains(names, name) {
		return fail(ErrNotReleased)
	}
	return nil
}
