/* Palisade native x86-64 binding (docs/abi.md §6): the entry stub and the µTPM hostcall.
 *
 * At entry the engine has set, in guest ring 3 with interrupts off:
 *   rdi = input pointer, rsi = input length,
 *   rdx = start and rcx = end of the free memory the PAL may use as it likes,
 *   rsp = top of the 1 MiB stack (16-byte aligned).
 */
	.set PALISADE_DOORBELL, 0x200000	/* a store here is a hostcall */
	.set PALISADE_DONE,     0x200008	/* an 8-byte store here ends the call */

	.section .text.entry, "ax"
	.globl _start
	.type _start, @function
_start:
	xorl	%ebp, %ebp
	andq	$-16, %rsp
	call	pal_main		/* int32_t pal_main(const uint8_t *in, uint32_t in_len) */
	movslq	%eax, %rax
	movq	%rax, PALISADE_DONE	/* the host ends the call here and never resumes it */
	ud2
	.size _start, . - _start

/* int64_t palisade_utpm(uint32_t op, const void *req, uint32_t req_len, void *resp,
 *                       uint32_t resp_cap)
 * The arguments already sit where the host reads them (edi, rsi, edx, rcx, r8d: the System V
 * argument registers); the host writes the result into rax and resumes after the store. */
	.text
	.globl palisade_utpm
	.type palisade_utpm, @function
palisade_utpm:
	movl	$0, PALISADE_DOORBELL
	ret
	.size palisade_utpm, . - palisade_utpm

	.section .note.GNU-stack, "", @progbits
