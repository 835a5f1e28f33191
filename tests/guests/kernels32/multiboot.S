# summary: test kernel: multiboot v1 (ELF32 with a multiboot header); prints what the boot information says
#
# With --mem 4M --cmdline "hello world", expected stdout:
#   "multiboot: EAX = 0x2BADB002\n"
#   "mem_lower 640 KiB, mem_upper 3072 KiB\n"
#   "memory map: 3 entries\n"
#   "boot loader: mini-kvm\n"
#   "cmdline: hello world\n"
# status 0; status 1 if EAX does not hold the multiboot magic.

.include "hypercall.inc"

    .equ MULTIBOOT_MAGIC, 0x1badb002
    .equ MULTIBOOT_FLAGS, 0x00000002        # bit 1: we want the memory information

    .section .multiboot, "a"
    .balign 4
    .long MULTIBOOT_MAGIC
    .long MULTIBOOT_FLAGS
    .long -(MULTIBOOT_MAGIC + MULTIBOOT_FLAGS)

    .code32
    .text
    .globl _start
_start:
    cmp $0x2badb002, %eax
    jne not_multiboot
    mov %ebx, %edi                  # EDI = the multiboot information
    say32 "multiboot: EAX = 0x2BADB002\n"
    say32 "mem_lower "
    mov 4(%edi), %ebx
    hypercall HC_PUTNUM
    say32 " KiB, mem_upper "
    mov 8(%edi), %ebx
    hypercall HC_PUTNUM
    say32 " KiB\n"
    say32 "memory map: "
    mov 44(%edi), %eax              # mmap_length: bytes; each entry is 24
    xor %edx, %edx
    mov $24, %ecx
    div %ecx
    mov %eax, %ebx
    hypercall HC_PUTNUM
    say32 " entries\n"
    say32 "boot loader: "
    mov 64(%edi), %esi
    call print_string
    hypercall HC_NEWLINE
    say32 "cmdline: "
    mov 16(%edi), %esi
    call print_string
    hypercall HC_NEWLINE
    xor %ebx, %ebx
    hypercall HC_EXIT
not_multiboot:
    mov $1, %ebx
    hypercall HC_EXIT

# print_string: the NUL-terminated string at ESI, with one WRITE.
print_string:
    mov %esi, %ebx
    xor %ecx, %ecx
1:  cmpb $0, (%esi, %ecx)
    je 2f
    inc %ecx
    jmp 1b
2:  hypercall HC_WRITE
    ret
