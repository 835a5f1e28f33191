# summary: test kernel: multiboot v1; prints one line on the debug console, then `cli; hlt`
#
# The way a first hobby kernel ends (the OSDev "Bare Bones" kernel does this): interrupts off,
# then `hlt` for ever. With the in-kernel irqchip that every protected-mode guest gets, KVM
# keeps such a vCPU asleep inside KVM_RUN and never tells the VMM; mini-kvm must still notice
# that the guest has ended.
#
# Expected stdout, exactly: "halting\n"; status 0 (a `hlt` with interrupts off ends a guest).

    .equ MULTIBOOT_MAGIC, 0x1badb002
    .equ MULTIBOOT_FLAGS, 0

    .section .multiboot, "a"
    .balign 4
    .long MULTIBOOT_MAGIC
    .long MULTIBOOT_FLAGS
    .long -(MULTIBOOT_MAGIC + MULTIBOOT_FLAGS)

    .code32
    .text
    .globl _start
_start:
    mov $message, %esi
    mov $message_len, %ecx
    mov $0xe9, %dx
    rep outsb                       # the debug console, QEMU's convention too

    cli
1:  hlt                             # nothing can wake us: no interrupt is allowed
    jmp 1b

    .section .rodata
message:
    .ascii "halting\n"
    .equ message_len, . - message
