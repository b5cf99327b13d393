/* entry.c — the wasm32 binding of the PAL ABI (docs/abi.md §5): the palisade.utpm import and
 * the palisade_alloc / palisade_entry exports. wasm-ld exports the memory itself. */
#include "../palisade.h"

/* The import itself. palisade_utpm (palisade.h) wraps it: the import attribute has to be
 * visible where the call is made, and palisade.h is shared with the x86-64 target. */
__attribute__((import_module("palisade"), import_name("utpm"))) int64_t
palisade_utpm_import(uint32_t op, uint32_t req, uint32_t req_len, uint32_t resp,
		     uint32_t resp_cap);

int64_t palisade_utpm(uint32_t op, const void *req, uint32_t req_len, void *resp,
		      uint32_t resp_cap)
{
	return palisade_utpm_import(op, (uint32_t)(uintptr_t)req, req_len,
				    (uint32_t)(uintptr_t)resp, resp_cap);
}

/* First byte after the linker's static data and stack. */
extern unsigned char __heap_base;

#define WASM_PAGE 65536u

/* palisade_alloc returns the input buffer: always the same region at __heap_base, grown to
 * fit (the engine calls it once per call, before palisade_entry; the input is only valid for
 * that call). A PAL that grows memory for its own use must do it above the input. */
__attribute__((export_name("palisade_alloc"))) uint32_t palisade_alloc(uint32_t size)
{
	uint32_t base = ((uint32_t)(uintptr_t)&__heap_base + 15u) & ~15u;
	uint64_t end = (uint64_t)base + size;
	uint64_t have = (uint64_t)__builtin_wasm_memory_size(0) * WASM_PAGE;

	if (end > have) {
		uint64_t pages = (end - have + WASM_PAGE - 1) / WASM_PAGE;
		if (__builtin_wasm_memory_grow(0, (uint32_t)pages) == (size_t)-1)
			return 0;
	}
	return base;
}

__attribute__((export_name("palisade_entry"))) int32_t palisade_entry(uint32_t ptr,
								     uint32_t len)
{
	return pal_main((const uint8_t *)(uintptr_t)ptr, len);
}
