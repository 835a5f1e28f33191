# summary: test: prints forever and never ends a line
#
# Input: none.
# Expected stdout: "x" again and again, with no newline ever. Labelled (with other guests),
# mini-kvm must cut the line every 64 KiB with a marker instead of keeping it all in memory.

.include "hypercall.inc"

    .code16
    .text
    .globl _start
_start:
    say16 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    jmp _start
