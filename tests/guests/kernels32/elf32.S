# summary: test kernel: an ELF32 executable linked at 1 MiB; mini-kvm starts it in 32-bit protected mode at e_entry
#
# Expected stdout: "ELF32 kernel: protected mode at e_entry 1048576\n", status 0.

.include "hypercall.inc"

    .code32
    .text
    .globl _start
_start:
    mov $message, %ebx
    mov $message_len, %ecx
    hypercall HC_WRITE
    call 1f                         # where are we? EIP of the next instruction...
1:  pop %ebx
    sub $(1b - _start), %ebx        # ...minus its distance from _start: the entry point
    hypercall HC_PUTNUM
    hypercall HC_NEWLINE
    xor %ebx, %ebx
    hypercall HC_EXIT

    .section .rodata
message:
    .ascii "ELF32 kernel: protected mode at e_entry "
    .equ message_len, . - message
