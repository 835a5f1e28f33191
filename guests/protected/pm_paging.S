# summary: 32-bit paging, 4 MiB pages: writes through the 0x80000000 alias, reads via the identity map (hardware KVM only)
# mode: Protected { paging: true }
#
# Output:
#   "written at 0x80020000, read at 0x00020000\n"
#   "the same dword at both addresses\n"
#   "a hypercall pointer in the alias works too\n"
# then EXIT 0 (EXIT 1 if the two addresses disagree).
#
# With `paging: true`, mini-kvm starts this guest with CR0.PG = 1 and CR3 pointing at a page
# directory of 4 MiB pages (CR4.PSE) that maps guest RAM twice: at its own address (the identity
# map, so this code keeps running at 0x10000) and again from 0x80000000
# (src/arch/x86/paging.rs). So linear 0x80020000 and linear 0x00020000 are the same physical byte.
#
# This needs a host KVM that runs 32-bit paging: our development hosts' kvm_pvm does not, and
# mini-kvm says so instead of starting it. It runs in the hardware-KVM rig (tests/hw-kvm).

.include "hypercall.inc"

    .equ ALIAS,   0x80000000        # where the second mapping of RAM starts
    .equ SCRATCH, 0x20000           # a free page of RAM above this image

    .code32
    .text
    .globl _start
_start:
    # Copy the first line to ALIAS + SCRATCH: every write goes through the alias mapping.
    mov $line1, %esi
    mov $ALIAS + SCRATCH, %edi
    mov $line1_len, %ecx
    cld
    rep movsb
    # Print it from SCRATCH, the identity-mapped address: the bytes are there.
    mov $SCRATCH, %ebx
    mov $line1_len, %ecx
    hypercall HC_WRITE

    # The same with one dword, compared by the CPU itself.
    movl $0xcafebabe, ALIAS + SCRATCH + 0x100
    cmpl $0xcafebabe, SCRATCH + 0x100
    jne mismatch
    mov $line2, %ebx
    mov $line2_len, %ecx
    hypercall HC_WRITE

    # Hypercall pointers are linear addresses: the VMM translates them through these page
    # tables (KVM_TRANSLATE), so a pointer into the alias works as well.
    mov $ALIAS + line3, %ebx
    mov $line3_len, %ecx
    hypercall HC_WRITE

    xor %ebx, %ebx
    hypercall HC_EXIT

mismatch:
    mov $1, %ebx
    hypercall HC_EXIT

line1:
    .ascii "written at 0x80020000, read at 0x00020000\n"
    .equ line1_len, . - line1
line2:
    .ascii "the same dword at both addresses\n"
    .equ line2_len, . - line2
line3:
    .ascii "a hypercall pointer in the alias works too\n"
    .equ line3_len, . - line3
