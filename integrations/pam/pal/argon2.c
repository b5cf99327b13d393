/* argon2.c — see argon2.h. Section numbers are RFC 9106's and RFC 7693's. */
#include "argon2.h"

void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);

/* ---- BLAKE2b (RFC 7693) ---- */

static const uint64_t blake2b_iv[8] = {
	0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL,
	0xa54ff53a5f1d36f1ULL, 0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL,
	0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

static const uint8_t blake2b_sigma[12][16] = {
	{ 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 },
	{ 14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3 },
	{ 11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4 },
	{ 7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8 },
	{ 9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13 },
	{ 2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9 },
	{ 12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11 },
	{ 13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10 },
	{ 6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5 },
	{ 10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0 },
	{ 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 },
	{ 14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3 },
};

static inline uint64_t rotr64(uint64_t x, unsigned n)
{
	return (x >> n) | (x << (64 - n));
}

static inline uint64_t load64(const uint8_t *p)
{
	return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 |
	       (uint64_t)p[3] << 24 | (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 |
	       (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
}

static inline void store64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void store32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

#define B2G(a, b, c, d, x, y)                \
	do {                                 \
		a = a + b + (x);             \
		d = rotr64(d ^ a, 32);       \
		c = c + d;                   \
		b = rotr64(b ^ c, 24);       \
		a = a + b + (y);             \
		d = rotr64(d ^ a, 16);       \
		c = c + d;                   \
		b = rotr64(b ^ c, 63);       \
	} while (0)

static void blake2b_compress(blake2b_state *s, const uint8_t *block, int last)
{
	uint64_t m[16], v[16];

	for (int i = 0; i < 16; i++)
		m[i] = load64(block + 8 * i);
	for (int i = 0; i < 8; i++) {
		v[i] = s->h[i];
		v[i + 8] = blake2b_iv[i];
	}
	v[12] ^= s->t[0];
	v[13] ^= s->t[1];
	if (last)
		v[14] = ~v[14];
	for (int r = 0; r < 12; r++) {
		const uint8_t *sg = blake2b_sigma[r];
		B2G(v[0], v[4], v[8], v[12], m[sg[0]], m[sg[1]]);
		B2G(v[1], v[5], v[9], v[13], m[sg[2]], m[sg[3]]);
		B2G(v[2], v[6], v[10], v[14], m[sg[4]], m[sg[5]]);
		B2G(v[3], v[7], v[11], v[15], m[sg[6]], m[sg[7]]);
		B2G(v[0], v[5], v[10], v[15], m[sg[8]], m[sg[9]]);
		B2G(v[1], v[6], v[11], v[12], m[sg[10]], m[sg[11]]);
		B2G(v[2], v[7], v[8], v[13], m[sg[12]], m[sg[13]]);
		B2G(v[3], v[4], v[9], v[14], m[sg[14]], m[sg[15]]);
	}
	for (int i = 0; i < 8; i++)
		s->h[i] ^= v[i] ^ v[i + 8];
}

int blake2b_init(blake2b_state *s, size_t outlen)
{
	if (outlen == 0 || outlen > 64)
		return ARGON2_E_PARAM;
	memset(s, 0, sizeof(*s));
	for (int i = 0; i < 8; i++)
		s->h[i] = blake2b_iv[i];
	s->h[0] ^= 0x01010000ULL ^ (uint64_t)outlen; /* no key, fanout 1, depth 1 */
	s->outlen = outlen;
	return ARGON2_OK;
}

static void blake2b_count(blake2b_state *s, uint64_t n)
{
	s->t[0] += n;
	if (s->t[0] < n)
		s->t[1]++;
}

void blake2b_update(blake2b_state *s, const void *in, size_t len)
{
	const uint8_t *p = in;

	while (len > 0) {
		/* The last block is compressed in final, with the last-block flag: keep a full
		 * buffer until more input proves it is not the last. */
		if (s->buflen == 128) {
			blake2b_count(s, 128);
			blake2b_compress(s, s->buf, 0);
			s->buflen = 0;
		}
		size_t n = 128 - s->buflen;
		if (n > len)
			n = len;
		memcpy(s->buf + s->buflen, p, n);
		s->buflen += n;
		p += n;
		len -= n;
	}
}

void blake2b_final(blake2b_state *s, uint8_t *out)
{
	uint8_t full[64];

	blake2b_count(s, s->buflen);
	memset(s->buf + s->buflen, 0, 128 - s->buflen);
	blake2b_compress(s, s->buf, 1);
	for (int i = 0; i < 8; i++)
		store64(full + 8 * i, s->h[i]);
	memcpy(out, full, s->outlen);
	memset(full, 0, sizeof(full));
	memset(s, 0, sizeof(*s));
}

static void blake2b(uint8_t *out, size_t outlen, const void *in, size_t len)
{
	blake2b_state s;

	blake2b_init(&s, outlen);
	blake2b_update(&s, in, len);
	blake2b_final(&s, out);
}

/* ---- Argon2 (RFC 9106) ---- */

#define BLOCK_WORDS 128 /* 1 KiB */
#define SYNC_POINTS 4

typedef struct {
	uint64_t v[BLOCK_WORDS];
} block;

static block arena[ARGON2_MAX_KIB];

/* H' (§3.3): the variable-length hash, out of outlen bytes. H0 (prefix) is hashed with the
 * extra 8 bytes x (the block indices), as the RFC's H'^(1024)(H0 ‖ LE32(j) ‖ LE32(i)). */
static void hprime(uint8_t *out, uint32_t outlen, const uint8_t *in, size_t inlen)
{
	blake2b_state s;
	uint8_t len[4], v[64];

	store32(len, outlen);
	if (outlen <= 64) {
		blake2b_init(&s, outlen);
		blake2b_update(&s, len, 4);
		blake2b_update(&s, in, inlen);
		blake2b_final(&s, out);
		return;
	}
	uint32_t r = (outlen + 31) / 32 - 2;
	blake2b_init(&s, 64);
	blake2b_update(&s, len, 4);
	blake2b_update(&s, in, inlen);
	blake2b_final(&s, v);
	memcpy(out, v, 32);
	for (uint32_t i = 1; i < r; i++) {
		blake2b(v, 64, v, 64);
		memcpy(out + 32 * i, v, 32);
	}
	blake2b(out + 32 * r, outlen - 32 * r, v, 64);
	memset(v, 0, sizeof(v));
}

/* lo32 is x's low half, zero-extended. In WebAssembly, clang folds (uint64_t)(uint32_t)x into
 * i64.and with 0xffffffff, which wazero compiles to a 64-bit constant load and an and (the
 * constant does not fit an immediate), and folds fblamka's 2·x·y into the masks as well;
 * i32.wrap_i64 then i64.extend_i32_u compiles to one 32-bit move. In a bare wazero harness
 * (m=19 MiB, t=2) this took the hash from 46.5 to 45.6 ms. */
static inline uint64_t lo32(uint64_t x)
{
#if defined(__wasm__)
	uint64_t r;

	__asm__("local.get %1\n\ti32.wrap_i64\n\ti64.extend_i32_u\n\tlocal.set %0" : "=r"(r) : "r"(x));
	return r;
#else
	return (uint32_t)x;
#endif
}

static inline uint64_t fblamka(uint64_t x, uint64_t y)
{
	uint64_t m = lo32(x) * lo32(y);

	return x + y + m + m;
}

#define GB(a, b, c, d)                       \
	do {                                 \
		a = fblamka(a, b);           \
		d = rotr64(d ^ a, 32);       \
		c = fblamka(c, d);           \
		b = rotr64(b ^ c, 24);       \
		a = fblamka(a, b);           \
		d = rotr64(d ^ a, 16);       \
		c = fblamka(c, d);           \
		b = rotr64(b ^ c, 63);       \
	} while (0)

/* P (§3.6) on 16 words given by index. */
#define PERM(v, i0, i1, i2, i3, i4, i5, i6, i7, i8, i9, i10, i11, i12, i13, i14, i15) \
	do {                                                                          \
		GB(v[i0], v[i4], v[i8], v[i12]);                                      \
		GB(v[i1], v[i5], v[i9], v[i13]);                                      \
		GB(v[i2], v[i6], v[i10], v[i14]);                                     \
		GB(v[i3], v[i7], v[i11], v[i15]);                                     \
		GB(v[i0], v[i5], v[i10], v[i15]);                                     \
		GB(v[i1], v[i6], v[i11], v[i12]);                                     \
		GB(v[i2], v[i7], v[i8], v[i13]);                                      \
		GB(v[i3], v[i4], v[i9], v[i14]);                                      \
	} while (0)

/* G (§3.5): next = P(prev ^ ref) ^ prev ^ ref, xored into next's old value if xor_old (passes
 * after the first, version 0x13).
 *
 * Every loop is unrolled in full: the wasm engine runs wazero with WithCloseOnContextDone,
 * which puts a termination check on every loop back-edge, and with the loops rolled that made
 * the hash 3× slower (195 ms against 71 ms for m=19 MiB, t=2). A WebAssembly SIMD128 version of
 * this function (the reference's SSE layout; in git history) was slower than this scalar one
 * under wazero 1.12 on amd64 (72.7 ms against 67.6 ms), so G's arithmetic is scalar; only the
 * xors around it use SIMD128 (xor_in, xor_out).
 *
 * The working block, work (argon2id's; it wipes it at the end), stays in memory: each of the 16
 * permutations loads its 16 words and stores them back (PASS_BARRIER), and prev ^ ref is xored
 * into next before the permutations (xor_in) rather than kept aside. Otherwise clang keeps all
 * 256 words (the working block and the copy) in wasm locals, and wazero spills most of them
 * across the whole function: in a bare wazero harness the hash took 46.5 ms against 48.9 ms.
 * (The kvm build, gcc, runs at the same speed either way: 18–23 ms natively.) */
#if defined(__clang__)
#define UNROLL_FULL _Pragma("clang loop unroll(full)")
#else
/* gcc builds only the kvm engine's native PAL, which has no back-edge checks. */
#define UNROLL_FULL
#endif

#if defined(__wasm__)
/* The compiler must assume the asm reads and writes *p: the working block is stored before it
 * and loaded after. */
#define PASS_BARRIER(p) __asm__ volatile("" : : "r"(p) : "memory")
#else
#define PASS_BARRIER(p) ((void)(p))
#endif

/* xor_in sets work = prev ^ ref and next = work, or next ^= work if xor_old; xor_out sets
 * next ^= work. In WebAssembly they use SIMD128 (enabled for these two functions only; the engine
 * accepts WebAssembly 2.0), two words an instruction: that took the hash from 41–47 ms to
 * 34–37 ms in a bare wazero harness (six processes each). G's arithmetic stays scalar (see
 * above). */
#if defined(__wasm__)
typedef uint64_t u64x2 __attribute__((vector_size(16), aligned(8)));
#define SIMD_XOR __attribute__((target("simd128"), noinline))
#define XOR_WORDS 2
#else
typedef uint64_t u64x2;
#define SIMD_XOR
#define XOR_WORDS 1
#endif

SIMD_XOR static void xor_in(const block *prev, const block *ref, block *next, int xor_old,
			    block *work)
{
	const u64x2 *p = (const u64x2 *)prev->v, *q = (const u64x2 *)ref->v;
	u64x2 *n = (u64x2 *)next->v, *w = (u64x2 *)work->v;

	if (xor_old) {
		UNROLL_FULL
		for (int i = 0; i < BLOCK_WORDS / XOR_WORDS; i++) {
			u64x2 x = p[i] ^ q[i];
			w[i] = x;
			n[i] ^= x;
		}
	} else {
		UNROLL_FULL
		for (int i = 0; i < BLOCK_WORDS / XOR_WORDS; i++) {
			u64x2 x = p[i] ^ q[i];
			w[i] = x;
			n[i] = x;
		}
	}
}

SIMD_XOR static void xor_out(block *next, const block *work)
{
	u64x2 *n = (u64x2 *)next->v;
	const u64x2 *w = (const u64x2 *)work->v;

	UNROLL_FULL
	for (int i = 0; i < BLOCK_WORDS / XOR_WORDS; i++)
		n[i] ^= w[i];
}

static void fill_block(const block *prev, const block *ref, block *next, int xor_old, block *work)
{
	uint64_t *v = work->v;

	xor_in(prev, ref, next, xor_old, work);
	PASS_BARRIER(v);
	UNROLL_FULL
	for (int i = 0; i < 8; i++) {
		int b = 16 * i;
		PERM(v, b, b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7, b + 8, b + 9, b + 10,
		     b + 11, b + 12, b + 13, b + 14, b + 15);
		PASS_BARRIER(v);
	}
	UNROLL_FULL
	for (int i = 0; i < 8; i++) {
		int b = 2 * i;
		PERM(v, b, b + 1, b + 16, b + 17, b + 32, b + 33, b + 48, b + 49, b + 64, b + 65,
		     b + 80, b + 81, b + 96, b + 97, b + 112, b + 113);
		PASS_BARRIER(v);
	}
	xor_out(next, work);
}

/* wipe_blocks zeroes the first n blocks of the arena. In WebAssembly it is one memory.fill
 * (bulk memory, enabled for this function only; the engine accepts WebAssembly 2.0), which
 * wazero runs in Go: a loop of word stores took ≈ 13 ms of the 62 ms of m=19 MiB, t=2, most of it
 * in the termination check on each of its 311 296 back-edges (see fill_block); the fill takes
 * ≈ 1 ms. The SDK's memset is a byte loop. The barrier keeps the stores, which nothing reads
 * before the next hash. */
#if defined(__wasm__)
__attribute__((target("bulk-memory"))) static void wipe_blocks(uint32_t n)
{
	__builtin_memset(arena, 0, (size_t)n * sizeof(block));
	__asm__ volatile("" : : "r"(arena) : "memory");
}
#else
static void wipe_blocks(uint32_t n)
{
	volatile uint64_t *w = &arena[0].v[0];

	for (size_t i = 0; i < (size_t)n * BLOCK_WORDS; i++)
		w[i] = 0;
}
#endif

struct inst {
	uint32_t passes, lanes, lane_len, seg_len, blocks;
};

/* The address block of Argon2i indexing (§3.4.1.2): G(0, G(0, input)) after bumping the
 * counter. */
static void next_addresses(block *addr, block *input, block *work)
{
	static const block zero;

	input->v[6]++;
	fill_block(&zero, input, addr, 0, work);
	fill_block(&zero, addr, addr, 0, work);
}

static void fill_segment(const struct inst *in, uint32_t pass, uint32_t lane, uint32_t slice,
			 block *work)
{
	block addr, input;
	int indep = pass == 0 && slice < SYNC_POINTS / 2; /* Argon2id */
	uint32_t start = 0;

	if (indep) {
		memset(&input, 0, sizeof(input));
		input.v[0] = pass;
		input.v[1] = lane;
		input.v[2] = slice;
		input.v[3] = in->blocks;
		input.v[4] = in->passes;
		input.v[5] = 2; /* Argon2id */
	}
	if (pass == 0 && slice == 0) {
		start = 2;
		if (indep)
			next_addresses(&addr, &input, work);
	}
	uint32_t cur = lane * in->lane_len + slice * in->seg_len + start;
	uint32_t prev = cur % in->lane_len == 0 ? cur + in->lane_len - 1 : cur - 1;

	/* Unrolled ×4: a quarter of the back-edges' termination checks (see fill_block), ≈ 0.7 ms
	 * of ≈ 36 at m=19 MiB, t=2 in a bare wazero harness (medians of twelve processes). */
#if defined(__clang__)
	_Pragma("clang loop unroll_count(4)")
#endif
	for (uint32_t i = start; i < in->seg_len; i++, cur++, prev++) {
		if (cur % in->lane_len == 1)
			prev = cur - 1;
		uint64_t rnd;
		if (indep) {
			if (i % BLOCK_WORDS == 0)
				next_addresses(&addr, &input, work);
			rnd = addr.v[i % BLOCK_WORDS];
		} else {
			rnd = arena[prev].v[0];
		}
		uint32_t ref_lane = (uint32_t)((rnd >> 32) % in->lanes);
		if (pass == 0 && slice == 0)
			ref_lane = lane;
		int same = ref_lane == lane;

		/* §3.4.2: the reference set and the position in it. */
		uint32_t area;
		if (pass == 0) {
			if (slice == 0)
				area = i - 1;
			else if (same)
				area = slice * in->seg_len + i - 1;
			else
				area = slice * in->seg_len - (i == 0 ? 1 : 0);
		} else {
			if (same)
				area = in->lane_len - in->seg_len + i - 1;
			else
				area = in->lane_len - in->seg_len - (i == 0 ? 1 : 0);
		}
		uint64_t x = rnd & 0xffffffffULL;
		x = (x * x) >> 32;
		uint64_t rel = area - 1 - (((uint64_t)area * x) >> 32);
		uint32_t startpos = 0;
		if (pass != 0 && slice != SYNC_POINTS - 1)
			startpos = (slice + 1) * in->seg_len;
		uint32_t ref = (uint32_t)((startpos + rel) % in->lane_len);

		fill_block(&arena[prev], &arena[ref_lane * in->lane_len + ref], &arena[cur],
			   pass != 0, work);
	}
	memset(&addr, 0, sizeof(addr));
}

int argon2id(uint32_t t, uint32_t m, uint32_t p, const uint8_t *pwd, uint32_t pwdlen,
	     const uint8_t *salt, uint32_t saltlen, uint8_t *tag, uint32_t taglen)
{
	blake2b_state s;
	uint8_t h0[72], w[4], blk[1024];
	struct inst in;
	block work;

	if (t < 1 || p < 1 || p > ARGON2_MAX_LANES || m < 8 * p || m > ARGON2_MAX_KIB ||
	    taglen < 4 || taglen > ARGON2_MAX_TAG)
		return ARGON2_E_PARAM;

	/* H0 (§3.2): the parameters, then each input with its length. */
	blake2b_init(&s, 64);
	const uint32_t params[6] = { p, taglen, m, t, 0x13, 2 };
	for (int i = 0; i < 6; i++) {
		store32(w, params[i]);
		blake2b_update(&s, w, 4);
	}
	store32(w, pwdlen);
	blake2b_update(&s, w, 4);
	blake2b_update(&s, pwd, pwdlen);
	store32(w, saltlen);
	blake2b_update(&s, w, 4);
	blake2b_update(&s, salt, saltlen);
	store32(w, 0); /* secret K */
	blake2b_update(&s, w, 4);
	blake2b_update(&s, w, 4); /* associated data X */
	blake2b_final(&s, h0);

	in.passes = t;
	in.lanes = p;
	in.blocks = m / (4 * p) * (4 * p);
	in.lane_len = in.blocks / p;
	in.seg_len = in.lane_len / SYNC_POINTS;

	for (uint32_t l = 0; l < p; l++) {
		for (uint32_t j = 0; j < 2; j++) {
			store32(h0 + 64, j);
			store32(h0 + 68, l);
			hprime(blk, 1024, h0, 72);
			for (int k = 0; k < BLOCK_WORDS; k++)
				arena[l * in.lane_len + j].v[k] = load64(blk + 8 * k);
		}
	}
	for (uint32_t pass = 0; pass < t; pass++)
		for (uint32_t slice = 0; slice < SYNC_POINTS; slice++)
			for (uint32_t l = 0; l < p; l++)
				fill_segment(&in, pass, l, slice, &work);

	/* §3.2 step 7: XOR of the lanes' last blocks, hashed to the tag. */
	block c = arena[in.lane_len - 1];
	for (uint32_t l = 1; l < p; l++)
		for (int k = 0; k < BLOCK_WORDS; k++)
			c.v[k] ^= arena[l * in.lane_len + in.lane_len - 1].v[k];
	for (int k = 0; k < BLOCK_WORDS; k++)
		store64(blk + 8 * k, c.v[k]);
	hprime(tag, taglen, blk, sizeof(blk));

	wipe_blocks(in.blocks);
	memset(&work, 0, sizeof(work));
	memset(blk, 0, sizeof(blk));
	memset(h0, 0, sizeof(h0));
	memset(&c, 0, sizeof(c));
	return ARGON2_OK;
}
