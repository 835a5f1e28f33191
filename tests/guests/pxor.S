# summary: test: enables SSE in real mode, then `pxor` (not emulated by KVM)
#
# Input: none.
# On hardware KVM: stdout "pxor:ok\n", exit status 0.
# On a host where KVM emulates every guest instruction: stdout "pxor:", then the VMM reports an
# emulation failure (KVM_EXIT_INTERNAL_ERROR) and the guest is stopped.
#
# SSE instructions raise #UD unless the operating system has declared that it saves the SSE state
# (CR4.OSFXSR, bit 9) and handles SIMD exceptions (CR4.OSXMMEXCPT, bit 10), and CR0.EM (bit 2, "no
# FPU") is clear; CR0.MP (bit 1) is set as for any FPU. Moves to and from control registers always
# transfer 32 bits, even in 16-bit code; the `and`/`or` on EAX get a 0x66 operand-size prefix.

.include "hypercall.inc"

    .equ CR0_MP,          1 << 1
    .equ CR0_EM,          1 << 2
    .equ CR4_OSFXSR,      1 << 9
    .equ CR4_OSXMMEXCPT,  1 << 10

    .code16
    .text
    .globl _start
_start:
    mov %cr0, %eax
    and $~CR0_EM, %eax          # an FPU is present
    or $CR0_MP, %eax
    mov %eax, %cr0

    mov %cr4, %eax
    or $(CR4_OSFXSR | CR4_OSXMMEXCPT), %eax
    mov %eax, %cr4

    say16 "pxor:"

    pxor %xmm0, %xmm0           # XMM0 = 0

    mov $ok, %bx
    mov $ok_len, %cx
    hypercall HC_WRITE          # "ok\n"

    xor %bx, %bx                # status 0
    hypercall HC_EXIT

ok:
    .ascii "ok\n"
    .equ ok_len, . - ok
