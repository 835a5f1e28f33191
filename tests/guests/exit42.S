# summary: test: prints nothing and exits with status 42
#
# Input: none.
# Expected stdout: empty. Expected exit status: 42.

.include "hypercall.inc"

    .code16
    .text
    .globl _start
_start:
    mov $42, %bx
    hypercall HC_EXIT
