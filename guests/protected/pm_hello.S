# summary: 32-bit protected mode, paging off: one WRITE hypercall with a 32-bit pointer
#
# Output: "Hello from 32-bit protected mode!\n", then EXIT 0.
#
# mini-kvm starts this guest with CR0.PE = 1 and flat segments from its GDT (docs/memory-map.md):
# CS = 0x08 (32-bit code), DS = ES = SS = 0x10, all with base 0 and a 4 GiB limit, EIP = 0x10000,
# ESP = 0x10000. With base 0, the address of a label *is* its linear address, which is what the
# hypercall ABI takes as a pointer, and with paging off, also its physical address.

.include "hypercall.inc"

    .code32
    .text
    .globl _start
_start:
    mov $message, %ebx          # arg0: pointer (a 32-bit linear address; no segment arithmetic)
    mov $message_len, %ecx      # arg1: length
    hypercall HC_WRITE          # one VM exit for the whole line

    xor %ebx, %ebx              # status 0
    hypercall HC_EXIT

message:
    .ascii "Hello from 32-bit protected mode!\n"
    .equ message_len, . - message
