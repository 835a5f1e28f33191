# Solution to exercise ex02 (book/src/exercises.md): `hello` through one WRITE hypercall.
#
# guests/real/hello.S sends its 12 bytes to the UART one `out` at a time. This version gives the
# VMM the message's address and length in one WRITE: the VMM reads the bytes out of guest memory
# itself. With --no-coalesce, `mini-kvm run --stats` counts 2 VM exits instead of 13: WRITE and
# EXIT, both on port 0x500, and none on the UART's 0x3f8.

.include "hypercall.inc"

    .code16
    .text
    .globl _start
_start:
    mov $message, %bx           # arg0: the message, an offset in DS (DS = CS = 0x1000)
    mov $message_length, %cx    # arg1: its length
    hypercall HC_WRITE          # one VM exit for the whole message; AX = bytes written
    xor %bx, %bx                # status 0
    hypercall HC_EXIT

message:
    .ascii "Hello, KVM!\n"
    .equ message_length, . - message
