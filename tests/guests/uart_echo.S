# summary: test: echo bytes from the 16550 UART, polling its line status register
#
# Input: "abc\n".
# Expected stdout, exactly: "abc\n". Expected exit status: 0.
#
# For each byte: poll the line status register (0x3fd) until bit 0 (data ready) is set, read the
# receive buffer (0x3f8), write it to the transmit register (0x3f8). The guest stops after echoing
# a "\n"; the input must therefore contain one (the UART has no way to signal end of input).
# Every `in` and `out` is a VM exit.

.include "hypercall.inc"

    .equ UART_DATA, COM1        # read: receive buffer (RBR); write: transmit holding register (THR)
    .equ UART_LSR,  COM1 + 5    # line status register
    .equ LSR_DATA_READY, 0x01

    .code16
    .text
    .globl _start
_start:
next_byte:
    mov $UART_LSR, %dx
wait_for_data:
    in (%dx), %al
    test $LSR_DATA_READY, %al
    jz wait_for_data            # nothing received yet: ask again

    mov $UART_DATA, %dx
    in (%dx), %al               # AL = received byte
    out %al, (%dx)              # echo it
    cmp $'\n', %al
    jne next_byte

    xor %bx, %bx                # status 0
    hypercall HC_EXIT
