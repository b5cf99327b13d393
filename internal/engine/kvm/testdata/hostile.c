/* Test PAL for engine/kvm: input byte 0 selects what to do; most commands are attacks on the
 * engine that must end in a typed error, never in harm to the visor or another PAL. */
#include "palisade.h"

static uint64_t calls;           /* .bss: persists across calls of one instance */
static uint64_t seeded = 0x5eed; /* .data: initialised from the image at every reset */

static void out64(uint64_t v) { pal_output(&v, sizeof v); }

__attribute__((noinline)) static uint64_t recurse(volatile uint64_t n)
{
	volatile uint8_t pad[512];
	pad[0] = (uint8_t)n;
	return n == 0 ? pad[0] : recurse(n + 1) + pad[0];
}

/* Hostcalls with bad buffers: each result goes to the output, in order. */
static void bad_hostcalls(void)
{
	int64_t r[10];
	uint8_t ok[32];
	uint8_t ro_probe;
	r[0] = palisade_utpm(PAL_OP_LOG, (void *)0x1000, 16, 0, 0);          /* GDT page: no */
	r[1] = palisade_utpm(PAL_OP_RANDOM, 0, 0, (void *)0x400000, 16);     /* response into code */
	r[2] = palisade_utpm(PAL_OP_LOG, ok, 0xffffffffu, 0, 0);             /* huge length */
	r[3] = palisade_utpm(PAL_OP_RANDOM, 0, 0, (void *)0xfffffffffffffff0ull, 32); /* wraps */
	r[4] = palisade_utpm(PAL_OP_RANDOM, 0, 0, (void *)(0x10000000ull - 8), 16);  /* below RAM */
	r[5] = palisade_utpm(PAL_OP_RANDOM, 0, 0, (void *)0x200000, 8);      /* doorbell page */
	r[6] = palisade_utpm(PAL_OP_RANDOM, 0, 0, ok, sizeof ok);            /* fine */
	r[7] = palisade_utpm(PAL_OP_LOG, "from rodata", 11, 0, 0);           /* reading the image: fine */
	r[8] = palisade_utpm(PAL_OP_RANDOM, 0, 0, (void *)0x30000000, 16);   /* unmapped */
	r[9] = palisade_utpm(0x7fffffff, 0, 0, 0, 0);                        /* unknown op */
	(void)ro_probe;
	pal_output(r, sizeof r);
}

int32_t pal_main(const uint8_t *in, uint32_t in_len)
{
	calls++;
	if (in_len == 0)
		return 0;
	switch (in[0]) {
	case 'n': return 0;
	case 'e': pal_output(in + 1, in_len - 1); return 0;
	case 'c': out64(calls); return 0;
	case 'd': out64(seeded++); return 0;
	case 's': return in_len >= 5 ? (int32_t)((uint32_t)in[1] | (uint32_t)in[2] << 8 |
						 (uint32_t)in[3] << 16 | (uint32_t)in[4] << 24) : -1;
	case 'x': {
		uint8_t d[PAL_DIGEST_SIZE];
		pal_sha256(in + 1, in_len - 1, d);
		return pal_extend(1, d);
	}
	case 'b': bad_hostcalls(); return 0;
	case 'o': { /* output of in[1] MiB from RAM (the stack region is fine to read) */
		return (int32_t)-pal_output((const void *)0x10000000, (uint32_t)in[1] << 20);
	}
	/* Attacks: each must fault. */
	case 'W': *(volatile uint8_t *)(uintptr_t)&pal_main = 0xcc; return 1;  /* write code */
	case 'P': *(volatile uint64_t *)0x2008 = 0x2007; return 1;             /* write page tables */
	case 'G': *(volatile uint64_t *)0x1008 = 0; return 1;                  /* write GDT */
	case 'R': return (int32_t)*(volatile uint64_t *)0x1008;               /* read GDT */
	case 'U': ((void (*)(void))0x30000000)(); return 1;                   /* jump to unmapped */
	case 'X': { /* execute RAM (NX) */
		static uint8_t ret = 0xc3;
		((void (*)(void))&ret)();
		return 1;
	}
	case 'D': return (int32_t)*(volatile uint32_t *)0x200000;            /* read the doorbell */
	case 'L': for (;;) __asm__ volatile("" ::: "memory");                /* infinite loop */
	case 'O': return (int32_t)recurse(1);                                  /* stack overflow */
	case 'h': __asm__ volatile("hlt"); return 1;
	case 'i': __asm__ volatile("outb %%al, $0x80" ::"a"(0)); return 1;
	case 'I': { uint8_t v; __asm__ volatile("inb $0x60, %0" : "=a"(v)); return v; }
	case 'C': __asm__ volatile("cli"); return 1;
	case 'M': __asm__ volatile("wrmsr" ::"c"(0xc0000080), "a"(0), "d"(0)); return 1;
	case '3': __asm__ volatile("mov %0, %%cr3" ::"r"(0x2000ull)); return 1;
	case 'u': __asm__ volatile("ud2"); return 1;
	case 'z': { volatile int a = 1, b = 0; return a / b; }                 /* #DE */
	}
	{ /* unknown command: report what arrived */
		uint64_t r[3] = {(uint64_t)(uintptr_t)in, in_len, 0};
		memcpy(&r[2], in, in_len < 8 ? in_len : 8);
		pal_output(r, sizeof r);
	}
	return -2;
}
