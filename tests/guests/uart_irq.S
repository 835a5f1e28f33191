# summary: test: interrupt-driven UART input: IRQ 4 wakes `hlt`, the handler echoes (needs --irqchip)
#
# Input: "abc\n". Expected stdout with --irqchip: "abc\n", status 0.
#
# The guest enables the UART's "received data available" interrupt and sleeps in `hlt`: it never
# polls. mini-kvm's UART raises IRQ 4 when input arrives (src/devices/legacy/serial.rs), KVM's
# PIC delivers it at vector 0x24, and the handler drains the receive buffer.

.include "hypercall.inc"

    .equ UART_DATA, COM1
    .equ UART_IER,  COM1 + 1
    .equ UART_MCR,  COM1 + 4
    .equ UART_LSR,  COM1 + 5

    .code16
    .text
    .globl _start
_start:
    xor %ax, %ax                    # IVT entry 0x24 (at 0x90) -> uart_interrupt
    mov %ax, %es
    movw $uart_interrupt, %es:0x90
    mov %cs, %es:0x92
    mov $0x11, %al                  # PIC: vectors 0x20-0x27, only IRQ 4 unmasked
    out %al, $0x20
    mov $0x20, %al
    out %al, $0x21
    mov $0x04, %al
    out %al, $0x21
    mov $0x01, %al
    out %al, $0x21
    mov $0xef, %al
    out %al, $0x21
    mov $UART_MCR, %dx              # OUT2: the PC wiring that lets the UART interrupt through
    mov $0x08, %al
    out %al, (%dx)
    mov $UART_IER, %dx              # interrupt when data arrives
    mov $0x01, %al
    out %al, (%dx)
    sti
1:  hlt
    cmpb $0, %cs:done
    je 1b
    xor %bx, %bx
    hypercall HC_EXIT

uart_interrupt:
    push %ax
    push %dx
2:  mov $UART_LSR, %dx
    in (%dx), %al
    test $0x01, %al                 # data ready?
    jz 3f
    mov $UART_DATA, %dx
    in (%dx), %al
    out %al, (%dx)                  # echo
    cmp $'\n', %al
    jne 2b
    movb $1, %cs:done
3:  mov $0x20, %al
    out %al, $0x20
    pop %dx
    pop %ax
    iret

done:
    .byte 0
