# summary: a loop and arithmetic: prints the digits 0 to 9 with PUTCHAR
#
# Output: "0123456789\n", then EXIT 0.
#
# The loop counter i lives in CX. Each digit is the character '0' + i: the digits are consecutive
# in ASCII, so adding the counter to the code of '0' gives the code of digit i. Every hypercall is
# one VM exit: 10 PUTCHARs + NEWLINE + EXIT = 12 exits.

.include "hypercall.inc"

    .code16
    .text
    .globl _start
_start:
    xor %cx, %cx                # i = 0
next_digit:
    mov %cx, %bx
    add $'0', %bx               # BX = '0' + i
    hypercall HC_PUTCHAR        # print it (the VMM changes only AX)
    inc %cx                     # i = i + 1
    cmp $10, %cx
    jb next_digit               # while i < 10

    hypercall HC_NEWLINE
    xor %bx, %bx                # status 0
    hypercall HC_EXIT
