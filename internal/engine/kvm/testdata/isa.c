/* Test PAL for engine/kvm: which instructions a native PAL may use (docs/abi.md §6).
 *
 *   'n'                  null call
 *   'c' u32 leaf u32 sub CPUID as the PAL sees it: eax, ebx, ecx, edx
 *   'p' u8 probe         executes one instruction of an instruction set (below) and returns 0;
 *                        an instruction the vCPU refuses ends the call with a trap
 *
 * Built a second time with -fstack-protector-all -DSTACK_PROTECTOR, it shows why native PALs
 * are built without a stack protector: there is no TLS, so the canary at %fs:0x28 is unmapped
 * memory. */
#include "palisade.h"

static uint8_t mem[32] __attribute__((aligned(16)));

#ifdef STACK_PROTECTOR
/* The SDK has none: a PAL built with a stack protector must bring its own. */
void __stack_chk_fail(void)
{
	__builtin_trap();
}
#endif

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int32_t probe(uint8_t which)
{
	uint32_t a = 1, b = 0, c = 0, d = 0;

	switch (which) {
	case 0: __asm__ volatile("paddq %%xmm0, %%xmm0" ::: "xmm0"); break;              /* SSE2 */
	case 1: __asm__ volatile("haddpd %%xmm0, %%xmm0" ::: "xmm0"); break;             /* SSE3 */
	case 2: __asm__ volatile("pshufb %%xmm0, %%xmm0" ::: "xmm0"); break;             /* SSSE3 */
	case 3: __asm__ volatile("pmulld %%xmm0, %%xmm0" ::: "xmm0"); break;             /* SSE4.1 */
	case 4: __asm__ volatile("crc32l %0, %0" : "+r"(a)); break;                     /* SSE4.2 */
	case 5: __asm__ volatile("popcnt %0, %0" : "+r"(a)); break;                     /* POPCNT */
	case 6: __asm__ volatile("aesenc %%xmm0, %%xmm0" ::: "xmm0"); break;             /* AES-NI */
	case 7: __asm__ volatile("pclmulqdq $0, %%xmm0, %%xmm0" ::: "xmm0"); break;      /* PCLMULQDQ */
	case 8: __asm__ volatile("movbe (%1), %0" : "=r"(a) : "r"(mem)); break;         /* MOVBE */
	case 9: __asm__ volatile("lock cmpxchg16b (%4)" : "+a"(a), "+d"(d), "+b"(b), "+c"(c) : "r"(mem) : "memory"); break; /* CX16 */
	case 10: __asm__ volatile("rdrand %0" : "=r"(a)); break;                        /* RDRAND */
	case 11: __asm__ volatile("sha1nexte %%xmm0, %%xmm0" ::: "xmm0"); break;        /* SHA */
	case 12: __asm__ volatile("adcx %0, %0" : "+r"(a)); break;                      /* ADX */
	case 13: __asm__ volatile("andn %0, %0, %0" : "+r"(a)); break;                  /* BMI1 (VEX) */
	case 14: __asm__ volatile("bzhi %0, %0, %0" : "+r"(a)); break;                  /* BMI2 (VEX) */
	case 15: __asm__ volatile("vpaddd %%xmm0, %%xmm0, %%xmm0" ::: "xmm0"); break;   /* AVX */
	case 16: __asm__ volatile("vpaddd %%ymm0, %%ymm0, %%ymm0" ::: "xmm0"); break;   /* AVX2 */
	case 17: __asm__ volatile("vfmadd132ps %%xmm0, %%xmm0, %%xmm0" ::: "xmm0"); break; /* FMA */
	case 18: __asm__ volatile("vcvtph2ps %%xmm0, %%xmm0" ::: "xmm0"); break;        /* F16C */
	case 19: __asm__ volatile("vpaddd %%zmm0, %%zmm0, %%zmm0" ::: "xmm0"); break;   /* AVX-512F */
	case 20: __asm__ volatile("xgetbv" : "=a"(a), "=d"(d) : "c"(0)); break;         /* XGETBV */
	case 21: __asm__ volatile("fld1\n\tfstp %%st(0)" ::: "st"); break;              /* x87 */
	default: return 254;
	}
	(void)b, (void)c, (void)d;
	return a == 0xdeadbeef; /* keep a alive; always 0 in practice */
}

int32_t pal_main(const uint8_t *in, uint32_t n)
{
	uint32_t r[4];

	if (n == 0)
		return 254;
	switch (in[0]) {
	case 'n':
		return 0;
	case 'c':
		if (n != 9)
			return 254;
		__asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(get32(in + 1)), "c"(get32(in + 5)));
		return pal_output(r, sizeof r);
	case 'p':
		return n == 2 ? probe(in[1]) : 254;
	}
	return 255;
}
