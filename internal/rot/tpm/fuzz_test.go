package tpm

import (
	"bytes"
	"testing"

	"github.com/palisade-project/palisade/internal/utpm"
)

func FuzzDecodeEventLog(f *testing.F) {
	good, _ := EncodeEventLog([]Event{
		{PCR: 23, Digest: utpm.Digest{1}, Kind: EventVisor},
		{PCR: 23, Digest: utpm.Digest{2}, Kind: EventIdentity},
		{PCR: 23, Digest: CapDigest(), Kind: EventCap},
	})
	f.Add(good)
	f.Add([]byte{0x80})
	f.Add([]byte{0x81, 0xa3, 0x01, 0x17, 0x02, 0x43, 1, 2, 3, 0x03, 0x60}) // short digest
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := DecodeEventLog(b)
		if err != nil {
			return
		}
		out, err := EncodeEventLog(ev)
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("accepted event log does not re-encode to itself: %v", err)
		}
		_ = Replay(ev, 23)
	})
}

func FuzzParseEndorsement(f *testing.F) {
	e := Endorsement{Quoted: []byte{1}, Signature: []byte{2}, AKPublic: []byte{3}, PCR: 23,
		Events: []Event{{PCR: 23, Kind: EventVisor}}, EKCert: []byte{4}, EKChain: [][]byte{{5}}}
	good, _ := e.Marshal()
	f.Add(good)
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseEndorsement(b)
		if err != nil {
			return
		}
		out, err := e.Marshal()
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("accepted endorsement does not re-encode to itself: %v", err)
		}
	})
}

func FuzzParseCredentialChallenge(f *testing.F) {
	good, _ := (&CredentialChallenge{IDObject: []byte{1, 2}, EncSecret: []byte{3}}).Marshal()
	f.Add(good)
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if c, err := ParseCredentialChallenge(b); err == nil && (len(c.IDObject) == 0 || len(c.EncSecret) == 0) {
			t.Fatal("accepted an empty challenge field")
		}
	})
}
