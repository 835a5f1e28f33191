# summary: the smallest guest: one `hlt`, one VM exit
#
# With interrupts disabled (the reset state: IF=0) and no interrupt controller, `hlt` can never be
# woken up, so KVM hands it to the VMM as KVM_EXIT_HLT and mini-kvm ends the guest with status 0.

    .code16
    .text
    .globl _start
_start:
    hlt
