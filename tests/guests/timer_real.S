# summary: test: real-mode timer interrupts from KVM's PIT through its PIC (needs --irqchip)
#
# Expected stdout with --irqchip: "3 ticks\n", status 0. Without --irqchip there is no interrupt
# controller: the `hlt` with interrupts on can never end (mini-kvm: status 127).

.include "hypercall.inc"

    .code16
    .text
    .globl _start
_start:
    # IVT entry 0x20 (4 bytes at 0x80) -> timer, in segment CS.
    xor %ax, %ax
    mov %ax, %es
    movw $timer, %es:0x80
    mov %cs, %es:0x82
    # PIC: IRQ 0-7 at vectors 0x20-0x27, only IRQ 0 unmasked.
    mov $0x11, %al
    out %al, $0x20
    mov $0x20, %al
    out %al, $0x21
    mov $0x04, %al
    out %al, $0x21
    mov $0x01, %al
    out %al, $0x21
    mov $0xfe, %al
    out %al, $0x21
    # PIT channel 0, mode 2, 100 Hz.
    mov $0x34, %al
    out %al, $0x43
    mov $(11932 & 0xff), %al
    out %al, $0x40
    mov $(11932 >> 8), %al
    out %al, $0x40
    sti
1:  hlt
    cmpw $3, %cs:ticks
    jb 1b
    cli
    mov $3, %bx
    hypercall HC_PUTNUM
    say16 " ticks\n"
    xor %bx, %bx
    hypercall HC_EXIT

timer:
    incw %cs:ticks
    push %ax
    mov $0x20, %al
    out %al, $0x20                  # end of interrupt
    pop %ax
    iret                            # real-mode iret: KVM's emulator handles this one

ticks:
    .word 0
