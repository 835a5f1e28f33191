# summary: test: loops forever without a VM exit (for --timeout)
#
# Input: none.
# Expected stdout, exactly: "looping\n"; then the guest never stops by itself: run it with
# --timeout 1, which must end it.
#
# With interrupts disabled, `jmp .` never leaves the guest.

.include "hypercall.inc"

    .code16
    .text
    .globl _start
_start:
    say16 "looping\n"

    cli
    jmp .                       # jump to itself, forever
