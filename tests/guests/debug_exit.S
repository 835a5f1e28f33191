# summary: test: QEMU conventions: prints on the debug console (0xe9), exits through isa-debug-exit (0xf4)
#
# Expected stdout: "bye\n"; exit status (0x10 << 1) | 1 = 33, as QEMU's isa-debug-exit gives.

.include "hypercall.inc"

    .code16
    .text
    .globl _start
_start:
    mov $message, %si
    mov $DEBUGCON, %dx
next_char:
    lodsb
    test %al, %al
    jz leave
    out %al, (%dx)
    jmp next_char
leave:
    mov $0x10, %al
    out %al, $0xf4              # isa-debug-exit: status (0x10 << 1) | 1
    hlt                         # not reached

message:
    .asciz "bye\n"
