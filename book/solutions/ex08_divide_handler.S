# Solution to exercise ex08 (book/src/exercises.md): a real-mode handler for the divide error,
# installed in the interrupt vector table (IVT).
#
# In real mode, the interrupt table is the IVT at address 0: 256 entries of 4 bytes, each an
# offset and a segment (offset first). A divide by zero is vector 0, so its entry is the 4 bytes
# at 0000:0000. The CPU pushes FLAGS, CS and IP, and jumps to the handler. The IP it pushes is
# the `div` itself (a fault, unlike a trap, points at the instruction that caused it): `iret`
# would run the `div` again, and fault again, for ever. This handler prints a line and exits.

.include "hypercall.inc"

    .code16
    .text
    .globl _start
_start:
    say16 "before\n"
    xor %ax, %ax
    mov %ax, %es                # ES = 0: the IVT's segment
    movw $divide_error, %es:0   # IVT[0]: the handler's offset...
    mov %cs, %es:2              # ...and its segment, ours (0x1000)
    xor %cx, %cx
    div %cx                     # divide by zero: #DE, vector 0
    hlt                         # never reached

divide_error:
    say16 "divide error\n"
    mov $3, %bx                 # exit status 3
    hypercall HC_EXIT
