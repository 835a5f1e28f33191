# summary: test: a write beyond the end of RAM (an MMIO exit nobody handles)
#
# Input: none. RAM: the default 1 MiB.
# Expected stdout, exactly: "poke\n"; then the write to linear (= physical) address 0x100000 is
# not RAM: KVM exits with KVM_EXIT_MMIO, which mini-kvm cannot handle, and the guest is stopped
# with an error.
#
# ES:offset 0xFFFF:0x0010 = 0xFFFF0 + 0x10 = 0x100000: the first byte after 1 MiB. (On an 8086 this
# wrapped around to 0; KVM's guest has no A20 gate, so it really is 0x100000.)

.include "hypercall.inc"

    .code16
    .text
    .globl _start
_start:
    say16 "poke\n"

    mov $0xFFFF, %ax
    mov %ax, %es
    movb $0x2a, %es:0x10        # write one byte to linear 0x100000

    xor %bx, %bx                # not reached: the VMM stops the guest on the MMIO exit
    hypercall HC_EXIT
