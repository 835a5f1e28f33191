# summary: test kernel: an ELF64 executable linked at 1 MiB; mini-kvm starts it in long mode at e_entry
#
# Expected stdout: "ELF64 kernel: long mode, RIP 1048576\n", status 0.

.include "hypercall.inc"

    .code64
    .text
    .globl _start
_start:
    lea message(%rip), %rbx
    mov $message_len, %ecx
    hypercall HC_WRITE
    lea _start(%rip), %rbx          # the entry point, as the CPU sees it
    hypercall HC_PUTNUM
    hypercall HC_NEWLINE
    xor %ebx, %ebx
    hypercall HC_EXIT

message:
    .ascii "ELF64 kernel: long mode, RIP "
    .equ message_len, . - message
