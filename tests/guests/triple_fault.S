# summary: test: an exception with no usable IDT ends in a triple fault
#
# Input: none. RAM: the default 1 MiB (the table base 0x200000 below must not be RAM).
# Expected stdout, exactly: "before\n"; then the guest shuts down (KVM_EXIT_SHUTDOWN) and the VMM
# reports a triple fault. Nothing else is printed by the guest.
#
# How a real CPU gets there: in real mode the IDTR still bounds the interrupt vector table. After
# `lidt` of a table with limit 0, the divide error (#DE, vector 0, bytes 0..3) lies beyond the
# limit, so its delivery raises #GP; vector 13 is beyond the limit too, so that becomes a double
# fault (#DF, vector 8), also beyond the limit: triple fault, and the CPU shuts down.
#
# Why the table's base is 0x200000, beyond the 1 MiB of RAM, and why a divide error rather than
# `int $3`: KVM's instruction emulator, which runs real-mode code on some hosts (no hardware support
# for real mode, or a software KVM such as our test host's), does not check the IDT limit in real
# mode. With base 0 it would read the vector from the (zeroed) table at address 0, jump to
# 0000:0000 and run on. With the table outside RAM, KVM cannot read the vector when it delivers the
# exception, and it treats that failure as a triple fault. `int $3` is no good there: the emulator
# executes INT n itself, as part of the instruction, and on our test host the guest then simply
# runs on (no exit at all). With both measures, hardware and emulator agree: shutdown.

.include "hypercall.inc"

    .code16
    .text
    .globl _start
_start:
    say16 "before\n"

    lidt unusable_idt           # IDTR = base 0x200000, limit 0
    xor %cx, %cx
    div %cx                     # divide by zero: #DE -> #GP -> #DF -> triple fault
    hlt                         # never reached

# The 6-byte operand of `lidt`. With a 16-bit operand size, `lidt` takes 24 bits of the base.
unusable_idt:
    .word 0                     # limit: not even one 4-byte vector fits
    .long 0x200000              # base: 2 MiB, outside the guest's 1 MiB of RAM
