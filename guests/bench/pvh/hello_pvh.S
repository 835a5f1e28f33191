# summary: benchmark: "Hello, KVM!" on the debug console (0xe9), then isa-debug-exit (0xf4)
#
# A PVH kernel that runs unchanged on mini-kvm and on QEMU (`-M microvm -kernel`, with
# isa-debugcon at 0xe9 and isa-debug-exit at 0xf4): `mini-kvm bench` times both from process
# start to the first output byte and to the process's end. Exit status: (0 << 1) | 1 = 1.

# The PVH note (Xen's ELF note type 18, XEN_ELFNOTE_PHYS32_ENTRY): the 32-bit entry point.
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
_start:                             # e_entry: PVH loaders use the note's entry instead
    hlt

    .code32
pvh_entry:                          # 32-bit protected mode, paging off
    mov $message, %esi
    mov $0xe9, %dx
next_char:
    lodsb
    test %al, %al
    jz done
    out %al, (%dx)
    jmp next_char
done:
    xor %eax, %eax
    out %al, $0xf4                  # isa-debug-exit: status (0 << 1) | 1
    hlt

message:
    .asciz "Hello, KVM!\n"
