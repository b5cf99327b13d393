package keys

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Layout in the daemon's state db (docs/keys.md §6): bucket "keys" maps a key's name to its
// JSON record; bucket "key-pals" maps a signing PAL's measurement to its image, for every
// signing PAL a key is bound to (the shipped one included: a later version may ship another). Every change is one bbolt transaction, fsync'd before it
// returns.
var (
	bucketKeys = []byte("keys")
	bucketPALs = []byte("key-pals")
)

// record is one key as stored. Blob and PINState are µTPM blobs: the first usable only by the
// signing PAL, the second sealed by it for itself.
type record struct {
	Name      string    `json:"name"`
	Alg       Alg       `json:"alg"`
	Public    []byte    `json:"public"`
	Chain     [][]byte  `json:"chain,omitempty"`
	Owner     uint32    `json:"owner"`
	AllowUIDs []uint32  `json:"allow_uids,omitempty"`
	AllowGIDs []uint32  `json:"allow_gids,omitempty"`
	Blob      []byte    `json:"blob"`
	PINState  []byte    `json:"pin_state,omitempty"`
	Imported  bool      `json:"imported,omitempty"`
	KeyGenPAL [32]byte  `json:"keygen_pal"`
	SignerPAL [32]byte  `json:"signer_pal"`
	Created   time.Time `json:"created"`
	// Creation is the key-generation PAL's evidence of the key's creation (docs/keys.md §5);
	// empty for an imported key.
	Creation []byte `json:"creation,omitempty"`
}

func (r *record) info() Info {
	return Info{
		Name: r.Name, Alg: r.Alg, PublicDER: r.Public, CertChain: r.Chain, Owner: r.Owner,
		AllowUIDs: r.AllowUIDs, AllowGIDs: r.AllowGIDs, HasPIN: len(r.PINState) > 0,
		Imported: r.Imported, KeyGenPAL: r.KeyGenPAL, SignerPAL: r.SignerPAL, Created: r.Created,
	}
}

type store struct{ db *bolt.DB }

func openStore(db *bolt.DB) (*store, error) {
	err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketKeys, bucketPALs} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("keys: state db: %w", err)
	}
	return &store{db: db}, nil
}

// all returns every record.
func (s *store) all() ([]*record, error) {
	var out []*record
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketKeys).ForEach(func(k, v []byte) error {
			r := new(record)
			if err := json.Unmarshal(v, r); err != nil {
				return fmt.Errorf("keys: record %q: %w", k, err)
			}
			out = append(out, r)
			return nil
		})
	})
	return out, err
}

// put stores r; with create, it fails with ErrExists if the name is taken. image, if not nil,
// is r's signing PAL, stored once per measurement.
func (s *store) put(r *record, create bool, image []byte) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKeys)
		if create && b.Get([]byte(r.Name)) != nil {
			return fmt.Errorf("%w: %q", ErrExists, r.Name)
		}
		if image != nil {
			pals := tx.Bucket(bucketPALs)
			if pals.Get(r.SignerPAL[:]) == nil {
				if err := pals.Put(r.SignerPAL[:], image); err != nil {
					return err
				}
			}
		}
		return b.Put([]byte(r.Name), v)
	})
}

// delete removes the key name, and its signing PAL's image if no other key uses it.
func (s *store) delete(name string, signer [32]byte) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKeys)
		if err := b.Delete([]byte(name)); err != nil {
			return err
		}
		used := false
		err := b.ForEach(func(_, v []byte) error {
			var o record
			if json.Unmarshal(v, &o) == nil && o.SignerPAL == signer {
				used = true
			}
			return nil
		})
		if err != nil || used {
			return err
		}
		return tx.Bucket(bucketPALs).Delete(signer[:])
	})
}

// image returns the stored signing PAL of measurement m (a copy).
func (s *store) image(m [32]byte) ([]byte, error) {
	var img []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketPALs).Get(m[:]); v != nil {
			img = append([]byte(nil), v...)
		}
		return nil
	})
	if err == nil && img == nil {
		err = errNoPAL
	}
	return img, err
}
