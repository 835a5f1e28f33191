# summary: test: a flat 32-bit program that reports whether paging is on, and reads RAM through the 0x80000000 alias when it is
#
# Expected stdout with --mode protected: "protected mode, paging off\n"; with --mode protected
# --paging (hardware KVM only): "protected mode, paging on\nalias ok\n". Status 0.

.include "hypercall.inc"

    .code32
    .text
    .globl _start
_start:
    mov %cr0, %eax
    test $0x80000000, %eax          # CR0.PG
    jnz paging_on
    mov $off, %ebx
    mov $off_len, %ecx
    hypercall HC_WRITE
    jmp done
paging_on:
    mov $on, %ebx
    mov $on_len, %ecx
    hypercall HC_WRITE
    mov $0x80000000 + alias, %ebx   # the same bytes, through the alias mapping
    mov $alias_len, %ecx
    hypercall HC_WRITE
done:
    xor %ebx, %ebx
    hypercall HC_EXIT

off:
    .ascii "protected mode, paging off\n"
    .equ off_len, . - off
on:
    .ascii "protected mode, paging on\n"
    .equ on_len, . - on
alias:
    .ascii "alias ok\n"
    .equ alias_len, . - alias
