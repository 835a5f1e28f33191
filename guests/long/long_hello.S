# summary: 64-bit long mode: RIP-relative addressing, 64-bit registers, WRITE and PUTNUM
#
# Output: "Hello from 64-bit long mode!\n2^40 = 1099511627776\n", then EXIT 0.
#
# mini-kvm starts this guest directly in long mode (docs/memory-map.md): EFER.LME/LMA, CR4.PAE and
# CR0.PG set, CR3 pointing at 4-level page tables that identity-map RAM with 2 MiB pages, CS = 0x18
# (a 64-bit code segment), RIP = 0x10000. A real CPU cannot be put there in one step: it must
# enable protected mode, build page tables, set CR4.PAE, EFER.LME, then CR0.PG and far-jump to a
# 64-bit segment. KVM_SET_SREGS lets the VMM write the end state directly.
#
# Hypercall arguments are full 64-bit registers here: PUTNUM prints RBX, all 64 bits of it.

.include "hypercall.inc"

    .code64
    .text
    .globl _start
_start:
    lea message(%rip), %rbx     # RIP-relative: the usual way 64-bit code addresses its data
    mov $message_len, %ecx
    hypercall HC_WRITE

    lea power(%rip), %rbx
    mov $power_len, %ecx
    hypercall HC_WRITE
    mov $1, %ebx
    shl $40, %rbx               # 2^40: does not fit in 32 bits
    hypercall HC_PUTNUM
    hypercall HC_NEWLINE

    xor %ebx, %ebx
    hypercall HC_EXIT

message:
    .ascii "Hello from 64-bit long mode!\n"
    .equ message_len, . - message
power:
    .ascii "2^40 = "
    .equ power_len, . - power
