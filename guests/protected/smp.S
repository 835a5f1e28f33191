# summary: several CPUs (--cpus N): MP table, INIT-SIPI-SIPI, a shared count of primes, a ticket lock
#
# Run it with `mini-kvm run --cpus 4 smp`. Output with 4 CPUs:
#
#   smp: the MP table lists 4 CPUs, APIC IDs 0 1 2 3
#   smp: CPU 0 found 147 primes in 10 blocks
#   smp: CPU 1 found 131 primes in 10 blocks
#   ...
#   smp: 550 primes below 4000
#
# How a PC with several CPUs starts them, in four steps:
#
# 1. **Only one CPU runs at first**, the bootstrap processor (BSP, CPU 0). mini-kvm starts it here,
#    in 32-bit protected mode (EIP = 0x10000, flat segments, paging off). The other CPUs, the
#    application processors (APs), wait inside KVM for a message from the BSP.
# 2. **The BSP learns how many CPUs there are** from the MP table (the Intel MultiProcessor
#    Specification): a "_MP_" floating pointer in the first KiB of the Extended BIOS Data Area,
#    whose segment is the BIOS Data Area word at 0x40e, points at a "PCMP" table with one entry
#    per CPU and its local APIC ID. mini-kvm writes it (src/arch/x86/mptable.rs).
# 3. **The BSP wakes each AP** through its own local APIC, at 0xfee00000: an INIT message, then
#    two STARTUP messages (SIPI) carrying a vector V. The AP then starts in 16-bit real mode at
#    V * 0x1000 (CS = V * 0x100, IP = 0), so its first code must sit on a page boundary below
#    1 MiB: `ap_trampoline` below, at 0x11000, switches it to protected mode.
# 4. **Every CPU does a share of the work** in shared memory: the numbers 0..3999 are dealt out
#    in blocks of 100, block b to CPU b mod N, and each CPU counts the primes in its blocks (by
#    trial division). Then each prints its count while it holds a ticket lock whose tickets are
#    the CPU numbers, so the lines come out in CPU order, and the BSP adds up the counts.
#
# The atomic instructions (`lock incl`, `lock xaddl`) are what make shared memory safe; `pause`
# tells a CPU that it spins. A real PC also needs delays between the messages (10 ms after INIT,
# 200 µs after each SIPI); KVM's local APIC delivers them at once, so this guest does not wait.

.include "hypercall.inc"

    .equ BDA_EBDA_SEGMENT, 0x40e         # BIOS Data Area: the EBDA's segment
    .equ LAPIC, 0xfee00000               # every CPU sees its own local APIC here
    .equ LAPIC_ID, LAPIC + 0x20          # bits 31-24: this CPU's APIC ID
    .equ LAPIC_SVR, LAPIC + 0xf0         # spurious-interrupt vector register; bit 8 enables
    .equ LAPIC_ICR_LOW, LAPIC + 0x300    # interrupt command register: writing it sends
    .equ LAPIC_ICR_HIGH, LAPIC + 0x310   # bits 31-24: the destination APIC ID
    .equ ICR_INIT, 0x4500                # delivery mode INIT, level assert
    .equ ICR_STARTUP, 0x4600             # delivery mode STARTUP, level assert, | vector
    .equ ICR_BUSY, 0x1000                # delivery status: still sending

    .equ MAX_CPUS, 16                    # this guest's own limit (more wait unstarted)
    .equ STACK_SIZE, 1024
    .equ LIMIT, 4000                     # count the primes below this
    .equ BLOCK, 100                      # ... dealt out in blocks of this many numbers

    .code32
    .text
    .globl _start
_start:
    call find_cpus
    call print_cpus

    # Enable this CPU's local APIC (software enable bit in the spurious-vector register).
    orl $0x100, LAPIC_SVR

    # Wake every AP listed in the MP table (entry 0 is the BSP: this CPU).
    mov $1, %esi
1:  cmp cpu_count, %esi
    jae 2f
    movzbl apic_ids(%esi), %ebx
    call start_ap
    inc %esi
    jmp 1b

2:  xor %eax, %eax                       # the BSP is CPU 0 and does its share too
    call do_share

    # Wait until every CPU has finished and printed, then add up.
3:  pause
    mov cpus_done, %eax
    cmp cpu_count, %eax
    jne 3b

    xor %eax, %eax                       # total
    xor %esi, %esi
4:  add primes_found(,%esi,4), %eax
    inc %esi
    cmp cpu_count, %esi
    jb 4b
    mov %eax, %edi
    say32 "smp: "
    mov %edi, %ebx
    hypercall HC_PUTNUM
    say32 " primes below "
    mov $LIMIT, %ebx
    hypercall HC_PUTNUM
    hypercall HC_NEWLINE
    xor %ebx, %ebx
    hypercall HC_EXIT

# find_cpus: fills cpus_listed, cpu_count (at most MAX_CPUS of them) and apic_ids from the MP
# table. Without a table: one CPU.
find_cpus:
    movl $1, cpu_count
    movl $1, cpus_listed
    movb $0, apic_ids
    movzwl BDA_EBDA_SEGMENT, %eax
    shl $4, %eax                         # the EBDA's address
    lea 1024(%eax), %edx                 # search its first KiB, on 16-byte boundaries
1:  cmpl $0x5f504d5f, (%eax)             # "_MP_"
    je 2f
    add $16, %eax
    cmp %edx, %eax
    jb 1b
    ret                                  # no MP table
2:  mov 4(%eax), %esi                    # the "PCMP" configuration table
    cmpl $0x504d4350, (%esi)
    jne 5f
    movzwl 34(%esi), %ecx                # entry count
    add $44, %esi                        # the first entry, after the header
    xor %edi, %edi                       # CPUs this guest will use
    movl $0, cpus_listed
3:  test %ecx, %ecx
    jz 4f
    cmpb $0, (%esi)                      # entry type 0: a processor, 20 bytes
    jne 6f
    testb $1, 3(%esi)                    # flags bit 0: enabled
    jz 7f
    incl cpus_listed
    cmp $MAX_CPUS, %edi
    jae 7f
    movb 1(%esi), %al                    # its local APIC ID
    movb %al, apic_ids(%edi)
    inc %edi
7:  add $20, %esi
    dec %ecx
    jmp 3b
6:  add $8, %esi                         # every other entry type is 8 bytes
    dec %ecx
    jmp 3b
4:  mov %edi, cpu_count
5:  ret

# print_cpus: "smp: the MP table lists N CPUs, APIC IDs a b c\n" ("1 CPU" for one), and
# " ... (this guest uses the first 16)" when the table lists more than MAX_CPUS.
print_cpus:
    say32 "smp: the MP table lists "
    mov cpus_listed, %ebx
    hypercall HC_PUTNUM
    say32 " CPU"
    cmpl $1, cpus_listed
    je 2f
    mov $'s', %ebx
    hypercall HC_PUTCHAR
2:  say32 ", APIC IDs"
    xor %esi, %esi
1:  mov $' ', %ebx
    hypercall HC_PUTCHAR
    movzbl apic_ids(%esi), %ebx
    hypercall HC_PUTNUM
    inc %esi
    cmp cpu_count, %esi
    jb 1b
    mov cpus_listed, %eax
    cmp cpu_count, %eax
    je 3f
    say32 " ... (this guest uses the first "
    mov $MAX_CPUS, %ebx
    hypercall HC_PUTNUM
    mov $')', %ebx
    hypercall HC_PUTCHAR
3:  hypercall HC_NEWLINE
    ret

# start_ap: wakes the CPU whose APIC ID is in EBX: INIT, then STARTUP twice with the trampoline's
# page as the vector.
start_ap:
    mov %ebx, %ecx
    shl $24, %ecx                        # destination field of the ICR
    mov %ecx, LAPIC_ICR_HIGH
    movl $ICR_INIT, LAPIC_ICR_LOW        # writing the low half sends the message
    call wait_for_icr
    mov $ap_trampoline, %eax
    shr $12, %eax                        # the vector: the trampoline's page number
    or $ICR_STARTUP, %eax
    mov $2, %edx
1:  mov %ecx, LAPIC_ICR_HIGH
    mov %eax, LAPIC_ICR_LOW
    call wait_for_icr
    dec %edx
    jnz 1b
    ret

wait_for_icr:
    pause
    testl $ICR_BUSY, LAPIC_ICR_LOW
    jnz wait_for_icr
    ret

# do_share: the work of CPU number EAX (0 = the BSP): count the primes in blocks EAX, EAX + N,
# EAX + 2N, ..., then print the count in turn (the ticket lock) and count this CPU as done.
do_share:
    mov %eax, %ebp                       # EBP = this CPU's number, kept throughout
    xor %edi, %edi                       # primes found
    mov %eax, %esi                       # ESI = block number
1:  mov %esi, %eax
    imul $BLOCK, %eax
    cmp $LIMIT, %eax
    jae 4f
    mov %eax, %ecx                       # ECX = n, from the block's first number ...
    lea BLOCK(%eax), %edx
    mov %edx, block_end(,%ebp,4)         # ... to its end (kept in memory: DIV uses EDX)
2:  mov %ecx, %eax
    call is_prime
    add %eax, %edi
    inc %ecx
    cmp block_end(,%ebp,4), %ecx
    jb 2b
    incl blocks_done(,%ebp,4)
    add cpu_count, %esi                  # the next block dealt to this CPU
    jmp 1b
4:  mov %edi, primes_found(,%ebp,4)

    # The ticket lock: this CPU's ticket is its number; wait until `now_serving` says it.
5:  pause
    cmp now_serving, %ebp
    jne 5b
    say32 "smp: CPU "
    mov %ebp, %ebx
    hypercall HC_PUTNUM
    say32 " found "
    mov primes_found(,%ebp,4), %ebx
    hypercall HC_PUTNUM
    say32 " primes in "
    mov blocks_done(,%ebp,4), %ebx
    hypercall HC_PUTNUM
    say32 " blocks\n"
    lock incl now_serving                # the next CPU's turn
    lock incl cpus_done
    ret

# is_prime: EAX = 1 if EAX is a prime, else 0. Trial division by 2, 3, 4, ... while d*d <= n.
# Keeps ECX, ESI, EDI, EBP.
is_prime:
    push %ecx
    mov %eax, %ebx                       # n
    xor %eax, %eax
    cmp $2, %ebx
    jb 3f
    mov $2, %ecx                         # d
1:  mov %ecx, %eax
    imul %ecx, %eax
    cmp %ebx, %eax
    ja 2f                                # d*d > n: no divisor found
    mov %ebx, %eax
    xor %edx, %edx
    div %ecx
    test %edx, %edx
    jz 4f                                # n % d == 0
    inc %ecx
    jmp 1b
2:  mov $1, %eax
    jmp 3f
4:  xor %eax, %eax
3:  pop %ecx
    ret

# ---------------------------------------------------------------------------------------------
# Where an AP starts: 16-bit real mode at CS:IP = 0x1100:0000, after the BSP's STARTUP message.
# It loads a GDT, turns protection on, and jumps to 32-bit code, as the BSP's firmware would
# have done for it.
    .balign 4096
ap_trampoline:
    .code16
    cli
    mov %cs, %ax
    mov %ax, %ds                         # DS = this page: offsets below are from ap_trampoline
    lgdtl ap_gdt_descriptor - ap_trampoline
    mov %cr0, %eax
    or $1, %eax                          # CR0.PE
    mov %eax, %cr0
    ljmpl $0x08, $ap_protected           # loads CS from the GDT: 32-bit code from here on

ap_gdt_descriptor:
    .word ap_gdt_end - ap_gdt - 1
    .long ap_gdt

    .balign 8
ap_gdt:
    .quad 0                              # null
    .quad 0x00cf9a000000ffff             # 0x08: code, base 0, 4 GiB, 32-bit
    .quad 0x00cf92000000ffff             # 0x10: data, base 0, 4 GiB
ap_gdt_end:

    .code32
ap_protected:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    # Which CPU am I? Find my APIC ID in the list from the MP table.
    mov LAPIC_ID, %eax
    shr $24, %eax
    xor %esi, %esi
1:  cmpb apic_ids(%esi), %al
    je 2f
    inc %esi
    cmp $MAX_CPUS, %esi
    jb 1b
3:  cli                                  # not in the list: nothing to do
    hlt
    jmp 3b
2:  mov %esi, %eax                       # a stack of my own: stacks + (n + 1) * STACK_SIZE
    inc %eax
    imul $STACK_SIZE, %eax
    add $stacks, %eax
    mov %eax, %esp
    orl $0x100, LAPIC_SVR                # enable my local APIC, as the BSP did its own
    mov %esi, %eax
    call do_share
    jmp 3b                               # done: halt for good (the BSP ends the guest)

    .data
cpu_count:      .long 1
cpus_listed:    .long 1
cpus_done:      .long 0
now_serving:    .long 0
apic_ids:       .fill MAX_CPUS, 1, 0
    .balign 4
primes_found:   .fill MAX_CPUS, 4, 0
blocks_done:    .fill MAX_CPUS, 4, 0
block_end:      .fill MAX_CPUS, 4, 0

    .bss
    .balign 16
stacks:         .fill MAX_CPUS * STACK_SIZE, 1, 0
