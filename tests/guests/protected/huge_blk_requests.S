# summary: test: eight virtio-blk reads of 2 GiB each, then endless 1 MiB reads (run with --mode protected --mem 64M --disk a 2 GiB image)
#
# A hostile driver, written without the teaching OS's help: it sets up the first virtio slot
# (a disk) by hand, then puts eight requests on its queue, each an indirect table that names
# one 32 MiB buffer 64 times: a read of 2 GiB. mini-kvm does no request longer than 1 MiB: each
# comes back with used length 1 (the status byte) and status IOERR, and the guest prints
#   "used lengths: 1 1 1 1 1 1 1 1, status 1\n"
# Then it keeps the disk busy for ever with reads of 1 MiB, eight per doorbell: --timeout ends
# the run (status 124), which the doorbell that keeps ringing must not hold off.

.include "hypercall.inc"

    .equ MMIO,         0xd0000000      # virtio slot 0 (arch/x86/layout.rs)
    .equ R_DRV_FEAT,   0x020
    .equ R_DRV_SEL,    0x024
    .equ R_QUEUE_SEL,  0x030
    .equ R_QUEUE_NUM,  0x038
    .equ R_READY,      0x044
    .equ R_NOTIFY,     0x050
    .equ R_STATUS,     0x070
    .equ R_DESC,       0x080
    .equ R_AVAIL,      0x090
    .equ R_USED,       0x0a0

    .equ DESC,         0x100000        # the queue: 8 descriptors, the available and used rings
    .equ AVAIL,        0x101000
    .equ USED,         0x102000
    .equ HEADER,       0x103000        # the request header: read (0) from sector 0
    .equ STATUS,       0x103100        # the status byte
    .equ HUGE,         0x104000        # indirect table: header, 64 x the buffer, status
    .equ SMALL,        0x105000        # indirect table: header, 1 MiB of the buffer, status
    .equ BUF,          0x1000000       # 32 MiB at 16 MiB
    .equ BUF_LEN,      0x2000000

    .equ F_NEXT,       1
    .equ F_WRITE,      2
    .equ F_INDIRECT,   4

# descriptor AT, ADDRESS, LENGTH, FLAGS, NEXT: one 16-byte descriptor at AT (a register).
.macro descriptor at, address, length, flags, next
    movl $\address, 0(\at)
    movl $0, 4(\at)
    movl $\length, 8(\at)
    movw $\flags, 12(\at)
    movw $\next, 14(\at)
.endm

    .code32
    .text
    .globl _start
_start:
    mov $MMIO, %edi
    movl $0, R_STATUS(%edi)            # reset
    movl $3, R_STATUS(%edi)            # ACKNOWLEDGE | DRIVER
    movl $1, R_DRV_SEL(%edi)
    movl $1, R_DRV_FEAT(%edi)          # VERSION_1 (bit 32), nothing else
    movl $0, R_DRV_SEL(%edi)
    movl $0, R_DRV_FEAT(%edi)
    movl $0xb, R_STATUS(%edi)          # FEATURES_OK
    movl $0, R_QUEUE_SEL(%edi)
    movl $8, R_QUEUE_NUM(%edi)
    movl $DESC, R_DESC(%edi)
    movl $AVAIL, R_AVAIL(%edi)
    movl $USED, R_USED(%edi)
    movl $1, R_READY(%edi)
    movl $0xf, R_STATUS(%edi)          # DRIVER_OK

    # The huge table: entry 0 the header, entries 1-64 the buffer, entry 65 the status.
    mov $HUGE, %esi
    descriptor %esi, HEADER, 16, F_NEXT, 1
    mov $1, %ecx
1:  add $16, %esi
    descriptor %esi, BUF, BUF_LEN, F_NEXT | F_WRITE, 0
    lea 1(%ecx), %eax
    mov %ax, 14(%esi)
    inc %ecx
    cmp $65, %ecx
    jne 1b
    add $16, %esi
    descriptor %esi, STATUS, 1, F_WRITE, 0

    # Eight requests, each one descriptor pointing to the table, in slots 0-7.
    mov $HUGE, %eax
    mov $(66 * 16), %edx
    call offer_eight
    mov $8, %ebx
    call ring_and_wait

    say32 "used lengths:"
    xor %esi, %esi
2:  mov $0x20, %ebx                    # a space
    hypercall HC_PUTCHAR
    mov USED + 8(,%esi,8), %ebx        # used element i: id, then length
    hypercall HC_PUTNUM
    inc %esi
    cmp $8, %esi
    jne 2b
    say32 ", status "
    movzbl STATUS, %ebx
    hypercall HC_PUTNUM
    hypercall HC_NEWLINE

    # Endless work that is no fault: eight reads of 1 MiB per doorbell, for ever.
    mov $SMALL, %esi
    descriptor %esi, HEADER, 16, F_NEXT, 1
    add $16, %esi
    descriptor %esi, BUF, 0x100000, F_NEXT | F_WRITE, 2
    add $16, %esi
    descriptor %esi, STATUS, 1, F_WRITE, 0
    mov $SMALL, %eax
    mov $(3 * 16), %edx
    call offer_eight
    mov $8, %ebx
3:  add $8, %ebx
    call ring_and_wait
    jmp 3b

# Descriptors 0-7 point to the indirect table at EAX (EDX bytes); avail slots 0-7 name them.
offer_eight:
    xor %ecx, %ecx
1:  mov %ecx, %esi
    shl $4, %esi
    mov %eax, DESC(%esi)
    movl $0, DESC + 4(%esi)
    mov %edx, DESC + 8(%esi)
    movw $F_INDIRECT, DESC + 12(%esi)
    movw $0, DESC + 14(%esi)
    mov %cx, AVAIL + 4(,%ecx,2)
    inc %ecx
    cmp $8, %ecx
    jne 1b
    ret

# Makes the requests available up to index BX, rings the doorbell, and waits until the device
# has used them all.
ring_and_wait:
    mov %bx, AVAIL + 2
    movl $0, R_NOTIFY(%edi)
1:  cmp USED + 2, %bx
    jne 1b
    ret
