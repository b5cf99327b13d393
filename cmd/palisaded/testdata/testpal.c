// testpal is the PAL the palisaded end-to-end tests register: a freestanding wasm32 module
// (no libc) that follows docs/abi.md §5. The first input byte selects what it does:
//
//	(empty)      null call: status 0, no output
//	'e' rest     echo: output = rest
//	's' n        status n, no output
//	'l'          loop forever (until the call's timeout)
//	'c' [alg]    KEY_CREATE a key object (alg as in the ABI, default 1 = ECDSA P-256), keep its
//	             blob in memory, output the public key (DER SubjectPublicKeyInfo)
//	'S' policy data   SEAL data under the raw ABI policy, output the blob
//	'U' blob     UNSEAL, output creator[32] || data
//	'i' / 'r'    COUNTER_INCREMENT / COUNTER_READ of counter 1, output the u64 value (LE)
//	0x14/0x16/0x18/0x60 ...  a client.Signer request (package client/signreq): sign it with the
//	             key from 'c' via KEY_SIGN, output the signature
//
// Build: clang --target=wasm32 -O2 -nostdlib -Wl,--no-entry -o testpal.wasm testpal.c
typedef unsigned char u8;
typedef unsigned int u32;

__attribute__((import_module("palisade"), import_name("utpm")))
long long utpm(u32 op, const void *req, u32 req_len, void *resp, u32 resp_cap);

enum { OP_OUTPUT = 0, OP_SEAL = 3, OP_UNSEAL = 4, OP_KEY_CREATE = 8, OP_KEY_SIGN = 9,
       OP_COUNTER_READ = 10, OP_COUNTER_INCREMENT = 11 };

static u8 in_buf[1 << 16];
static u8 scratch[1 << 13];
static u8 blob[1 << 12];
static u32 blob_len;

__attribute__((export_name("palisade_alloc"))) void *palisade_alloc(u32 n) {
	return n <= sizeof in_buf ? in_buf : 0;
}

// The compiler turns copy loops into memcpy calls; there is no libc, so here it is.
void *memcpy(void *dst, const void *src, unsigned long n) {
	u8 *d = dst;
	const u8 *s = src;
	while (n--) *d++ = *s++;
	return dst;
}

static void copy(u8 *dst, const u8 *src, u32 n) { memcpy(dst, src, n); }

static int create_key(u8 alg) {
	u8 policy[4] = {alg, 0 /* target: self */, 0 /* no PCRs */, 0 /* values follow (none) */};
	long long n = utpm(OP_KEY_CREATE, policy, sizeof policy, scratch, sizeof scratch);
	if (n < 4) return 100;
	u32 pub_len = scratch[0] | scratch[1] << 8 | scratch[2] << 16 | (u32)scratch[3] << 24;
	if (4 + pub_len > (u32)n || n - 4 - pub_len > sizeof blob) return 101;
	blob_len = (u32)n - 4 - pub_len;
	copy(blob, scratch + 4 + pub_len, blob_len);
	utpm(OP_OUTPUT, scratch + 4, pub_len, 0, 0);
	return 0;
}

// sign turns scheme ‖ hash ‖ digest into KEY_SIGN's scheme ‖ hash ‖ u32 blob_len ‖ blob ‖ digest.
static int sign(const u8 *req, u32 n) {
	if (blob_len == 0) return 102;
	if (n < 4 || 8 + blob_len + (n - 4) > sizeof scratch) return 103;
	u8 *p = scratch;
	copy(p, req, 4);
	p[4] = blob_len, p[5] = blob_len >> 8, p[6] = blob_len >> 16, p[7] = blob_len >> 24;
	copy(p + 8, blob, blob_len);
	copy(p + 8 + blob_len, req + 4, n - 4);
	static u8 sig[1024];
	long long s = utpm(OP_KEY_SIGN, p, 8 + blob_len + n - 4, sig, sizeof sig);
	if (s < 0) return 200 + (int)-s;
	utpm(OP_OUTPUT, sig, (u32)s, 0, 0);
	return 0;
}

__attribute__((export_name("palisade_entry"))) int palisade_entry(const u8 *in, u32 n) {
	if (n == 0) return 0;
	switch (in[0]) {
	case 'e':
		utpm(OP_OUTPUT, in + 1, n - 1, 0, 0);
		return 0;
	case 's':
		return n > 1 ? in[1] : 0;
	case 'l':
		for (volatile int x = 0;; x++) {
		}
	case 'c':
		return create_key(n > 1 ? in[1] : 1);
	case 'S': case 'U': {
		// A failed µTPM call is status 200 + the ABI error code.
		long long r = utpm(in[0] == 'S' ? OP_SEAL : OP_UNSEAL, in + 1, n - 1, scratch, sizeof scratch);
		if (r < 0) return 200 + (int)-r;
		utpm(OP_OUTPUT, scratch, (u32)r, 0, 0);
		return 0;
	}
	case 'i': case 'r': {
		static const u8 id[4] = {1, 0, 0, 0};
		long long r = utpm(in[0] == 'i' ? OP_COUNTER_INCREMENT : OP_COUNTER_READ, id, sizeof id, scratch, 8);
		if (r < 0) return 200 + (int)-r;
		utpm(OP_OUTPUT, scratch, 8, 0, 0);
		return 0;
	}
	case 0x14: case 0x16: case 0x18: case 0x60:
		return sign(in, n);
	}
	return 1;
}
