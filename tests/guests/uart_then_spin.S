# summary: test: writes a line to the UART, then spins forever without another exit
#
# Expected stdout: "spinning\n"; run it with --timeout. With coalesced I/O the UART writes make
# no exit, and nothing after them does either: they reach stdout only because mini-kvm drains
# the coalesced ring when it stops the guest.

.include "hypercall.inc"

    .code16
    .text
    .globl _start
_start:
    mov $message, %si
    mov $COM1, %dx
next_char:
    lodsb
    test %al, %al
    jz spin
    out %al, (%dx)
    jmp next_char
spin:
    cli
    jmp spin

message:
    .asciz "spinning\n"
