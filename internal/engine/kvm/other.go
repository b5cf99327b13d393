//go:build !(linux && amd64)

package kvm

import (
	"context"
	"fmt"

	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/pal"
)

// Engine is unavailable on this platform.
type Engine struct{}

// Option configures New.
type Option func()

// WithPoolSize has no effect on this platform.
func WithPoolSize(int) Option { return func() {} }

// New fails: the KVM engine needs linux/amd64.
func New(...Option) (*Engine, error) {
	return nil, fmt.Errorf("kvm: %w: needs linux/amd64", engine.ErrNotSupported)
}

func (*Engine) Name() string                { return "kvm" }
func (*Engine) Close(context.Context) error { return nil }
func (*Engine) Compile(context.Context, *pal.Image) (engine.Module, error) {
	return nil, engine.ErrNotSupported
}
