# Solution to exercise ex07 (book/src/exercises.md): a guest that ends in a triple fault.
#
# It prints a line, makes its interrupt table unusable, and divides by zero. The divide error
# (vector 0) cannot be delivered: its entry lies beyond the table's limit. The CPU tries the
# double fault (vector 8) instead, which cannot be delivered either, and shuts down: KVM returns
# KVM_EXIT_SHUTDOWN, and mini-kvm exits with status 125 and a report of the vCPU's registers.
#
# Why the table's base is 0x200000, outside the guest's 1 MiB of RAM: on a host without
# hardware support for real mode (or a software KVM), KVM's instruction emulator runs this code,
# and it does not check the limit of a real-mode interrupt table. With the base outside RAM it
# cannot read the entry at all, and it shuts the guest down too. Hardware and emulator agree.

.include "hypercall.inc"

    .code16
    .text
    .globl _start
_start:
    say16 "before\n"
    lidt unusable_idt           # IDTR = base 0x200000, limit 0
    xor %cx, %cx
    div %cx                     # divide by zero: #DE -> #DF -> triple fault
    hlt                         # never reached

# The 6-byte operand of `lidt`: the limit, then the base (24 bits of it in 16-bit code).
unusable_idt:
    .word 0                     # limit 0: not even one 4-byte entry fits
    .long 0x200000              # base: 2 MiB, outside the guest's RAM
