# summary: UART output: one `out` per byte on the 16550 at 0x3f8
#
# The classic first guest. Each character of the message is written to the transmit register of
# the emulated 16550 UART (COM1, port 0x3f8). Every `out` leaves the guest: the CPU stops, KVM
# returns from KVM_RUN with exit reason KVM_EXIT_IO, mini-kvm prints the byte and resumes the guest.
# 12 characters + the EXIT hypercall = 13 VM exits.

.include "hypercall.inc"

    .code16
    .text
    .globl _start
_start:
    mov $message, %si           # DS:SI -> the message (DS = CS = 0x1000)
    mov $COM1, %dx
next_char:
    lodsb                       # AL = [DS:SI++]
    test %al, %al               # the message ends with a zero byte
    jz done
    out %al, (%dx)              # one VM exit per byte
    jmp next_char
done:
    xor %bx, %bx                # status 0
    hypercall HC_EXIT

message:
    .asciz "Hello, KVM!\n"
