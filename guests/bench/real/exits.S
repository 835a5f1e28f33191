# summary: benchmark: 20,000 CLOCK hypercalls in a loop, then EXIT (mini-kvm bench: exit round trip)
#
# Real mode, flat, like the real-mode guests. Every iteration is one VM exit through the
# hypercall port; the loop around it is a handful of instructions. `mini-kvm bench` runs it in
# mini-kvm and, as the floor, in a bare loop written directly on kvm-ioctls.

.include "hypercall.inc"

    .equ ITERATIONS, 20000

    .code16
    .text
    .globl _start
_start:
    mov $ITERATIONS, %di
again:
    hypercall HC_CLOCK          # one exit
    dec %di
    jnz again
    xor %bx, %bx
    hypercall HC_EXIT
