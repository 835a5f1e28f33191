# summary: test: `popcnt`, an instruction KVM's emulator does not know
#
# Input: none.
# On hardware KVM (the guest runs natively): stdout "popcnt:4\n", exit status 0.
# On a host where KVM emulates every guest instruction: stdout "popcnt:", then the VMM reports an
# emulation failure (KVM_EXIT_INTERNAL_ERROR) and the guest is stopped.

.include "hypercall.inc"

    .code16
    .text
    .globl _start
_start:
    say16 "popcnt:"

    mov $0x00F0, %ax            # four bits set
    popcnt %ax, %bx             # BX = number of set bits in AX = 4
    hypercall HC_PUTNUM
    hypercall HC_NEWLINE

    xor %bx, %bx                # status 0
    hypercall HC_EXIT
