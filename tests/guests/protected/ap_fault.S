# summary: a fault on a secondary CPU: CPU 1 reads memory that is neither RAM nor a device
#
# Run with --mode protected --cpus 2 --mem 512K. The BSP enables its local APIC (KVM does not
# send IPIs from a software-disabled one), wakes CPU 1 (APIC ID 1) with INIT-SIPI-SIPI, as
# guests/protected/smp.S explains, then spins. CPU 1 starts in real mode at
# 0x11000 and reads 0x90000, past the end of the 512 KiB of RAM: an MMIO exit no device claims.
# mini-kvm must end the guest with status 127 and a report that names CPU 1.

.include "hypercall.inc"

    .equ LAPIC_ICR_LOW, 0xfee00300
    .equ LAPIC_ICR_HIGH, 0xfee00310

    .code32
    .text
    .globl _start
_start:
    say32 "waking CPU 1\n"
    orl $0x100, 0xfee000f0               # enable the local APIC (spurious-interrupt register)
    movl $(1 << 24), LAPIC_ICR_HIGH      # destination: APIC ID 1
    movl $0x4500, LAPIC_ICR_LOW          # INIT
    call wait_for_icr
    mov $ap_start, %eax
    shr $12, %eax
    or $0x4600, %eax                     # STARTUP, vector = the page of ap_start
    mov $2, %ecx                         # twice, as the MP specification says
3:  movl $(1 << 24), LAPIC_ICR_HIGH
    mov %eax, LAPIC_ICR_LOW
    call wait_for_icr
    dec %ecx
    jnz 3b
1:  pause                                # until mini-kvm stops the guest
    jmp 1b

wait_for_icr:                            # until the local APIC has sent the message
    pause
    testl $(1 << 12), LAPIC_ICR_LOW      # delivery status: send pending
    jnz wait_for_icr
    ret

    .balign 4096
ap_start:
    .code16
    mov $0x9000, %ax
    mov %ax, %ds
    mov (0), %al                         # 0x9000:0000 = 0x90000: beyond RAM
2:  jmp 2b
