# summary: test: output via UART, port 0xe9, PUTCHAR and WRITE stays in order
#
# Input: none.
# Expected stdout, exactly: "ABCD\n". Expected exit status: 0.

.include "hypercall.inc"

    .code16
    .text
    .globl _start
_start:
    mov $'A', %al
    mov $COM1, %dx
    out %al, (%dx)              # "A": UART transmit register

    mov $'B', %al
    mov $DEBUGCON, %dx
    out %al, (%dx)              # "B": debug console

    mov $'C', %bx
    hypercall HC_PUTCHAR        # "C": hypercall, one character

    say16 "D\n"                 # "D\n": hypercall, one buffer

    xor %bx, %bx                # status 0
    hypercall HC_EXIT
