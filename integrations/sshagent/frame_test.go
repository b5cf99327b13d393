package sshagent

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// frames is the model frameReader must follow: the bytes of in up to the first length prefix
// over max or cut short (a prefix goes on only whole and checked), and whether one was over max.
func frames(in []byte, max uint32) ([]byte, bool) {
	pos := 0
	for {
		if len(in)-pos < 4 {
			return in[:pos], false
		}
		n := binary.BigEndian.Uint32(in[pos:])
		if n > max {
			return in[:pos], true
		}
		if uint64(len(in)-pos-4) <= uint64(n) {
			return in, false // the last frame, whole or cut short: all of it goes on
		}
		pos += 4 + int(n)
	}
}

// readAllFrames reads r through a frameReader in reads of one byte to 9 bytes, cycling, so that
// reads end inside prefixes and bodies.
func readAllFrames(in []byte, max uint32) ([]byte, error) {
	f := &frameReader{r: bytes.NewReader(in), max: max}
	var out []byte
	buf := make([]byte, 9)
	for i := 0; ; i++ {
		k, err := f.Read(buf[:1+i%9])
		out = append(out, buf[:k]...)
		if err != nil {
			return out, err
		}
	}
}

func frame(n uint32, body []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, n), body...)
}

func TestFrameReader(t *testing.T) {
	const max = 16
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	for _, tc := range []struct {
		name     string
		in       []byte
		tooLarge bool
	}{
		{"empty", nil, false},
		{"one frame", frame(3, []byte("abc")), false},
		{"frames at the limit", cat(frame(max, make([]byte, max)), frame(0, nil), frame(1, []byte{9})), false},
		{"oversized first", cat(frame(max+1, make([]byte, max+1))), true},
		{"oversized after a good one", cat(frame(2, []byte("ok")), frame(1<<31, nil)), true},
		{"huge prefix", frame(0xffffffff, nil), true},
		{"prefix cut short", cat(frame(1, []byte{7}), []byte{0, 0}), false},
		{"body cut short", cat(frame(10, []byte("abc"))), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := readAllFrames(tc.in, max)
			want, tooLarge := frames(tc.in, max)
			if tooLarge != tc.tooLarge {
				t.Fatalf("model: tooLarge %v, want %v", tooLarge, tc.tooLarge)
			}
			if !bytes.Equal(out, want) {
				t.Errorf("read %x, want %x", out, want)
			}
			if got := errors.Is(err, ErrRequestTooLarge); got != tc.tooLarge {
				t.Errorf("error %v, want too large: %v", err, tc.tooLarge)
			}
			if !tc.tooLarge && err != io.EOF && err != io.ErrUnexpectedEOF {
				t.Errorf("error %v at the end of the input", err)
			}
		})
	}
	// One byte at a time from below (a slow client): the same bytes.
	in := cat(frame(3, []byte("abc")), frame(max+1, nil))
	f := &frameReader{r: iotest.OneByteReader(bytes.NewReader(in)), max: max}
	out, err := io.ReadAll(f)
	if !bytes.Equal(out, in[:7]) || !errors.Is(err, ErrRequestTooLarge) {
		t.Errorf("one byte at a time: %x %v", out, err)
	}
}

// FuzzFrameReader: for any byte stream, frameReader hands on exactly the model's bytes (the
// stream up to the first oversized length prefix, never that prefix) and fails exactly when
// there is one.
func FuzzFrameReader(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 11}, uint32(16))
	f.Add(frame(0xffffffff, nil), uint32(MaxRequest))
	f.Add(append(frame(2, []byte{1, 2}), 0, 0, 1), uint32(2))
	f.Fuzz(func(t *testing.T, in []byte, max uint32) {
		out, err := readAllFrames(in, max)
		want, tooLarge := frames(in, max)
		if !bytes.Equal(out, want) {
			t.Fatalf("read %x, want %x", out, want)
		}
		if errors.Is(err, ErrRequestTooLarge) != tooLarge {
			t.Fatalf("error %v, too large: %v", err, tooLarge)
		}
	})
}
