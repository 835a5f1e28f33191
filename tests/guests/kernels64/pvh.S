# summary: test kernel: an ELF64 with a PVH note; mini-kvm enters it at the note's 32-bit entry with hvm_start_info in EBX
#
# With --mem 2M --cmdline "pvh args", expected stdout:
#   "PVH: 32-bit entry, hvm_start_info magic 0x336ec578\n"
#   "memory map: 3 entries\n"
#   "cmdline: pvh args\n"
# status 0. Entered at e_entry (long mode) instead: status 3; a wrong magic: status 1.

.include "hypercall.inc"

# The PVH note (Xen's ELF note type 18, XEN_ELFNOTE_PHYS32_ENTRY): name "Xen", a 32-bit address.
    .section .note.pvh, "a", @note
    .balign 4
    .long 4                         # name size
    .long 4                         # descriptor size
    .long 18                        # type
    .asciz "Xen"
    .long pvh_entry

    .text
    .code64
    .globl _start
_start:                             # e_entry: mini-kvm must not start us here
    mov $3, %ebx
    hypercall HC_EXIT

    .code32
pvh_entry:
    cmpl $0x336ec578, (%ebx)        # hvm_start_info.magic
    jne bad_magic
    mov %ebx, %edi
    mov $line1, %ebx
    mov $line1_len, %ecx
    hypercall HC_WRITE
    mov $line2, %ebx
    mov $line2_len, %ecx
    hypercall HC_WRITE
    mov 48(%edi), %ebx              # memmap_entries
    hypercall HC_PUTNUM
    mov $line3, %ebx
    mov $line3_len, %ecx
    hypercall HC_WRITE
    mov $line4, %ebx
    mov $line4_len, %ecx
    hypercall HC_WRITE
    mov 24(%edi), %ebx              # cmdline_paddr (its low half: RAM is below 4 GiB)
    xor %ecx, %ecx
1:  cmpb $0, (%ebx, %ecx)
    je 2f
    inc %ecx
    jmp 1b
2:  hypercall HC_WRITE
    hypercall HC_NEWLINE
    xor %ebx, %ebx
    hypercall HC_EXIT
bad_magic:
    mov $1, %ebx
    hypercall HC_EXIT

line1:
    .ascii "PVH: 32-bit entry, hvm_start_info magic 0x336ec578\n"
    .equ line1_len, . - line1
line2:
    .ascii "memory map: "
    .equ line2_len, . - line2
line3:
    .ascii " entries\n"
    .equ line3_len, . - line3
line4:
    .ascii "cmdline: "
    .equ line4_len, . - line4
