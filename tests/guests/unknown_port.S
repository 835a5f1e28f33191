# summary: test: reads from an unassigned port return all ones, writes are ignored
#
# Input: none.
# Expected stdout, exactly: "255\n65535\n". Expected exit status: 0.
#
# Like an ISA bus with nothing answering: an 8-bit `in` from port 0x1234 gives 0xFF, a 16-bit one
# 0xFFFF. The writes to 0x1234 and to 0x80 (the POST diagnostic port) must be ignored, not fatal.

.include "hypercall.inc"

    .equ NO_DEVICE, 0x1234
    .equ POST_PORT, 0x80

    .code16
    .text
    .globl _start
_start:
    mov $NO_DEVICE, %dx
    in (%dx), %al               # 8-bit read
    mov %al, %bl
    xor %bh, %bh                # BX = AL, zero-extended
    hypercall HC_PUTNUM         # 255
    hypercall HC_NEWLINE

    mov $NO_DEVICE, %dx
    in (%dx), %ax               # 16-bit read
    mov %ax, %bx
    hypercall HC_PUTNUM         # 65535
    hypercall HC_NEWLINE

    mov $0x55, %al
    mov $NO_DEVICE, %dx
    out %al, (%dx)              # ignored
    mov $POST_PORT, %dx
    out %al, (%dx)              # ignored

    xor %bx, %bx                # status 0
    hypercall HC_EXIT
