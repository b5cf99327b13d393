// Package attest is the verifier of a relying party: it checks the evidence Palisade produces
// for a PAL and says which code, on which visor, under which trusted configuration, produced
// it — and whether a TPM vouches for all of that.
//
// # Evidence
//
// A relying party sends a fresh nonce to the application; the application asks palisaded for
// evidence about its PAL for that nonce (client.Client.Attest, or `palisade attest`) and returns
// Evidence.Bundle. The evidence (docs/attestation.md §2) carries:
//
//   - the PAL's µTPM quote: its measurement, the visor's measurement, the PCRs and user data the
//     PAL chose, and the nonce, signed by the visor's identity key;
//   - the identity key, and how it is rooted: for RootTPM, a TPM2_Quote by the TPM's attestation
//     key (AK) over the PCR where the visor recorded its own measurement and the identity key,
//     for the same nonce, with the event log that explains that PCR; for RootNone (the
//     development root of trust), nothing;
//   - optionally, the visor's trusted configuration (ConfigHead), signed by the identity key for
//     the same nonce.
//
// # Verifying
//
// Verify checks every link, in order, against Options: the nonce, and the reference values the
// relying party trusts — the PAL's measurement (package github.com/palisade-project/palisade/pal
// computes it from the image, as does `palisade measure`) and the visor's (MeasureVisor computes
// it from the palisaded executable and its configuration file). It returns a Result, or a
// *CheckError naming the first check that failed (Check* constants; errors.Is finds the sentinel
// behind it). Evidence from the development root of trust is refused unless
// Options.AllowUnrooted says otherwise, and then means nothing more than "a visor said so".
//
// Verify alone does not prove that the AK lives in a genuine TPM: that takes pinning, in
// Options.AKPublic, an AK enrolled once with NewEnrollment (credential activation against the
// TPM's EK certificate), which palisaded cannot answer yet (see Enrollment).
// And the visor is not started by a measured launch (no DRTM), so root on the visor's host can
// replay the PCR (docs/attestation.md §5 says what is and is not proven).
//
// # Lower levels
//
// Parse decodes evidence without verifying it; VerifyQuote and ParseQuote handle a bare µTPM
// quote, whose signature proves only that the holder of the identity key signed the claims,
// not that the key belongs to a genuine visor on a genuine TPM. Assemble is the producer's side,
// used by palisaded.
package attest
