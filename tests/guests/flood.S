# summary: test: prints lines forever (for --timeout with a stdout nobody reads)
#
# Input: none.
# Expected stdout: "flood\n" again and again; the guest never stops by itself. With its stdout a
# pipe that nobody reads, the pipe fills up and mini-kvm's writes must wait; --timeout must still
# end the run.

.include "hypercall.inc"

    .code16
    .text
    .globl _start
_start:
    say16 "flood\n"
    jmp _start
