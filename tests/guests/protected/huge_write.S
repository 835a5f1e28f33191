# summary: test: one WRITE of 1.5 GiB (run with --mode protected --mem 2G)
#
# Input: none.
# Expected: 1.5 GiB of zero bytes on stdout, in one hypercall, then exit status 0. mini-kvm must
# move them in bounded chunks (its memory stays small) and give up between chunks when the guest
# is stopped (--timeout), instead of copying the whole buffer first.

.include "hypercall.inc"

    .code32
    .text
    .globl _start
_start:
    mov $0x100000, %ebx                  # from 1 MiB: zeroed RAM
    mov $0x60000000, %ecx                # 1.5 GiB
    hypercall HC_WRITE
    xor %ebx, %ebx
    hypercall HC_EXIT
