package server

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/visor"
)

// Store persists registrations in a bbolt database, so that a restarted daemon registers them
// again under the same handles. Each change is one transaction, fsync'd by bbolt before it
// returns: a registration acknowledged to a client is on disk.
//
// Layout: bucket "pals" maps a handle (8 bytes big-endian) to a JSON Record; bucket "images"
// maps SHA-256(image bytes) to the image, shared by the registrations of the same image.
type Store struct {
	db *bolt.DB
}

var (
	bucketPALs   = []byte("pals")
	bucketImages = []byte("images")
)

// Record is one persisted registration.
type Record struct {
	Handle     visor.Handle  `json:"handle"`
	Owner      uint32        `json:"owner"`
	Name       string        `json:"name"`
	Engine     string        `json:"engine"`
	Limits     engine.Limits `json:"limits"`
	Replicas   int           `json:"replicas"`
	Image      [32]byte      `json:"image_sha256"`
	Registered time.Time     `json:"registered"`
}

// OpenStore opens (creating) the database at path. It fails after a second if another process
// holds it, which is how a second daemon on the same state directory is refused, and at once
// if the file is truncated (checkStateFile). A damaged database is refused here, naming the
// file, rather than met at some later read: bbolt panics on a bad page.
func OpenStore(path string) (*Store, error) {
	if err := checkStateFile(path); err != nil {
		return nil, err
	}
	db, err := openBolt(path)
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("state db %s is in use by another process (is another palisaded running on this state directory?): %w", path, err)
	}
	damaged := func(err error) error {
		return fmt.Errorf("state db %s is damaged (%w): the registrations and keys it holds cannot be read; keep a copy of it, and move it aside to start without them", path, err)
	}
	if errors.Is(err, errPanicked) || errors.Is(err, berrors.ErrInvalid) || errors.Is(err, berrors.ErrChecksum) {
		return nil, damaged(err)
	}
	if err != nil {
		return nil, fmt.Errorf("state db %s: %w", path, err)
	}
	if err := checkDB(db); err != nil {
		db.Close()
		return nil, damaged(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketPALs, bucketImages} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("state db %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// errPanicked wraps a panic of bbolt.
var errPanicked = errors.New("bbolt panicked")

// openBolt is bolt.Open with its panics (a damaged free list) turned into an error. The
// file's lock may stay held until the process exits: the daemon then exits anyway.
func openBolt(path string) (db *bolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%w: %v", errPanicked, r)
		}
	}()
	return bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
}

// checkDB walks every page of db (bbolt's consistency check, which turns the panic of a bad
// page into an error) and returns the first problem found. It reads the whole file once: a
// few milliseconds per megabyte at start.
func checkDB(db *bolt.DB) error {
	return db.View(func(tx *bolt.Tx) error {
		var first error
		for err := range tx.Check() {
			if first == nil {
				first = err
			}
		}
		return first
	})
}

func handleKey(h visor.Handle) []byte { return binary.BigEndian.AppendUint64(nil, uint64(h)) }

// Put stores r and its image.
func (s *Store) Put(r Record, image []byte) error {
	r.Image = sha256.Sum256(image)
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		imgs := tx.Bucket(bucketImages)
		if imgs.Get(r.Image[:]) == nil {
			if err := imgs.Put(r.Image[:], image); err != nil {
				return fmt.Errorf("store image: %w", err)
			}
		}
		return tx.Bucket(bucketPALs).Put(handleKey(r.Handle), v)
	})
}

// Delete removes the registration h, and its image if no other registration uses it.
func (s *Store) Delete(h visor.Handle) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		pals := tx.Bucket(bucketPALs)
		v := pals.Get(handleKey(h))
		if v == nil {
			return nil
		}
		var r Record
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("record %s: %w", h, err)
		}
		if err := pals.Delete(handleKey(h)); err != nil {
			return err
		}
		used := false
		err := pals.ForEach(func(_, v []byte) error {
			var o Record
			if json.Unmarshal(v, &o) == nil && o.Image == r.Image {
				used = true
			}
			return nil
		})
		if err != nil || used {
			return err
		}
		return tx.Bucket(bucketImages).Delete(r.Image[:])
	})
}

// Get returns the record of h.
func (s *Store) Get(h visor.Handle) (Record, bool, error) {
	var (
		r  Record
		ok bool
	)
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketPALs).Get(handleKey(h))
		if v == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(v, &r)
	})
	return r, ok, err
}

// Records returns every registration, with a function that loads the image of one.
func (s *Store) Records() ([]Record, error) {
	var out []Record
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPALs).ForEach(func(k, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("record %x: %w", k, err)
			}
			out = append(out, r)
			return nil
		})
	})
	return out, err
}

// errNoImage means a record names an image the store does not hold.
var errNoImage = errors.New("image missing from the state db")

// Image returns the image with SHA-256 sum (a copy: bbolt's memory is only valid in the
// transaction).
func (s *Store) Image(sum [32]byte) ([]byte, error) {
	var img []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketImages).Get(sum[:])
		if v == nil {
			return errNoImage
		}
		img = append([]byte(nil), v...)
		return nil
	})
	return img, err
}

// DB is the database, for the services that keep buckets of their own in it (keys).
func (s *Store) DB() *bolt.DB { return s.db }

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }
