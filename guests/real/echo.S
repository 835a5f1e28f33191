# summary: input: GETCHAR until end of input, echoing each byte
#
# Output: the input bytes, unchanged; then EXIT 0 at end of input.
#
# GETCHAR blocks until a byte is available and returns it in AX as 0x0000-0x00FF; at end of input it
# returns -1 = 0xFFFF. The test must compare the whole of AX: comparing only AL would take a
# data byte 0xFF for the end of input.

.include "hypercall.inc"

    .code16
    .text
    .globl _start
_start:
next_byte:
    hypercall HC_GETCHAR        # AX = next input byte, or 0xFFFF at end of input
    cmp $0xFFFF, %ax
    je end_of_input
    mov %ax, %bx                # BL = the byte
    hypercall HC_PUTCHAR
    jmp next_byte

end_of_input:
    xor %bx, %bx                # status 0
    hypercall HC_EXIT
