# summary: UART output: one `out` per byte on the 16550 at 0x3f8
#
# The classic first guest. Each character of the message is written to the transmit register of
# the emulated 16550 UART (COM1, port 0x3f8). An `out` leaves the guest: the CPU stops, KVM
# returns from KVM_RUN with exit reason KVM_EXIT_IO, mini-kvm prints the byte and resumes the guest.
# With --no-coalesce that is every byte: 12 characters + the EXIT hypercall = 13 VM exits. By
# default only the first byte exits; it makes mini-kvm put the UART's transmit register on KVM's
# coalesced-I/O ring, where KVM queues the other 11 without leaving the guest, and mini-kvm prints
# them at the next exit, the EXIT hypercall: 2 VM exits (mini-kvm run --stats hello).

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
    out %al, (%dx)              # a VM exit, or a write queued on the coalesced ring
    jmp next_char
done:
    xor %bx, %bx                # status 0
    hypercall HC_EXIT

message:
    .asciz "Hello, KVM!\n"
