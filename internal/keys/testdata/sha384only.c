/* sha384only.c — a signing PAL of a user's own (docs/keys.md §3): the shipped signing PAL with a
 * policy that signs only SHA-384 digests. */
#define SIGN_POLICY(scheme, hash, digest, len) ((hash) == PAL_HASH_SHA384)
#include "../pals/signer.c"
